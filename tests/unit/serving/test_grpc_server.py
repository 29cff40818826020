"""The gRPC endpoint in process: one app (model, batcher, metrics) behind REST and gRPC.

The endpoint is tied to the app as ``mlkube serve``'s worker ties it (a cleanup context after
the model's), and a real grpc.aio channel talks to it over loopback.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mlkube.serving.app import STATE, ServerState, create_app
from mlkube.serving.context import RuntimeContext
from mlkube.serving.grpc import inference_pb2 as pb
from mlkube.serving.grpc import inference_pb2_grpc as pb_grpc
from mlkube.serving.grpc.server import GrpcEndpoint, bind_address
from mlkube.serving.metrics import Metrics
from mlkube.serving.protocol import tensor_from_raw

from .conftest import make_config

Input = pb.ModelInferRequest.InferInputTensor
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GATED = "tests.support.gated_model:GatedModel"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Harness:
    state: ServerState
    endpoint: GrpcEndpoint
    stub: Any
    health: Any
    server: TestServer

    def requests(self) -> str:
        self.state.metrics.flush()
        return self.state.metrics.exposition().decode()

    async def status(self, service: str = "") -> int:
        answer = await self.health.Check(health_pb2.HealthCheckRequest(service=service))
        return int(answer.status)


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    harnesses: list[tuple[Harness, grpc.aio.Channel]] = []

    async def factory(ready: bool = True, **sections: dict[str, Any]) -> Harness:
        sections.setdefault("server", {}).update(host="127.0.0.1", grpc_port=free_port())
        cfg = make_config(**sections)
        metrics = Metrics(cfg.model.name, cfg.model.version, cfg.revision)
        app = create_app(cfg, RuntimeContext(metrics=metrics))
        endpoint = GrpcEndpoint(app[STATE])
        app.cleanup_ctx.append(endpoint.lifecycle)
        server = TestServer(app)
        await server.start_server()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{cfg.server.grpc_port}")
        harness = Harness(
            app[STATE],
            endpoint,
            pb_grpc.GRPCInferenceServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
            server,
        )
        harnesses.append((harness, channel))
        if ready:
            for _ in range(500):
                if harness.state.ready and await harness.status() == SERVING:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("never ready")
        return harness

    yield factory
    for harness, channel in harnesses:
        await channel.close()
        await harness.server.close()


def infer_request(*items: str, **params: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name="bandit",
        inputs=[
            Input(
                name="items",
                datatype="BYTES",
                shape=[len(items)],
                contents=pb.InferTensorContents(bytes_contents=[i.encode() for i in items]),
            )
        ],
    )
    for key, value in params.items():
        if isinstance(value, int):
            request.parameters[key].int64_param = value
        else:
            request.parameters[key].string_param = value
    return request


def outputs(response: pb.ModelInferResponse) -> dict[str, Any]:
    return {
        o.name: tensor_from_raw(o.name, o.datatype, tuple(o.shape), raw, o.name).data
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


async def error_of(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def test_bind_address() -> None:
    assert bind_address("0.0.0.0", 8081) == "0.0.0.0:8081"
    assert bind_address("::", 8081) == "[::]:8081"


async def test_every_method_of_the_service(start: Start) -> None:
    h = await start()
    assert (await h.stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await h.stub.ServerReady(pb.ServerReadyRequest())).ready
    assert (await h.stub.ModelReady(pb.ModelReadyRequest(name="bandit"))).ready
    assert (await h.stub.ModelReady(pb.ModelReadyRequest(name="bandit", version="1"))).ready
    meta = await h.stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "mlkube"
    assert meta.version
    model = await h.stub.ModelMetadata(pb.ModelMetadataRequest(name="bandit"))
    assert (model.name, list(model.versions), model.platform) == ("bandit", ["1"], "mlkube-bandit")
    assert [t.name for t in model.inputs] == ["items", "segment", "top_k"]
    answer = await h.stub.ModelInfer(infer_request("a", "b", "c", top_k=2))
    assert (answer.model_name, answer.model_version) == ("bandit", "1")
    got = outputs(answer)
    assert sorted(got) == ["ranking", "scores"]
    assert len(got["ranking"]) == 2
    assert set(got["ranking"]) <= {"a", "b", "c"}
    assert got["scores"].dtype == np.float64
    assert len(got["scores"]) == 3
    assert await h.status() == SERVING
    assert await h.status("inference.GRPCInferenceService") == SERVING
    metrics = h.requests()
    for endpoint in ("grpc_live", "grpc_ready", "grpc_model_ready", "grpc_server_metadata"):
        assert f'code="200",endpoint="{endpoint}"' in metrics
    assert 'code="200",endpoint="grpc_infer",model="bandit",revision="",version="1"} 1.0' in metrics
    assert 'mlkube_items_scored_total{model="bandit",revision="",version="1"} 3.0' in metrics


async def test_infer_takes_inputs_parameters_and_outputs_like_rest(start: Start) -> None:
    h = await start()
    request = infer_request("a", "b", "c", segment="eu")
    request.id = "req-7"
    request.inputs.add(
        name="top_k", datatype="INT32", shape=[1], contents=pb.InferTensorContents(int_contents=[1])
    )
    request.outputs.add(name="ranking")
    answer = await h.stub.ModelInfer(request)
    assert answer.id == "req-7"
    assert [o.name for o in answer.outputs] == ["ranking"]
    assert len(outputs(answer)["ranking"]) == 1
    # the same request, every input raw (what tritonclient sends)
    raw = pb.ModelInferRequest(
        model_name="bandit",
        model_version="1",
        inputs=[Input(name="items", datatype="BYTES", shape=[2])],
        raw_input_contents=[b"\x01\x00\x00\x00a\x01\x00\x00\x00b"],
    )
    assert sorted(outputs(await h.stub.ModelInfer(raw))["ranking"]) == ["a", "b"]


async def test_client_errors_get_their_codes_and_rest_messages(start: Start) -> None:
    cases = [
        (pb.ModelInferRequest(model_name="nope"), grpc.StatusCode.NOT_FOUND, "name: model 'nope'"),
        (
            pb.ModelInferRequest(model_name="bandit", model_version="9"),
            grpc.StatusCode.NOT_FOUND,
            "version: model 'bandit' has no version '9'",
        ),
        (
            pb.ModelInferRequest(
                model_name="bandit", inputs=[Input(name="items", datatype="STRING", shape=[1])]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "inputs[0].datatype: expected one of BOOL",
        ),
        (
            pb.ModelInferRequest(
                model_name="bandit",
                inputs=[
                    Input(
                        name="items",
                        datatype="INT64",
                        shape=[1],
                        contents=pb.InferTensorContents(int64_contents=[1]),
                    )
                ],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "inputs[0].datatype: items must be BYTES, got INT64",
        ),
        (
            infer_request("a", top_k=0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "parameters.top_k: top_k must be a positive integer",
        ),
        (
            infer_request(*[f"i{n}" for n in range(11)]),
            grpc.StatusCode.INVALID_ARGUMENT,  # 422 in REST
            "inputs[0].shape: 11 elements exceed the limit of 10",
        ),
    ]
    request = infer_request("a")
    request.outputs.add(name="nope")
    cases.append(
        (
            request,
            grpc.StatusCode.INVALID_ARGUMENT,
            "outputs[0].name: no output 'nope' (outputs: scores, ranking)",
        )
    )
    h = await start(bandit={"max_items": 10})
    for message, code, details in cases:
        err = await error_of(h.stub.ModelInfer(message))
        assert err.code() == code, details
        assert err.details().startswith(details), err.details()
    err = await error_of(h.stub.ModelMetadata(pb.ModelMetadataRequest(name="nope")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await error_of(h.stub.ModelReady(pb.ModelReadyRequest(name="nope")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    metrics = h.requests()
    assert 'code="404",endpoint="grpc_infer"' in metrics
    assert 'code="400",endpoint="grpc_infer"' in metrics
    assert 'code="422",endpoint="grpc_infer"' in metrics
    assert 'code="500"' not in metrics


async def test_a_message_over_the_body_limit_is_refused(start: Start) -> None:
    h = await start(server={"max_body_bytes": 4096})
    err = await error_of(h.stub.ModelInfer(infer_request(*["x" * 100] * 50)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await h.stub.ModelInfer(infer_request("a"))).outputs


async def test_before_the_model_is_ready(start: Start, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    h = await start(
        ready=False,
        model={
            "name": "gated",
            "format": "custom",
            "class": GATED,
            "parameters": {"gate": str(gate)},
        },
    )
    assert (await h.stub.ServerLive(pb.ServerLiveRequest())).live
    assert not (await h.stub.ServerReady(pb.ServerReadyRequest())).ready
    assert not (await h.stub.ModelReady(pb.ModelReadyRequest(name="gated"))).ready
    assert await h.status() == NOT_SERVING
    assert await h.status("inference.GRPCInferenceService") == NOT_SERVING
    request = pb.ModelInferRequest(
        model_name="gated",
        inputs=[Input(name="x", datatype="FP64", shape=[1])],
        raw_input_contents=[np.array([1.5]).tobytes()],
    )
    err = await error_of(h.stub.ModelInfer(request))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert err.details() == "model 'gated' is not ready yet"
    trailers = dict(err.trailing_metadata() or ())
    assert trailers["retry-after"] == "1"
    assert trailers["grpc-retry-pushback-ms"] == "1000"
    # metadata does not wait for the model to load
    meta = await h.stub.ModelMetadata(pb.ModelMetadataRequest(name="gated"))
    assert [t.name for t in meta.outputs] == ["y"]

    gate.touch()
    for _ in range(200):
        if await h.status() == SERVING:
            break
        await asyncio.sleep(0.02)
    assert await h.status() == SERVING
    assert await h.status("inference.GRPCInferenceService") == SERVING
    answer = await h.stub.ModelInfer(request)
    assert outputs(answer)["y"].tolist() == [3.0]
    assert 'code="503",endpoint="grpc_infer"' in h.requests()


async def test_model_failures_are_internal_and_model_refusals_are_not(start: Start) -> None:
    h = await start(model={"name": "gated", "format": "custom", "class": GATED})

    def request(**params: int) -> pb.ModelInferRequest:
        message = pb.ModelInferRequest(
            model_name="gated",
            inputs=[
                Input(
                    name="x",
                    datatype="FP64",
                    shape=[2],
                    contents=pb.InferTensorContents(fp64_contents=[1, 2]),
                )
            ],
        )
        for key, value in params.items():
            message.parameters[key].bool_param = bool(value)
        return message

    assert outputs(await h.stub.ModelInfer(request()))["y"].tolist() == [2.0, 4.0]
    err = await error_of(h.stub.ModelInfer(request(fail=1)))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error (logged by the server)"
    err = await error_of(h.stub.ModelInfer(request(reject=1)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "parameters.reject: scripted rejection"
    metrics = h.requests()
    assert 'code="500",endpoint="grpc_infer",model="gated"' in metrics
    assert 'code="422",endpoint="grpc_infer",model="gated"' in metrics


async def test_drain_then_stop_lets_calls_in_flight_finish(start: Start) -> None:
    h = await start(model={"name": "gated", "format": "custom", "class": GATED})
    slow = pb.ModelInferRequest(
        model_name="gated",
        inputs=[
            Input(
                name="x",
                datatype="FP64",
                shape=[1],
                contents=pb.InferTensorContents(fp64_contents=[1]),
            )
        ],
    )
    slow.parameters["sleep_ms"].int64_param = 400
    in_flight = asyncio.ensure_future(h.stub.ModelInfer(slow))
    await asyncio.sleep(0.1)
    h.state.draining = True  # SIGTERM: what serve_worker's signal handler does
    await h.endpoint.drain()
    assert await h.status() == NOT_SERVING
    assert await h.status("inference.GRPCInferenceService") == NOT_SERVING
    assert not (await h.stub.ModelReady(pb.ModelReadyRequest(name="gated"))).ready
    assert not (await h.stub.ServerReady(pb.ServerReadyRequest())).ready
    await asyncio.sleep(0.3)  # readiness polling must not turn it back to SERVING
    assert await h.status() == NOT_SERVING
    h.endpoint.begin_stop()
    answer = await in_flight
    assert outputs(answer)["y"].tolist() == [2.0]
    await h.endpoint.stop()
    err = await error_of(h.stub.ServerLive(pb.ServerLiveRequest(), timeout=2))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_port_in_use_fails_the_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = make_config(server={"host": "127.0.0.1", "grpc_port": port})
        app = create_app(cfg, RuntimeContext(metrics=Metrics("bandit", "1", "")))
        endpoint = GrpcEndpoint(app[STATE])
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            await endpoint.start()


async def test_sampled_access_log_names_the_method(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    h = await start(server={"access_log_sample_rate": 1.0})
    with caplog.at_level("INFO", logger="mlkube.serving.access"):
        await h.stub.ModelInfer(infer_request("a"))
        await error_of(h.stub.ModelInfer(pb.ModelInferRequest(model_name="nope")))
    entries = [(r.path, r.status) for r in caplog.records if r.name == "mlkube.serving.access"]  # type: ignore[attr-defined]
    assert entries == [
        ("/inference.GRPCInferenceService/ModelInfer", 200),
        ("/inference.GRPCInferenceService/ModelInfer", 404),
    ]


async def test_plain_raw_requests_take_the_c_path_with_the_python_paths_answer(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tritonclient.grpc's default request (every input raw) is answered by the bandit's C
    request path, with the very message the Python path gives for the same draws; anything
    else (typed contents, requested outputs) still takes the Python path."""
    from mlkube.serving.grpc import server as grpc_server

    decoded: list[str] = []
    real = grpc_server.decode_infer_request
    monkeypatch.setattr(
        grpc_server,
        "decode_infer_request",
        lambda *a, **k: decoded.append("python") or real(*a, **k),
    )
    items = b"".join(len(i).to_bytes(4, "little") + i for i in (b"a", b"b", b"c"))
    request = pb.ModelInferRequest(
        model_name="bandit",
        id="r9",
        inputs=[
            Input(name="items", datatype="BYTES", shape=[3]),
            Input(name="top_k", datatype="INT32", shape=[1]),
        ],
        raw_input_contents=[items, (2).to_bytes(4, "little")],
    )
    request.parameters["segment"].string_param = "default"  # known: read before ready
    answers = []
    for native in (True, False):
        h = await start(bandit={"native_path": native}, revision="rev-a")
        answers.append(await h.stub.ModelInfer(request))
    assert decoded == ["python"]  # only the app with the C path off decoded it in Python
    assert answers[0] == answers[1]
    assert answers[0].id == "r9"
    # Both paths carry the revision and the feedback ticket as response parameters.
    params = answers[0].parameters
    assert params["mlkube_revision"].string_param == "rev-a"
    assert params["mlkube_ticket"].string_param.startswith("rev-a.")
    assert [o.name for o in answers[0].outputs] == ["scores", "ranking"]
    assert len(outputs(answers[0])["ranking"]) == 2
    # Typed contents and requested outputs: the Python path.
    h = await start()
    await h.stub.ModelInfer(infer_request("a", "b"))
    request.outputs.add(name="ranking")
    await h.stub.ModelInfer(request)
    assert decoded == ["python"] * 3
