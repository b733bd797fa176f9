"""The Lambda zip, as Lambda would run it: built by scripts/build_lambda.py for this
machine's CPU and Python, unpacked into a folder, imported by a clean virtual environment
(no site-packages: nothing but the zip and the standard library) and invoked through
``async_discovery.handler.lambda_handler`` against the session's moto server.

Needs the package index (pip downloads the manylinux wheels), like CI's own install.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import MotoEnv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine().lower()
)
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

# Runs inside the clean venv: import (timed), invoke, report as one JSON line.
INVOKE = r"""
import importlib.util, json, sys, time
started = time.perf_counter()
import async_discovery.handler as handler
import_seconds = time.perf_counter() - started

class FakeContext:
    function_name = "async-discovery"
    def get_remaining_time_in_millis(self):
        return 300_000

summary = handler.lambda_handler({"source": "aws.events"}, FakeContext())
print(json.dumps({
    "summary": summary,
    "import_seconds": import_seconds,
    "files": {m: sys.modules[m].__file__ for m in ("aiobotocore", "botocore", "anyio")},
    "boto3": importlib.util.find_spec("boto3") is not None,
    "moto": importlib.util.find_spec("moto") is not None,
}))
"""


@pytest.fixture(scope="module")
def lambda_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zip for this host's CPU and Python, built into a temporary folder."""
    if HOST_ARCH is None:
        pytest.skip(f"no Lambda architecture matches {platform.machine()}")
    work = tmp_path_factory.mktemp("lambda-build")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "build_lambda.py"),
            "--arch",
            HOST_ARCH,
            "--python",
            PYTHON,
            "--output",
            str(work / "dist" / "async-discovery-lambda.zip"),
            "--build-dir",
            str(work / "build"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = Path(proc.stdout.strip().splitlines()[-1])
    assert out == work / "dist" / "async-discovery-lambda.zip"  # the template's CodeUri
    return out


@pytest.fixture(scope="module")
def unpacked(lambda_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The zip's contents, as Lambda puts them in /var/task."""
    task = tmp_path_factory.mktemp("var-task")
    with zipfile.ZipFile(lambda_zip) as zf:
        zf.extractall(task)
    yield task


@pytest.fixture(scope="module")
def clean_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh virtual environment with no packages at all."""
    home = tmp_path_factory.mktemp("clean-venv")
    venv.EnvBuilder(with_pip=False, clear=True).create(home)
    return home / "bin" / "python"


def lambda_env(task: Path, **extra: str) -> dict[str, str]:
    """A minimal environment like Lambda's: the task folder on PYTHONPATH, nothing else
    of this test session's interpreter (no site-packages, no user site)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(task),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # /var/task is read-only on Lambda
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_LAMBDA_FUNCTION_NAME": "async-discovery",
    }
    env.update(extra)
    return env


def test_zip_layout(lambda_zip: Path) -> None:
    """The handler module is at the zip's root; test and bench tooling, dev packages and
    the build script are not."""
    names = zipfile.ZipFile(lambda_zip).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert "async_discovery/handler.py" in names
    assert not [
        n for n in names if n.startswith(("async_discovery/bench/", "async_discovery/testing/"))
    ]
    assert {"aiobotocore", "botocore", "anyio", "aiohttp"} <= tops
    assert not tops & {"moto", "boto3", "s3transfer", "pytest", "mypy", "bin", "scripts"}
    assert not [n for n in names if n.endswith(("/RECORD", ".pyi"))]
    # Pruned botocore models: the scanner's two services remain.
    assert any(n.startswith("botocore/data/s3/") for n in names)
    assert any(n.startswith("botocore/data/sqs/") for n in names)
    assert not any(n.startswith("botocore/data/ec2/") for n in names)
    # The licence travels with the package (the wheel's dist-info/licenses).
    assert any(re.fullmatch(r"async_discovery-[^/]+\.dist-info/licenses/LICENSE", n) for n in names)
    # Lambda's limit for a directly uploaded zip is 50 MB.
    assert lambda_zip.stat().st_size < 50 * 1024 * 1024


def test_handler_from_zip_in_clean_venv(
    unpacked: Path, clean_python: Path, env: MotoEnv, bucket: str, queue_url: str
) -> None:
    """lambda_handler from the unpacked zip queues the bucket's CSVs, then nothing."""
    env.put(bucket, "incoming/sales/1.csv")
    env.put(bucket, "incoming/sales/2.csv")
    env.put(bucket, "incoming/logs/skip.csv")
    run_env = lambda_env(
        unpacked,
        S3_SOURCE_BUCKET=bucket,
        S3_PREFIX="incoming",
        SQS_QUEUE_URL=queue_url,
        AWS_ENDPOINT_URL=env.endpoint,
    )

    def invoke() -> dict[str, object]:
        proc = subprocess.run(
            [str(clean_python), "-s", "-c", INVOKE],
            env=run_env,
            cwd=unpacked.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        # stdout holds only our line; the JSON logs and the EMF record went to stderr.
        assert '"_aws"' in proc.stderr
        return dict(json.loads(proc.stdout))

    first = invoke()
    summary = first["summary"]
    assert isinstance(summary, dict)
    assert (summary["statusCode"], summary["queued"], summary["errors"]) == (200, 2, 0)
    assert not first["boto3"] and not first["moto"]
    files = first["files"]
    assert isinstance(files, dict)
    assert all(str(path).startswith(str(unpacked)) for path in files.values())
    bodies = env.bodies(queue_url)
    assert sorted(b["key"] for b in bodies) == ["incoming/sales/1.csv", "incoming/sales/2.csv"]
    assert env.state(bucket) is not None

    second = invoke()
    summary = second["summary"]
    assert isinstance(summary, dict)
    assert (summary["statusCode"], summary["queued"], summary["skipped"]) == (200, 0, 2)


def test_handler_from_zip_reports_bad_config(unpacked: Path, clean_python: Path) -> None:
    """Without the required variables the handler returns a 500 naming them (no AWS call)."""
    code = (
        "import json, async_discovery.handler as h; print(json.dumps(h.lambda_handler({}, None)))"
    )
    proc = subprocess.run(
        [str(clean_python), "-s", "-c", code],
        env=lambda_env(unpacked),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)
    assert summary["statusCode"] == 500
    assert "S3_SOURCE_BUCKET" in summary["error"] and "SQS_QUEUE_URL" in summary["error"]


def test_cold_import_time(unpacked: Path, clean_python: Path) -> None:
    """A fresh interpreter imports the handler module from the zip's bytecode quickly.

    The bound is generous (CI machines vary); the measured value is printed for the
    README's record (``pytest -s``).
    """
    code = (
        "import time; t = time.perf_counter(); import async_discovery.handler; "
        "print(time.perf_counter() - t)"
    )
    times = []
    for _ in range(3):
        proc = subprocess.run(
            [str(clean_python), "-s", "-c", code],
            env=lambda_env(unpacked),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        times.append(float(proc.stdout))
    best = min(times)
    sys.stderr.write(f"cold import of async_discovery.handler: {best:.3f} s\n")
    assert best < 5.0
