"""The aiohttp application: OIP v2 REST, KServe v1, health, metrics.

Handlers are thin: decode with :mod:`mlkube.serving.protocol`, call the model, encode. Every
failure that is the client's fault is a :class:`ClientError` and becomes a 4xx with
``{"error": "<field>: <problem>"}``; nothing a client sends can produce a 5xx or end the
worker. There are no middlewares on purpose: each one costs microseconds on every request, so
error mapping and metrics live in one wrapper per route, and 404/405 come from catch-all
routes instead of a middleware.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from mlkube import __version__
from mlkube.serving.attribution import (
    REVISION_PARAMETER,
    TICKET_HEADER,
    TICKET_PARAMETER,
    TicketIssuer,
    Unattributed,
    read_ticket,
)
from mlkube.serving.batcher import Batcher, DynamicBatcher, ThreadedBatcher
from mlkube.serving.config import ServeConfig
from mlkube.serving.context import RuntimeContext
from mlkube.serving.edge import Edge
from mlkube.serving.metrics import CONTENT_TYPE, FLUSH_INTERVAL, Metrics
from mlkube.serving.model import (
    Model,
    ModelLoadError,
    SupportsFeedback,
    SupportsRawInfer,
    SupportsThreadedPredict,
    build_model,
)
from mlkube.serving.protocol import (
    BINARY_HEADER,
    ClientError,
    InferenceRequest,
    InferenceResponse,
    parse_feedback,
    parse_v1_predict,
    parse_v2_infer,
    render_error,
    render_v1,
    render_v2,
    render_v2_binary,
    select_outputs,
    unknown_output,
)
from mlkube.serving.shadow import Shadow
from mlkube.serving.store import StoreUnavailable

log = logging.getLogger("mlkube.serving")
access_log = logging.getLogger("mlkube.serving.access")

JSON = "application/json"
OCTETS = "application/octet-stream"  # answers with binary tensor data
DEGRADED_HEADER = "Mlkube-Degraded"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class ServerState:
    """Mutable per-worker state shared by the handlers."""

    config: ServeConfig
    metrics: Metrics
    model: Model[Any] | None = None
    batcher: Batcher[Any, InferenceResponse] | None = None
    # The model's raw path, when it has one and batching is off.
    raw: SupportsRawInfer | None = None
    draining: bool = False
    # The worker's connection edge (None in tests that run the app without one).
    edge: Edge | None = None
    # Requests being handled now, on every route (the shutdown waits for them).
    active: int = 0
    # Set by the shutdown: set again whenever ``active`` drops to 0.
    quiet: asyncio.Event | None = None
    load_error: BaseException | None = None
    # Copies of requests to the canary (stable pods with shadow traffic on), else None.
    shadow: Shadow | None = None
    # The revision and ticket every scoring answer carries (None: made in __post_init__).
    issuer: TicketIssuer | None = None
    load_task: asyncio.Task[None] | None = None
    on_fatal: Callable[[BaseException], None] | None = None

    def __post_init__(self) -> None:
        if self.issuer is None:
            self.issuer = TicketIssuer(self.config.model.name, self.config.revision)

    @property
    def ready(self) -> bool:
        return not self.draining and self.model is not None and self.model.ready


STATE = web.AppKey("mlkube_state", ServerState)
CONTEXT = web.AppKey("mlkube_context", RuntimeContext)


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(status=status, body=body, content_type=JSON, headers=headers)
    if headers and headers.get("Connection", "").lower() == "close":
        response.force_close()  # close after this answer, not only say so
    return response


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json(status, render_error(message), headers)


def _instrument(state: ServerState, endpoint: str, handler: Handler, inflight: bool) -> Handler:
    """Error mapping, metrics and the sampled access log around one route's handler."""
    metrics = state.metrics
    sample_rate = state.config.server.access_log_sample_rate
    max_body = state.config.server.max_body_bytes

    async def wrapped(request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        edge = state.edge
        conn = edge.connection(request.transport) if edge is not None else None
        if conn is not None:
            conn.request_started()
        state.active += 1
        if inflight:
            metrics.inflight_now += 1
        try:
            response = await handler(request)
        except ClientError as exc:
            response = _error(exc.status, exc.message, exc.headers or None)
        except StoreUnavailable as exc:
            response = _error(503, f"feature store: {exc}", {"Retry-After": str(exc.retry_after)})
        except web.HTTPRequestEntityTooLarge:
            response = _error(413, f"body: larger than the limit of {max_body} bytes")
        except ClientGone:
            # Counted apart from server errors and logged quietly: nothing went wrong here.
            log.debug("client closed the connection during %s %s", request.method, request.path)
            response = _error(CLIENT_CLOSED, "client closed the connection")
        except web.HTTPException as exc:
            response = _error(exc.status, f"request: {exc.reason}")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error in %s", endpoint)
            response = _error(500, "internal error (logged by the server)")
        finally:
            state.active -= 1
            if not state.active and state.quiet is not None:
                state.quiet.set()
            if inflight:
                metrics.inflight_now -= 1
        last = conn.request_done() if conn is not None else False
        # Close after this answer when the connection has had its share, when the worker is
        # draining (clients move to a pod that stays), or when the body was not read (its
        # unread bytes must not be taken for the next request).
        if last or state.draining or not request.content.is_eof():
            response.force_close()
        elapsed = time.perf_counter() - start
        metrics.observe_request(endpoint, response.status, elapsed)
        if sample_rate and random.random() < sample_rate:
            access_log.info(
                "access",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "remote": request.remote,
                },
            )
        return response

    return wrapped


def _check_model(state: ServerState, request: web.Request) -> Model[Any]:
    return check_model(state, request.match_info["name"], request.match_info.get("version"))


def check_model(
    state: ServerState, name: str, version: str | None, *, ready: bool = True
) -> Model[Any]:
    """The served model (REST and gRPC): 404 for another name or version, 503 until it is
    ready (with ``ready=False``, only until it exists)."""
    model = state.model
    config = state.config.model
    if name != config.name:
        raise ClientError(404, f"name: model {name!r} is not served here (serving {config.name!r})")
    if version is not None and version != config.version:
        raise ClientError(
            404, f"version: model {name!r} has no version {version!r} (serving {config.version!r})"
        )
    if model is None or (ready and not model.ready):
        why = f" (load failed: {state.load_error})" if state.load_error is not None else " yet"
        raise ClientError(503, f"model {name!r} is not ready{why}", {"Retry-After": "1"})
    return model


#: OIP v2 extensions this server implements (server metadata ``extensions``).
EXTENSIONS = ["binary_tensor_data"]
#: Content-Encodings of request bodies that the server decodes (aiohttp does, on read).
BODY_ENCODINGS = ("gzip", "deflate", "identity")
#: The status a request is counted under when its client went away before it was answered
#: (nginx's "client closed request"): not a server error, and nobody reads the answer.
CLIENT_CLOSED = 499


class ClientGone(Exception):
    """The client closed the connection before its request was read or answered."""


def body_encoding_problem(header: str | None) -> str | None:
    """Pure: why a request's ``Content-Encoding`` cannot be decoded, or None if it can."""
    if not header:
        return None
    for coding in (c.strip().lower() for c in header.split(",")):
        if coding and coding not in BODY_ENCODINGS:
            return (
                f"Content-Encoding: {coding!r} is not supported (use {', '.join(BODY_ENCODINGS)})"
            )
    return None


async def _read_body(request: web.Request, limit: int, within: float) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise ClientError(413, f"body: {length} bytes exceed the limit of {limit} bytes")
    problem = body_encoding_problem(request.headers.get("Content-Encoding"))
    if problem is not None:
        raise ClientError(415, problem)
    try:
        if request.content.is_eof():
            # The whole body has arrived (small bodies come with the headers): no wait to
            # bound, so no timer to arm and cancel.
            return await request.read()
        async with asyncio.timeout(within):
            return await request.read()
    except TimeoutError:
        request.content.feed_eof()  # the rest will not be waited for: close after the answer
        raise ClientError(
            408, f"body: not received within {within:g} s; closing", {"Connection": "close"}
        ) from None
    except web.RequestPayloadError as exc:
        # A body that does not decode as its Content-Encoding says (or is malformed
        # chunked framing): the rest of the stream cannot be trusted, so the connection
        # closes after the answer.
        request.content.feed_eof()  # nothing more to read; aiohttp must not try either
        encoding = request.headers.get("Content-Encoding", "identity")
        raise ClientError(
            400, f"body: cannot be decoded as {encoding}: {exc}", {"Connection": "close"}
        ) from exc
    except ConnectionResetError as exc:
        raise ClientGone(str(exc)) from exc


async def _predict(state: ServerState, model: Model[Any], prepared: Any) -> InferenceResponse:
    if state.batcher is not None:
        return await state.batcher.submit(prepared)
    (response,) = await model.predict([prepared])
    if isinstance(response, Exception):
        raise response
    return response


async def run_infer(
    state: ServerState, model: Model[Any], parsed: InferenceRequest
) -> InferenceResponse:
    """One decoded OIP v2 request through the model (REST and gRPC): the requested outputs
    checked before the model runs, then prepared, predicted (batched or not) and selected."""
    if parsed.outputs is not None:
        declared = [t.name for t in model.metadata().outputs]
        # Refused before the model runs when the model declares its outputs.
        problem = unknown_output(parsed.outputs, declared) if declared else None
        if problem is not None:
            raise problem
    prepared = model.prepare(parsed)
    response = await _predict(state, model, prepared)
    if parsed.outputs is not None:
        response = select_outputs(response, parsed.outputs)
    return response


def _answer(
    state: ServerState,
    body: bytes,
    degraded: str | None,
    json_length: int | None = None,
    *,
    raw_v2: bool = False,
) -> web.Response:
    """A scoring answer: the body with the revision and ticket headers (and, for a raw OIP
    v2 answer, the same two as response parameters spliced in after its opening brace)."""
    assert state.issuer is not None
    stamp = state.issuer.stamp()
    headers = dict(stamp.headers)
    if raw_v2:
        body = b"{" + stamp.json_prefix + body[1:]
        if json_length is not None:
            json_length += len(stamp.json_prefix)
    if degraded is not None:
        state.metrics.mark_degraded(degraded)
        headers[DEGRADED_HEADER] = degraded
    if json_length is None:
        return web.Response(body=body, content_type=JSON, headers=headers)
    headers[BINARY_HEADER] = str(json_length)
    return web.Response(body=body, content_type=OCTETS, headers=headers)


def stamp_parameters(state: ServerState, response: InferenceResponse) -> None:
    """Add the revision and ticket to an OIP v2 answer's parameters (REST and gRPC)."""
    assert state.issuer is not None
    stamp = state.issuer.stamp()
    if not stamp.ticket:
        return
    response.parameters = {
        **(response.parameters or {}),
        REVISION_PARAMETER: state.config.revision,
        TICKET_PARAMETER: stamp.ticket,
    }


def _check_body_model(parsed: InferenceRequest, name: str, version: str) -> None:
    """KServe's client repeats the model in the body; it must be the one in the path."""
    if parsed.model_name is not None and parsed.model_name != name:
        raise ClientError(
            400, f"model_name: {parsed.model_name!r} differs from the path's {name!r}"
        )
    if parsed.model_version is not None and parsed.model_version not in ("", version):
        raise ClientError(
            400, f"model_version: {parsed.model_version!r} differs from the served {version!r}"
        )


def element_limit(config: ServeConfig) -> int:
    """Elements per tensor (REST and gRPC): the bandit's item limit; for other models the
    body limit bounds it."""
    return config.bandit.max_items if config.model.format == "bandit" else 1 << 26


def _routes(app: web.Application, state: ServerState) -> None:
    config = state.config
    max_body = config.server.max_body_bytes
    body_timeout = config.server.body_timeout
    max_items = element_limit(config)
    model_name, model_version = config.model.name, config.model.version
    feedback_window = config.feedback_window

    async def live(request: web.Request) -> web.Response:
        return _json(200, b'{"live":true}')

    async def ready(request: web.Request) -> web.Response:
        if state.ready:
            return _json(200, b'{"ready":true}')
        return _json(503, b'{"ready":false}')

    async def server_metadata(request: web.Request) -> web.Response:
        return _json(
            200, orjson.dumps({"name": "mlkube", "version": __version__, "extensions": EXTENSIONS})
        )

    async def model_metadata(request: web.Request) -> web.Response:
        model = _model_or_404(request)
        meta = model.metadata()
        body: dict[str, Any] = {
            "name": model_name,
            "versions": [model_version],
            "platform": meta.platform,
            "inputs": [t.as_json() for t in meta.inputs],
            "outputs": [t.as_json() for t in meta.outputs],
        }
        if meta.parameters:
            body["parameters"] = meta.parameters
        return _json(200, orjson.dumps(body))

    def _model_or_404(request: web.Request) -> Model[Any]:
        name = request.match_info["name"]
        if name != model_name:
            raise ClientError(404, f"name: model {name!r} is not served here")
        version = request.match_info.get("version")
        if version is not None and version != model_version:
            raise ClientError(404, f"version: model {name!r} has no version {version!r}")
        if state.model is None:
            raise ClientError(503, "model is still being created", {"Retry-After": "1"})
        return state.model

    async def model_ready(request: web.Request) -> web.Response:
        model = _model_or_404(request)
        ok = model.ready and not state.draining
        return _json(200 if ok else 503, orjson.dumps({"name": model_name, "ready": ok}))

    async def v1_live(request: web.Request) -> web.Response:
        return _json(200, b'{"status":"alive"}')

    async def v1_models(request: web.Request) -> web.Response:
        return _json(200, orjson.dumps({"models": [model_name]}))

    async def infer(request: web.Request) -> web.Response:
        model = _check_model(state, request)
        body = await _read_body(request, max_body, body_timeout)
        binary_header = request.headers.get(BINARY_HEADER)
        if state.raw is not None:
            if binary_header is None:
                answer = state.raw.infer_raw(body, "v2")
            elif binary_header.isdigit():
                answer = state.raw.infer_raw(body, "v2", int(binary_header))
            else:
                answer = None  # the Python path says what is wrong with the header
            if answer is not None:
                if state.shadow is not None and binary_header is None:
                    state.shadow.offer(request.path, body, answer.body)
                return _answer(state, answer.body, answer.degraded, answer.json_length, raw_v2=True)
        parsed = parse_v2_infer(body, max_items, binary_header)
        _check_body_model(parsed, model_name, model_version)
        response = await run_infer(state, model, parsed)
        # The revision and ticket go first, as on the raw path (same bytes for the same
        # answer); a model's own response parameters get them merged in instead.
        splice = not response.parameters
        if not splice:
            stamp_parameters(state, response)
        binary = parsed.binary_outputs([t.name for t in response.outputs])
        if binary:
            body, json_length = render_v2_binary(
                response, model_name, model_version, parsed.id, binary
            )
            return _answer(state, body, response.degraded, json_length, raw_v2=splice)
        rendered = render_v2(response, model_name, model_version, parsed.id)
        if state.shadow is not None and binary_header is None:
            state.shadow.offer(request.path, body, rendered)
        return _answer(state, rendered, response.degraded, raw_v2=splice)

    async def predict(request: web.Request) -> web.Response:
        model = _check_model(state, request)
        body = await _read_body(request, max_body, body_timeout)
        if state.raw is not None:
            answer = state.raw.infer_raw(body, "v1")
            if answer is not None:
                return _answer(state, answer.body, answer.degraded)
        spec = model.v1_input
        parsed = parse_v1_predict(body, spec.name, spec.datatype, max_items)
        prepared = model.prepare(parsed)
        response = await _predict(state, model, prepared)
        return _answer(state, render_v1(response), response.degraded)

    async def feedback(request: web.Request) -> web.Response:
        model = _check_model(state, request)
        if not isinstance(model, SupportsFeedback):
            raise ClientError(404, f"name: model {model_name!r} does not accept feedback")
        body = await _read_body(request, max_body, body_timeout)
        parsed = parse_feedback(
            body,
            max_items,
            config.bandit.max_item_id_length,
            request.headers.get("Idempotency-Key"),
            request.headers.get(TICKET_HEADER),
        )
        result = await model.feedback(parsed)
        credited = read_ticket(parsed.ticket, model_name, time.time(), feedback_window)
        if not result.duplicate:
            n = len(parsed.items)
            if isinstance(credited, Unattributed):
                state.metrics.count_unattributed(credited.value, n)
            else:
                state.metrics.count_rewards(credited, n, float(parsed.rewards.sum()))
        answer: dict[str, object] = {"accepted": result.accepted, "duplicate": result.duplicate}
        if isinstance(credited, Unattributed):
            answer["unattributed"] = credited.value
        else:
            answer["revision"] = credited
        return _json(200, orjson.dumps(answer))

    async def metrics(request: web.Request) -> web.Response:
        state.metrics.flush()
        body = await asyncio.get_running_loop().run_in_executor(None, state.metrics.exposition)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    def method_not_allowed(allowed: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return _error(
                405,
                f"method: {request.method} is not allowed on {request.path} (use {allowed})",
                {"Allow": allowed},
            )

        return handler

    async def not_found(request: web.Request) -> web.Response:
        return _error(404, f"path: no endpoint {request.path}")

    routes: list[tuple[str, str, str, Handler, bool]] = [
        ("GET", "/v2/health/live", "live", live, False),
        ("GET", "/v2/health/ready", "ready", ready, False),
        ("GET", "/v2", "server_metadata", server_metadata, False),
        ("GET", "/v2/models/{name}", "model_metadata", model_metadata, False),
        ("GET", "/v2/models/{name}/versions/{version}", "model_metadata", model_metadata, False),
        ("GET", "/v2/models/{name}/ready", "model_ready", model_ready, False),
        ("GET", "/v2/models/{name}/versions/{version}/ready", "model_ready", model_ready, False),
        ("POST", "/v2/models/{name}/infer", "infer", infer, True),
        ("POST", "/v2/models/{name}/versions/{version}/infer", "infer", infer, True),
        ("GET", "/v1/models", "v1_models", v1_models, False),
        # ":verb" routes before "/v1/models/{name}", whose {name} would also match them.
        ("POST", "/v1/models/{name}:predict", "predict", predict, True),
        ("POST", "/v1/models/{name}:feedback", "feedback", feedback, True),
        ("GET", "/v1/models/{name}", "model_ready", model_ready, False),
        ("GET", "/metrics", "metrics", metrics, False),
        # KServe v1 server liveness (what kserve's InferenceRESTClient.is_server_live asks).
        ("GET", "/", "live", v1_live, False),
    ]
    router = app.router
    for method, path, endpoint, handler, inflight in routes:
        wrapped = _instrument(state, endpoint, handler, inflight)
        router.add_route(method, path, wrapped)
        if method == "GET":
            # aiohttp sends the headers of the GET answer and no body.
            router.add_route("HEAD", path, wrapped)
        allowed = "GET, HEAD" if method == "GET" else method
        router.add_route("*", path, _instrument(state, "other", method_not_allowed(allowed), False))
    router.add_route("*", "/{tail:.*}", _instrument(state, "other", not_found, False))


async def _lifecycle(app: web.Application) -> Any:
    """Build and load the model (in the background: liveness answers meanwhile), then close."""
    state = app[STATE]
    context = app[CONTEXT]
    config = state.config
    state.metrics.set_staleness_bound(config.feature_store.max_staleness)
    model = build_model(config, context)
    state.model = model
    if not config.batching.enabled and isinstance(model, SupportsRawInfer):
        state.raw = model
    if config.batching.enabled and isinstance(model, SupportsThreadedPredict):
        # The session runs in the model's thread while the loop gathers the next batch.
        state.batcher = ThreadedBatcher(
            model.predict_sync,
            model.executor,
            max_batch_size=config.batching.max_batch_size,
            max_delay=config.batching.max_delay,
            on_batch=state.metrics.batch_child.observe,
        )
    elif config.batching.enabled:
        state.batcher = DynamicBatcher(
            model.predict,
            max_batch_size=config.batching.max_batch_size,
            max_delay=config.batching.max_delay,
            on_batch=state.metrics.batch_child.observe,
        )

    async def load() -> None:
        try:
            await model.load()
        except ModelLoadError as exc:
            # A known cause with a message that names the field: no traceback.
            state.load_error = exc
            log.error("model %r failed to load: %s", config.model.name, exc)
            if state.on_fatal is not None:
                state.on_fatal(exc)
            return
        except Exception as exc:
            state.load_error = exc
            log.exception("model %r failed to load", config.model.name)
            if state.on_fatal is not None:
                state.on_fatal(exc)
            return
        log.info(
            "model loaded",
            extra={"model": config.model.name, "version": config.model.version},
        )

    async def flush_metrics() -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                state.metrics.flush()
            except Exception:
                log.exception("writing the per-request metrics failed; they stop here")
                return

    shadow = config.shadow
    if shadow.url and shadow.fraction > 0:
        state.shadow = Shadow(
            shadow.url,
            shadow.fraction,
            shadow.queue_size,
            shadow.concurrency,
            shadow.timeout,
            shadow.top_k,
            state.metrics,
        )
        await state.shadow.start()
    state.load_task = asyncio.create_task(load(), name="mlkube-model-load")
    flusher = asyncio.create_task(flush_metrics(), name="mlkube-metrics-flush")
    yield
    if state.batcher is not None:
        await state.batcher.close()
    if not state.load_task.done():
        state.load_task.cancel()
    await asyncio.gather(state.load_task, return_exceptions=True)
    await model.close()
    if state.shadow is not None:
        await state.shadow.stop()
    flusher.cancel()
    await asyncio.gather(flusher, return_exceptions=True)
    state.metrics.flush()  # the last requests' counts


def create_app(
    config: ServeConfig,
    context: RuntimeContext | None = None,
) -> web.Application:
    """The application for one worker; ``context`` carries test/embedding overrides."""
    if context is None:
        context = RuntimeContext(
            metrics=Metrics(config.model.name, config.model.version, config.revision)
        )
    state = ServerState(config=config, metrics=context.metrics)
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[STATE] = state
    app[CONTEXT] = context
    _routes(app, state)
    app.cleanup_ctx.append(_lifecycle)
    return app
