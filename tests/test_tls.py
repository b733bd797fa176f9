"""The streamed state write over HTTPS.

Over TLS botocore sends a streamed ``PutObject`` body as ``aws-chunked`` with a CRC32
trailer (over plain HTTP it signs the payload instead), so the state body
(``state_codec.EncodedBody``) is written here against moto served over HTTPS on
127.0.0.1, with a certificate made for the test and trusted through botocore's own
``AWS_CA_BUNDLE``; the state is then read back.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .helpers import MotoEnv, scan

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for IP 127.0.0.1 (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Recorder:
    """WSGI middleware: the method, path and headers of every request moto receives."""

    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]]) -> None:
        self.app = app
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        headers = {
            k[5:].replace("_", "-").lower(): str(v)
            for k, v in environ.items()
            if k.startswith("HTTP_")
        }
        self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], headers))
        return self.app(environ, start_response)


@pytest.fixture
def https_moto(moto_endpoint: str, tmp_path: Path) -> Iterator[tuple[str, Path, Recorder]]:
    """moto over HTTPS on a free 127.0.0.1 port, in this process: (URL, CA bundle,
    request recorder). Its backends are this process's, not those of the session's
    server (``moto_endpoint``, asked for the fake credentials it sets)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    cert, key = self_signed(tmp_path)
    recorder = Recorder(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, recorder, threaded=True, ssl_context=(str(cert), str(key)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.port}", cert, recorder
    finally:
        server.shutdown()
        thread.join(10)


async def test_state_write_over_https(
    https_moto: tuple[str, Path, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca_bundle, recorder = https_moto
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_bundle))  # botocore's own trust setting
    env = MotoEnv(url)  # setup and inspection over the same HTTPS endpoint
    bucket, queue_url = env.new_bucket(), env.new_queue()
    keys = [f"incoming/f{i}/file {i}.csv" for i in range(3)]
    etags = {key: env.put(bucket, key, f"{key}\n") for key in keys}

    summary = await scan(env.config(bucket, queue_url, endpoint_url=url))
    assert (summary["statusCode"], summary["queued"]) == (200, 3)

    # Read back over the same HTTPS endpoint, verified against the same CA bundle.
    def state_etags() -> dict[str, str]:
        body = env.s3.get_object(Bucket=bucket, Key="state/processed_files.json")["Body"].read()
        files = json.loads(body)["files"]
        assert all(entry["status"] == "queued" for entry in files.values())
        return {key: entry["etag"] for key, entry in files.items()}

    assert state_etags() == etags
    assert sorted(b["key"] for b in env.bodies(queue_url)) == keys

    # A second run reads that state over HTTPS and replaces it with If-Match.
    etags["incoming/f9/new.csv"] = env.put(bucket, "incoming/f9/new.csv")
    again = await scan(env.config(bucket, queue_url, endpoint_url=url))
    assert (again["statusCode"], again["queued"], again["skipped"]) == (200, 1, 3)
    assert state_etags() == etags

    # Both state writes went over TLS as streamed, aws-chunked bodies with a checksum
    # trailer, conditional as the state requires.
    puts = [h for m, p, h in recorder.requests if m == "PUT" and p.endswith("processed_files.json")]
    assert len(puts) == 2
    for headers in puts:
        assert "aws-chunked" in headers.get("content-encoding", "")
        assert headers.get("x-amz-trailer", "").startswith("x-amz-checksum-")
    assert puts[0].get("if-none-match") == "*" and puts[1].get("if-match")
