"""Real servers for `mlkube fetch`: an HTTP file server and an S3 server, on loopback.

The S3 server is versitygw (Apache-2.0) with its posix backend: buckets are directories
under a temporary root, objects are files in them, and every request is authenticated
with SigV4 against the root credentials it was started with. scripts/install-versitygw
builds it once from the Go module proxy (`make test` runs it first); it is started by
PID and stopped by that PID only.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
S3_ACCESS_KEY = "mlkube-test"
S3_SECRET_KEY = "mlkube-test-secret-0123456789"
S3_REGION = "eu-central-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class FileServer:
    root: Path
    base: str

    def put(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"{self.base}/{name}"


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[FileServer]:
    """Python's own HTTP file server (200 with Content-Length, 404 for a missing file)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield FileServer(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class S3Server:
    root: Path
    endpoint: str

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """An object, written where the posix backend serves it from."""
        path = self.root / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"s3://{bucket}/{key}"

    def env(self, **overrides: str) -> dict[str, str]:
        """The variables the ModelService's Secret becomes in the init container."""
        return {
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": S3_REGION,
            **overrides,
        }


def versitygw() -> str:
    proc = subprocess.run(
        [str(REPO / "scripts" / "install-versitygw")], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/install-versitygw failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("s3")
    (root / "data").mkdir()
    port = free_port()
    log = (root / "versitygw.log").open("wb")
    proc = subprocess.Popen(
        [
            versitygw(),
            "--port", f"127.0.0.1:{port}",
            "--access", S3_ACCESS_KEY,
            "--secret", S3_SECRET_KEY,
            "--region", S3_REGION,
            "--health", "/health",
            "--quiet",
            "posix", str(root / "data"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(endpoint + "/health", timeout=1) as resp,
            ):
                if resp.status == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"versitygw did not start:\n{(root / 'versitygw.log').read_text()}")
            time.sleep(0.05)
        yield S3Server(root / "data", endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@dataclass
class Fetched:
    code: int
    stdout: str
    stderr: str
    termination_message: str


@pytest.fixture
def run_fetch(tmp_path: Path) -> Callable[..., Fetched]:
    """`mlkube fetch` as the init container runs it: a real process, its exit status, and
    what it wrote to its termination log."""

    def run(*args: str, env: dict[str, str] | None = None, dest: Path | None = None) -> Fetched:
        log = tmp_path / "termination-log"
        log.unlink(missing_ok=True)
        proc = subprocess.run(
            [
                sys.executable, "-m", "mlkube", "fetch",
                "--dest", str(dest or tmp_path / "models"),
                "--termination-log", str(log),
                *args,
            ],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        return Fetched(
            proc.returncode,
            proc.stdout,
            proc.stderr,
            log.read_text() if log.exists() else "",
        )

    return run
