"""Real programs for the serving integration tests: redis-server and `mlkube serve`.

Both run on free loopback ports and are stopped by the PID this fixture started, never by
name, so parallel test runs on a shared machine do not disturb each other.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; ``kill()`` and ``start()`` simulate an outage on one port."""

    def __init__(self, directory: Path, port: int, appendonly: bool) -> None:
        self.dir = directory
        self.port = port
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--dir", str(self.dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--protected-mode", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: the harshest outage (no shutdown save; AOF with fsync always keeps data)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


def _redis(tmp_path: Path, appendonly: bool) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (make debs installs it)")
    data = tmp_path / "redis"
    data.mkdir()
    server = RedisServer(data, free_port(), appendonly=appendonly)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """In-memory Redis (no fsync: disk latency on a shared machine cannot stall it)."""
    yield from _redis(tmp_path, appendonly=False)


@pytest.fixture
def durable_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Redis with an fsync'd append-only file: what it acknowledged survives SIGKILL."""
    yield from _redis(tmp_path, appendonly=True)


class Serve:
    """`mlkube serve` as a subprocess (the real master + workers), REST and gRPC each on a
    free port (never the default 8081: parallel runs would share it through SO_REUSEPORT)."""

    def __init__(
        self, port: int, grpc_port: int, env: dict[str, str], args: list[str], log: Path
    ) -> None:
        self.port = port
        self.grpc_port = grpc_port
        self.base = f"http://127.0.0.1:{port}"
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        self._log = log.open("wb")
        self.log_path = log
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlkube", "serve"),
                *("--port", str(port), "--grpc-port", str(grpc_port), *args),
            ],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlkube serve exited early:\n{self.log()}")
            with contextlib.suppress(OSError):
                if self.get("/v2/health/ready")[0] == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"mlkube serve never became ready:\n{self.log()}")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Serve] = []

    def start(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> Serve:
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "MLKUBE_LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        log = tmp_path / f"serve-{len(started)}.log"
        port = free_port()
        grpc_port = next(p for p in iter(free_port, None) if p != port)
        server = Serve(port, grpc_port, full_env, list(args), log)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.close()


def children(pid: int) -> list[int]:
    """The worker processes of the `mlkube serve` master ``pid`` (from /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def wait_replaced(master: int, dead: int, workers: int, timeout: float = 15.0) -> list[int]:
    """Until the master has ``workers`` children again and ``dead`` is not among them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = children(master)
        if len(now) == workers and dead not in now:
            return now
        time.sleep(0.05)
    return children(master)
