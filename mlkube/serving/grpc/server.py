"""The gRPC server of one worker: OIP v2 (``inference.GRPCInferenceService``) and
``grpc.health.v1.Health``, on ``server.grpc_port``, in the worker's own event loop.

It is the REST API's twin, not a second runtime: the handlers take the worker's
:class:`~mlkube.serving.app.ServerState` (model, batcher, metrics, readiness), find the model
with :func:`~mlkube.serving.app.check_model` and infer with
:func:`~mlkube.serving.app.run_infer`. Errors are the same :class:`ClientError`\\ s with the
same messages; :func:`~mlkube.serving.grpc.status.status_code` turns their HTTP status into
the gRPC code. Every call is counted in ``mlkube_requests_total`` under ``grpc_*`` endpoint
names and the HTTP status REST would have answered (so ``code=~"5.."`` still means "the
server failed", whichever protocol carried the request).

Each worker binds the port with SO_REUSEPORT, as aiohttp does for REST, so the kernel spreads
connections (and so HTTP/2 streams) over the workers. This module imports grpc and is
imported only in a worker process after the fork, never in the master.

Health (what Kubernetes' ``grpc:`` probes ask) follows readiness: NOT_SERVING until the
model is loaded, SERVING while ready, and NOT_SERVING for good from the first instant of the
drain (:meth:`GrpcEndpoint.drain`), both for the whole server (``""``) and for
``inference.GRPCInferenceService``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mlkube import __version__
from mlkube.serving.app import (
    CLIENT_CLOSED,
    ServerState,
    check_model,
    element_limit,
    run_infer,
    stamp_parameters,
)
from mlkube.serving.attribution import REVISION_PARAMETER, TICKET_PARAMETER
from mlkube.serving.grpc import inference_pb2 as pb
from mlkube.serving.grpc.codec import (
    binary_rest_body,
    decode_infer_request,
    encode_infer_response,
    encode_model_metadata,
    response_from_binary,
)
from mlkube.serving.grpc.status import status_code, trailing_metadata
from mlkube.serving.protocol import ClientError
from mlkube.serving.store import StoreUnavailable

log = logging.getLogger("mlkube.serving.grpc")
access_log = logging.getLogger("mlkube.serving.access")

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
DEGRADED_KEY = "mlkube-degraded"
HEALTH_INTERVAL = 0.25  # seconds between readiness checks that update the health status
Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Context], Awaitable[Message]]

#: Endpoint label of each method in mlkube_requests_total.
ENDPOINTS = {
    "ServerLive": "grpc_live",
    "ServerReady": "grpc_ready",
    "ModelReady": "grpc_model_ready",
    "ServerMetadata": "grpc_server_metadata",
    "ModelMetadata": "grpc_model_metadata",
    "ModelInfer": "grpc_infer",
}


def bind_address(host: str, port: int) -> str:
    """``host:port`` as gRPC wants it (IPv6 addresses in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _instrument(state: ServerState, method: str, handler: Handler, inflight: bool) -> Handler:
    """Error mapping, metrics and the sampled access log around one method (as REST's)."""
    metrics = state.metrics
    sample_rate = state.config.server.access_log_sample_rate
    endpoint = ENDPOINTS[method]

    async def wrapped(request: Any, context: Context) -> Message:
        start = time.perf_counter()
        status = 200
        if inflight:
            metrics.inflight_now += 1
        try:
            return await handler(request, context)
        except ClientError as exc:
            status = exc.status
            await context.abort(status_code(status), exc.message, trailing_metadata(exc.headers))
        except StoreUnavailable as exc:
            status = 503
            await context.abort(
                status_code(status),
                f"feature store: {exc}",
                trailing_metadata({"Retry-After": str(exc.retry_after)}),
            )
        except asyncio.CancelledError:
            # The client cancelled or its deadline passed: gRPC cancels the handler.
            status = CLIENT_CLOSED
            raise
        except Exception:
            status = 500
            log.exception("unhandled error in %s", endpoint)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error (logged by the server)")
        finally:
            if inflight:
                metrics.inflight_now -= 1
            elapsed = time.perf_counter() - start
            metrics.observe_request(endpoint, status, elapsed)
            if sample_rate and random.random() < sample_rate:
                access_log.info(
                    "access",
                    extra={
                        "method": "gRPC",
                        "path": f"/{SERVICE}/{method}",
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                        "remote": context.peer(),
                    },
                )

    return wrapped


def inference_handler(state: ServerState) -> grpc.GenericRpcHandler:
    """``inference.GRPCInferenceService`` on top of the worker's state."""
    config = state.config
    model_name, model_version = config.model.name, config.model.version
    max_items = element_limit(config)

    async def server_live(request: pb.ServerLiveRequest, context: Context) -> Message:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(request: pb.ServerReadyRequest, context: Context) -> Message:
        return pb.ServerReadyResponse(ready=state.ready)

    async def model_ready(request: pb.ModelReadyRequest, context: Context) -> Message:
        try:
            model = check_model(state, request.name, request.version or None, ready=False)
        except ClientError as exc:
            if exc.status != 503:
                raise
            return pb.ModelReadyResponse(ready=False)  # not created yet: an answer, not an error
        return pb.ModelReadyResponse(ready=model.ready and not state.draining)

    async def server_metadata(request: pb.ServerMetadataRequest, context: Context) -> Message:
        return pb.ServerMetadataResponse(name="mlkube", version=__version__, extensions=[])

    async def model_metadata(request: pb.ModelMetadataRequest, context: Context) -> Message:
        model = check_model(state, request.name, request.version or None, ready=False)
        return encode_model_metadata(model_name, model_version, model.metadata())

    async def model_infer(request: pb.ModelInferRequest, context: Context) -> Message:
        model = check_model(state, request.model_name, request.model_version or None)
        if state.raw is not None:
            # The plain shape goes through the model's raw path (the C request path for the
            # bandit), as the same request over REST with binary tensors would.
            rest = binary_rest_body(request)
            answer = state.raw.infer_raw(rest[0], "v2", rest[1]) if rest is not None else None
            if answer is not None and answer.json_length is not None:
                await _mark_degraded(answer.degraded, context)
                message = response_from_binary(answer.body, answer.json_length)
                assert state.issuer is not None
                ticket = state.issuer.stamp().ticket
                if ticket:
                    message.parameters[REVISION_PARAMETER].string_param = state.config.revision
                    message.parameters[TICKET_PARAMETER].string_param = ticket
                return message
        parsed = decode_infer_request(request, max_items)
        response = await run_infer(state, model, parsed)
        stamp_parameters(state, response)
        await _mark_degraded(response.degraded, context)
        return encode_infer_response(response, model_name, model_version, parsed.id)

    async def _mark_degraded(degraded: str | None, context: Context) -> None:
        if degraded is not None:
            state.metrics.mark_degraded(degraded)
            await context.send_initial_metadata(((DEGRADED_KEY, degraded),))

    methods: dict[str, tuple[Handler, type[Message], type[Message]]] = {
        "ServerLive": (server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": (server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": (model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": (server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        "ModelMetadata": (model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ModelInfer": (model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
    }
    declared = {m.name for m in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
    if declared != set(methods):  # the .proto and this table must list the same calls
        raise RuntimeError(f"{SERVICE}: handlers {sorted(methods)} != proto {sorted(declared)}")
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            name: grpc.unary_unary_rpc_method_handler(
                _instrument(state, name, handler, inflight=name == "ModelInfer"),
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )
            for name, (handler, request_type, response_type) in methods.items()
        },
    )


class GrpcEndpoint:
    """The gRPC server of one worker, tied to the aiohttp app's lifecycle.

    Its ``lifecycle`` goes into the app's ``cleanup_ctx`` after the model's own, so it starts
    once the model object exists and stops before the model is closed. The worker calls
    :meth:`drain` when SIGTERM arrives and :meth:`begin_stop` when REST stops accepting, so
    both protocols drain and stop together within ``server.grace_seconds``.
    """

    def __init__(self, state: ServerState) -> None:
        self.state = state
        server = state.config.server
        self.address = bind_address(server.host, server.grpc_port)
        self.grace = server.grace_seconds
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", server.max_body_bytes),
            ]
        )
        self.server.add_generic_rpc_handlers((inference_handler(state),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._serving: bool | None = None
        self._draining = False
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve; OSError when the port cannot be bound."""
        try:
            port = self.server.add_insecure_port(self.address)
        except RuntimeError as exc:  # grpc raises this when the bind fails
            raise OSError(f"cannot listen on {self.address}: {exc}") from exc
        if not port:
            raise OSError(f"cannot listen on {self.address}")
        await self.sync_health()
        await self.server.start()
        loop = type(asyncio.get_running_loop())
        log.info("gRPC listening", extra={"address": self.address, "loop": loop.__module__})

    async def sync_health(self) -> None:
        """Set the health status from readiness (no-op once draining or unchanged)."""
        serving = self.state.ready and not self._draining
        if serving == self._serving or self._draining:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE):
            await self.health.set(service, status)

    async def drain(self) -> None:
        """NOT_SERVING for good (SIGTERM): probes and health-checking balancers move away."""
        self._draining = True
        await self.health.enter_graceful_shutdown()

    def begin_stop(self) -> None:
        """Refuse new calls now; calls in flight get ``grace`` seconds, then are cancelled."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self.server.stop(self.grace))

    async def stop(self) -> None:
        self.begin_stop()
        assert self._stopping is not None
        await self._stopping

    async def _follow_readiness(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            await self.sync_health()

    async def lifecycle(self, app: Any) -> AsyncIterator[None]:
        """An aiohttp cleanup context: serve gRPC while the app runs."""
        await self.start()
        follower = asyncio.create_task(self._follow_readiness(), name="mlkube-grpc-health")
        try:
            yield
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await self.stop()
