"""docker-compose.yml and the Dockerfile stay in step with the CLI and the configuration.

There is no container engine in CI, so the file is checked by reading it: the services,
the loopback-only port, the commands (parsed by the CLI's own parser), the environment
(each variable one the scanner or botocore reads, and valid for ``Config.from_env``), and
the wiring between services. Then the two commands run exactly as written against the
session's moto server, with only the moto service's address swapped for the fixture's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from async_discovery.cli import SCAN_FLAGS, build_parser
from async_discovery.config import Config

from .helpers import MotoEnv

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# The variables of SPEC "Configuration" (the CLI's flags name the same ones) plus the
# process-level ones the compose file may set.
SPEC_VARIABLES = {env for _flag, _field, env, _text in SCAN_FLAGS if env}
ALLOWED = SPEC_VARIABLES | {
    "LOG_LEVEL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def service_env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    assert isinstance(raw, dict), "environment as a mapping"
    return {str(k): str(v) for k, v in raw.items()}


def row(table: str, label: str) -> int:
    """The number in the summary table's row ``label`` (a regex)."""
    match = re.search(rf"^{label}\s+([\d,]+)$", table, re.M)
    assert match, (label, table)
    return int(match.group(1).replace(",", ""))


def test_services_and_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"moto", "seed", "scanner"}
    moto = services["moto"]
    assert re.fullmatch(r"motoserver/moto:5\.\d+\.\d+", moto["image"]), "a pinned 5.x tag"
    # Published on loopback only, never on every interface.
    assert moto["ports"] == ["127.0.0.1:5000:5000"]
    assert "127.0.0.1:5000" in " ".join(moto["healthcheck"]["test"])
    for name in ("seed", "scanner"):
        assert services[name]["build"] == "."
        assert services[name]["image"] == "async-discovery:local"
        assert "ports" not in services[name]


def test_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["seed"]["depends_on"] == {"moto": {"condition": "service_healthy"}}
    assert services["scanner"]["depends_on"] == {
        "seed": {"condition": "service_completed_successfully"}
    }


def test_commands_parse_with_the_cli(compose: dict[str, Any]) -> None:
    parser = build_parser()
    seed = parser.parse_args(compose["services"]["seed"]["command"])
    assert seed.command == "seed"
    scan = parser.parse_args(compose["services"]["scanner"]["command"])
    assert scan.command == "scan" and scan.output in ("json", "table")


def test_environment_names_only_known_variables(compose: dict[str, Any]) -> None:
    for name in ("seed", "scanner"):
        env = service_env(compose["services"][name])
        unknown = set(env) - ALLOWED
        assert not unknown, (name, unknown)
        # Fake credentials only.
        assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "testing"


def test_scanner_environment_is_a_valid_configuration(compose: dict[str, Any]) -> None:
    env = service_env(compose["services"]["scanner"])
    assert {"S3_SOURCE_BUCKET", "SQS_QUEUE_URL"} <= set(env)
    config = Config.from_env(env)
    assert config.prefix == "incoming/"


def test_services_agree_on_endpoint_bucket_and_queue(compose: dict[str, Any]) -> None:
    services = compose["services"]
    scanner_env = service_env(services["scanner"])
    seed_args = build_parser().parse_args(services["seed"]["command"])
    endpoint = urlsplit(scanner_env["AWS_ENDPOINT_URL"])
    # The endpoint is the moto service, on the port moto listens on in its container.
    assert (endpoint.hostname, endpoint.port) == ("moto", 5000)
    assert seed_args.endpoint_url == scanner_env["AWS_ENDPOINT_URL"]
    assert service_env(services["seed"])["AWS_ENDPOINT_URL"] == scanner_env["AWS_ENDPOINT_URL"]
    assert seed_args.bucket == scanner_env["S3_SOURCE_BUCKET"]
    queue = urlsplit(scanner_env["SQS_QUEUE_URL"])
    assert (queue.hostname, queue.port) == ("moto", 5000)
    # moto's default account id, then the queue the seed creates.
    assert queue.path == f"/123456789012/{seed_args.queue_name}"
    # The seed's sample data lives under the prefix the scanner scans.
    from async_discovery.demo import PREFIX

    assert scanner_env["S3_PREFIX"].rstrip("/") == PREFIX


def test_dockerfile_matches_the_documented_build() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "pip install --no-cache-dir -c constraints.txt ." in text
    assert 'ENTRYPOINT ["async-discovery"]' in text
    assert re.search(r"^USER (?!root)\w+", text, re.M), "not as root"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", "tests", "dist", "build"} <= set(ignored)


@pytest.mark.slow  # the compose services' commands as subprocesses
def test_compose_commands_run_against_moto(
    compose: dict[str, Any], env: MotoEnv, tmp_path: Path
) -> None:
    """The seed and scanner services' commands and environment, run as written, with the
    moto service's address (http://moto:5000) swapped for the session's moto server."""
    services = compose["services"]
    moto_url = service_env(services["scanner"])["AWS_ENDPOINT_URL"]

    def run(service: str) -> subprocess.CompletedProcess[str]:
        swapped = {
            k: v.replace(moto_url, env.endpoint) for k, v in service_env(services[service]).items()
        }
        command = [arg.replace(moto_url, env.endpoint) for arg in services[service]["command"]]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "SQS_"))}
        return subprocess.run(
            [sys.executable, "-m", "async_discovery", *command],
            env={**base, **swapped},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    seeded = run("seed")
    assert seeded.returncode == 0, seeded.stderr
    queue_url = json.loads(seeded.stdout)["queue_url"]
    scanned = run("scanner")
    assert scanned.returncode == 0, scanned.stderr
    assert re.search(r"^status\s+200 complete$", scanned.stdout, re.M)
    # Another test may have scanned the demo bucket already: together, all five.
    queued, skipped = row(scanned.stdout, "queued"), row(scanned.stdout, r"skipped \(unchanged\)")
    assert queued + skipped == 5
    assert queue_url.endswith("/123456789012/demo-queue")
