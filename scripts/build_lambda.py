#!/usr/bin/env python3
"""Build the AWS Lambda deployment zip of async_discovery (not shipped inside the zip).

    python scripts/build_lambda.py --arch x86_64 --python 3.11
    # -> dist/async-discovery-lambda-x86_64.zip   (handler: async_discovery.handler.lambda_handler)
    python scripts/build_lambda.py --arch arm64 --output dist/async-discovery-lambda.zip
    # -> the path deploy/template.yaml's CodeUri names (sam deploy uploads it)

What it does, in order:

1. builds the project as a wheel (``pip wheel --no-deps``: no ``demo``/``dev`` extras,
   so no moto, boto3 or pytest);
2. installs that wheel and its runtime dependencies into ``build/lambda-<arch>/`` with
   ``pip install --target --platform manylinux… --only-binary=:all: --python-version X
   --implementation cp``, pinned by ``constraints.txt`` (so the zip holds the very
   versions CI tested, and wheels for the Lambda OS and CPU, whatever the build host);
3. removes what the runtime never loads: ``__pycache__``, ``*.pyc``, type stubs,
   ``tests`` folders, console scripts, C sources, ``dist-info/RECORD``, the package's dev
   tooling (``async_discovery.bench``, ``async_discovery.testing``); and, unless
   ``--full-botocore``, the botocore API models of services the scanner never calls
   (it needs s3 and sqs; sts/sso/sso-oidc are kept for the credential chain);
4. when the build interpreter is the target Python version (``--compile``, the default
   then), precompiles every module with ``--invalidation-mode unchecked-hash``: /var/task
   is read-only, so without bytecode in the zip every cold start compiles botocore and
   aiohttp again (measured: 0.55 s → 0.22 s for ``import async_discovery.handler``).
   Unchecked-hash bytecode is not revalidated against the sources, which is right for
   an immutable package (and the zip's fixed timestamps would defeat mtime checks);
5. writes a deterministic zip (sorted entries, fixed timestamps) to ``dist/``.

What is *not* excluded, and why: the Lambda Python runtime ships boto3 and botocore,
but aiobotocore pins a narrow botocore range, so the runtime's botocore cannot be
used; botocore and its own dependencies (jmespath, python-dateutil, six, urllib3) are
bundled. Function code (``/var/task``) comes before the runtime's libraries on
``sys.path``, so the bundled copies win. boto3 and s3transfer are not dependencies of
this package at all, so they are neither installed nor needed.

Amazon Linux 2 (python3.11) has glibc 2.26, so only ``manylinux2014`` (glibc 2.17)
wheels are accepted there; Amazon Linux 2023 (python3.12 and later) has glibc 2.34,
which also accepts ``manylinux_2_28`` wheels.

Needs pip and network access to the package index (or a local mirror pip is set up
for). Prints the zip's path on stdout and a short report on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCHES = {"x86_64": "x86_64", "arm64": "aarch64"}
PYTHONS = ("3.11", "3.12", "3.13")
# Service models the scanner (and botocore's credential chain) loads; all others go.
BOTOCORE_SERVICES = frozenset({"s3", "sqs", "sts", "sso", "sso-oidc"})
_STRIP_SUFFIXES = (".pyc", ".pyi", ".c", ".h", ".pyx", ".pxd")
_DIST_INFO_STRIP = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
_STRIP_DIRS = frozenset({"__pycache__", "tests", "wrapt-stubs"})
# 1980-01-01: the earliest timestamp a zip can hold; identical inputs, identical zip.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def platforms(arch: str, python: str) -> list[str]:
    """The wheel platform tags the Lambda OS for ``python`` on ``arch`` can run."""
    machine = ARCHES[arch]
    tags = [f"manylinux2014_{machine}"]
    if python != "3.11":
        tags.append(f"manylinux_2_28_{machine}")
    return tags


def run(cmd: list[str]) -> None:
    """Run a command, echoing it on stderr; fail loudly."""
    sys.stderr.write("+ " + " ".join(cmd) + "\n")
    subprocess.run(cmd, check=True)


def build_wheel(work: Path) -> Path:
    """Build this project's wheel (runtime dependencies only) into ``work``."""
    wheels = work / "wheel"
    shutil.rmtree(wheels, ignore_errors=True)
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources, and
    # the working tree may be shared with another build or an editable install.
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "async_discovery",
        src / "async_discovery",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(wheels),
            str(src),
        ]
    )
    (wheel,) = wheels.glob("async_discovery-*.whl")
    return wheel


def install(wheel: Path, target: Path, arch: str, python: str, constraints: Path) -> None:
    """``pip install --target`` the wheel and its dependencies for the Lambda platform."""
    shutil.rmtree(target, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile"]
    cmd += ["--target", str(target), "--only-binary=:all:", "--implementation", "cp"]
    cmd += ["--python-version", python, "--abi", "cp" + python.replace(".", "")]
    for tag in platforms(arch, python):
        cmd += ["--platform", tag]
    cmd += ["-c", str(constraints), str(wheel)]
    run(cmd)


# Parts of the package that only the benchmark and the tests use.
DEV_TOOLING = ("async_discovery/bench", "async_discovery/testing")


def _strippable(path: Path) -> bool:
    if path.is_dir():
        return path.name in _STRIP_DIRS
    if path.suffix in _STRIP_SUFFIXES:
        return True
    return path.parent.name.endswith(".dist-info") and path.name in _DIST_INFO_STRIP


def prune(target: Path, *, full_botocore: bool) -> int:
    """Delete what the Lambda runtime never loads; return the bytes removed."""
    removed = 0

    def drop(path: Path) -> None:
        nonlocal removed
        if path.is_dir():
            removed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        elif path.exists():
            removed += path.stat().st_size
            path.unlink()

    drop(target / "bin")  # console scripts: nothing on Lambda runs them
    for tooling in DEV_TOOLING:  # the bench and the test servers: never imported by a run
        drop(target / tooling)
    for path in sorted(target.rglob("*"), reverse=True):
        if not path.exists():
            continue
        if _strippable(path):
            drop(path)
    if not full_botocore:
        data = target / "botocore" / "data"
        for service in data.iterdir():
            if service.is_dir() and service.name not in BOTOCORE_SERVICES:
                drop(service)
    return removed


def compile_bytecode(target: Path) -> None:
    """Precompile ``target`` for this interpreter (unchecked-hash .pyc files)."""
    run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "-j0",
            "--invalidation-mode",
            "unchecked-hash",
            str(target),
        ]
    )


def write_zip(source: Path, out: Path) -> None:
    """A deterministic zip of ``source``'s contents (sorted, fixed times, fixed modes)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(source).as_posix(), _ZIP_TIME)
            mode = 0o755 if path.suffix == ".so" else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes(), compresslevel=9)
    os.replace(tmp, out)


def tree_size(root: Path) -> int:
    """Total bytes of the files under ``root``."""
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def build(
    arch: str,
    python: str,
    *,
    out_dir: Path,
    build_dir: Path,
    constraints: Path,
    full_botocore: bool = False,
    compile_pyc: bool | None = None,
    output: Path | None = None,
) -> Path:
    """Build ``<out_dir>/async-discovery-lambda-<arch>.zip`` (or ``output``); return its
    path."""
    started = time.perf_counter()
    work = build_dir / f"lambda-{arch}-py{python}"
    wheel = build_wheel(work)
    target = work / "package"
    install(wheel, target, arch, python, constraints)
    removed = prune(target, full_botocore=full_botocore)
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    if compile_pyc is None:
        compile_pyc = host == python
        if not compile_pyc:
            sys.stderr.write(
                f"note: building for python{python} with python{host}: no bytecode in the "
                f"zip (run this script with python{python} for faster cold starts)\n"
            )
    elif compile_pyc and host != python:
        raise SystemExit(f"--compile needs python{python} to run this script (this is {host})")
    if compile_pyc:
        compile_bytecode(target)
    out = output or out_dir / f"async-discovery-lambda-{arch}.zip"
    write_zip(target, out)
    report = {
        "zip": str(out),
        "arch": arch,
        "python": python,
        "zip_bytes": out.stat().st_size,
        "unzipped_bytes": tree_size(target),
        "pruned_bytes": removed,
        "bytecode": compile_pyc,
        "seconds": round(time.perf_counter() - started, 1),
    }
    sys.stderr.write(json.dumps(report) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--arch``, ``--python``, ``--out-dir``, ``--output``, ``--build-dir``."""
    parser = argparse.ArgumentParser(
        prog="build_lambda.py",
        description="Build dist/async-discovery-lambda-<arch>.zip for the AWS Lambda "
        "Python runtime (handler async_discovery.handler.lambda_handler).",
    )
    parser.add_argument("--arch", choices=sorted(ARCHES), default="x86_64", help="Lambda CPU")
    parser.add_argument(
        "--python", choices=PYTHONS, default="3.11", help="Lambda runtime (python3.X)"
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "dist", help="default: dist/")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="the zip's path instead of <out-dir>/async-discovery-lambda-<arch>.zip "
        "(deploy/template.yaml's CodeUri is dist/async-discovery-lambda.zip)",
    )
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build", help="default: build/")
    parser.add_argument(
        "--constraints",
        type=Path,
        default=ROOT / "constraints.txt",
        help="pins for the dependencies (default: constraints.txt)",
    )
    parser.add_argument(
        "--full-botocore",
        action="store_true",
        help="keep every botocore service model (default: s3, sqs, sts, sso, sso-oidc)",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="precompile .pyc files (default: when this interpreter is the target version)",
    )
    args = parser.parse_args(argv)
    out = build(
        args.arch,
        args.python,
        out_dir=args.out_dir.resolve(),
        build_dir=args.build_dir.resolve(),
        constraints=args.constraints.resolve(),
        full_botocore=args.full_botocore,
        compile_pyc=args.compile,
        output=args.output.resolve() if args.output else None,
    )
    sys.stdout.write(f"{out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
