"""Process model of `mlkube serve`: a small master that forks one worker per core.

Each worker binds its own listening socket with SO_REUSEPORT, so the kernel spreads new
connections over the workers with no accept lock and no proxy hop. The master does no HTTP
work; it forwards SIGTERM/SIGINT, restarts a worker that died unexpectedly, and tells
prometheus-client when a worker's live gauges must be dropped.

Shutdown (SIGTERM from the kubelet): every worker turns readiness false at once, keeps
serving for ``server.drain_seconds`` (so endpoints controllers and load balancers stop sending
traffic), then closes its listening socket and lets in-flight requests finish for up to
``server.grace_seconds`` before it exits. Nothing accepted is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from mlkube.serving.config import ServeConfig

log = logging.getLogger("mlkube.serving.server")

EXIT_OK = 0
EXIT_FATAL = 3  # a worker could not start (bind failed, model failed to load)
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}


def check_bind(host: str, port: int) -> None:
    """Fail early, in the master, when the port cannot be bound (raises OSError)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))


def _run_loop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main`` on uvloop when it is installed (about 2x aiohttp throughput)."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the image
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


async def serve_worker(config: ServeConfig, worker_id: int) -> int:
    """One worker: the aiohttp app on a SO_REUSEPORT socket until SIGTERM/SIGINT."""
    from aiohttp import web

    from mlkube.serving.app import STATE, create_app
    from mlkube.serving.context import RuntimeContext
    from mlkube.serving.edge import Edge, EdgeLimits
    from mlkube.serving.metrics import Metrics

    metrics = Metrics(config.model.name, config.model.version, config.revision)
    app = create_app(config, RuntimeContext(metrics=metrics, worker_id=worker_id))
    state = app[STATE]
    stop = asyncio.Event()
    fatal: list[BaseException] = []

    def on_signal() -> None:
        if not state.draining:
            state.draining = True  # readiness is false from this instant
            log.info("shutdown requested; readiness is now false", extra={"worker": worker_id})
        stop.set()

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        stop.set()

    state.on_fatal = on_fatal
    grpc_endpoint = None
    if config.server.grpc_port:
        # gRPC is imported here, in the worker after the fork, never in the master.
        from mlkube.serving.grpc.server import GrpcEndpoint

        grpc_endpoint = GrpcEndpoint(state)
        app.cleanup_ctx.append(grpc_endpoint.lifecycle)  # after the model's: stops before it
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    server = config.server
    # The grace period is spent below, waiting for in-flight requests; what is left for
    # aiohttp's own shutdown (which waits up to twice this) only cancels stragglers.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=0.05,
        keepalive_timeout=server.keepalive_timeout,
    )
    try:
        await runner.setup()  # builds the model and starts gRPC
    except OSError as exc:
        log.error("cannot start: %s", exc)
        await runner.cleanup()
        return EXIT_FATAL
    edge = Edge(
        EdgeLimits(
            server.header_timeout, server.max_connections, server.max_requests_per_connection
        ),
        on_refused=lambda status: metrics.observe_request("other", status, 0.0),
    )
    state.edge = edge
    assert runner.server is not None
    try:
        listener = await loop.create_server(
            edge.factory(runner.server),
            server.host,
            server.port,
            reuse_port=True,
            backlog=server.backlog,
        )
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", server.host, server.port, exc)
        await runner.cleanup()
        return EXIT_FATAL
    await stop.wait()
    if grpc_endpoint is not None:
        await grpc_endpoint.drain()  # gRPC health NOT_SERVING, as readiness already is
    if state.draining and server.drain_seconds and not fatal:
        # Readiness is false and every answer now carries `Connection: close`, so clients
        # move to other pods as the endpoints update; nothing is refused yet.
        await asyncio.sleep(server.drain_seconds)
    started = time.monotonic()
    if grpc_endpoint is not None:
        grpc_endpoint.begin_stop()  # gRPC refuses new calls; its calls get the same grace
    listener.close()  # stop accepting
    runner.server.pre_shutdown()  # idle keep-alive connections close; busy ones after their answer
    state.quiet = asyncio.Event()
    if not state.active:
        state.quiet.set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(server.grace_seconds):
            await state.quiet.wait()
    if state.active:
        log.warning(
            "grace period over; cancelling requests still in flight",
            extra={"worker": worker_id, "requests": state.active},
        )
    await runner.cleanup()  # cancel what is left, gRPC's stop, close the model
    log.info(
        "worker stopped",
        extra={"worker": worker_id, "shutdown_seconds": round(time.monotonic() - started, 3)},
    )
    return EXIT_FATAL if fatal else EXIT_OK


def _worker_process(config: ServeConfig, worker_id: int) -> int:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    return _run_loop(lambda: serve_worker(config, worker_id))


def _spawn(config: ServeConfig, worker_id: int) -> int:
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            code = _worker_process(config, worker_id)
        except BaseException:
            log.exception("worker %d crashed", worker_id)
        finally:
            logging.shutdown()
            os._exit(code)
    return pid


def run_master(config: ServeConfig, workers: int, prometheus_dir: str | None) -> int:
    """Start ``workers`` worker processes and supervise them until SIGTERM/SIGINT."""
    mark_dead: Callable[[int], None] = lambda pid: None  # noqa: E731
    if prometheus_dir is not None:
        from prometheus_client import multiprocess

        def mark_dead(pid: int) -> None:
            multiprocess.mark_process_dead(pid, prometheus_dir)  # type: ignore[no-untyped-call]

    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    children: dict[int, int] = {}
    for worker_id in range(workers):
        children[_spawn(config, worker_id)] = worker_id
    log.info(
        "serving",
        extra={
            "host": config.server.host,
            "port": config.server.port,
            "grpc_port": config.server.grpc_port or None,
            "workers": workers,
            "model": config.model.name,
            "version": config.model.version,
            "format": config.model.format,
            "feature_store": config.feature_store.kind,
        },
    )
    shutting_down = False
    deadline = float("inf")
    exit_code = EXIT_OK
    restarts: list[float] = []

    def begin_shutdown() -> None:
        nonlocal shutting_down, deadline
        shutting_down = True
        deadline = (
            time.monotonic() + config.server.drain_seconds + config.server.grace_seconds + 5.0
        )
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    while children:
        info = signal.sigtimedwait(_SIGNALS, 0.5)
        stop = info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT)
        if stop and not shutting_down:
            assert info is not None
            log.info("signal %s: stopping workers", signal.Signals(info.si_signo).name)
            begin_shutdown()
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children.clear()
                break
            if pid == 0:
                break
            worker_id = children.pop(pid, -1)
            mark_dead(pid)
            code = os.waitstatus_to_exitcode(status)
            if shutting_down:
                continue
            if code == EXIT_FATAL:
                log.error("worker %d could not start; stopping", worker_id)
                exit_code = 1
                begin_shutdown()
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 30.0] + [now]
            if len(restarts) > 5:
                log.error("workers keep dying (%d restarts in 30 s); stopping", len(restarts))
                exit_code = 1
                begin_shutdown()
                continue
            log.warning("worker %d exited with %s; restarting", worker_id, code)
            children[_spawn(config, worker_id)] = worker_id
        if shutting_down and time.monotonic() > deadline:
            for pid in list(children):
                log.error("worker pid %d did not stop in time; killing it", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    log.info("stopped", extra={"exit_code": exit_code})
    return exit_code
