"""ONNX models (format onnx): the pure decisions, and real onnxruntime sessions of models
built by the tests (tests/support/onnx_models.py) served by the in-process app, over REST
(JSON, binary tensors, KServe v1) and gRPC."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mlkube.serving.app import STATE, create_app
from mlkube.serving.config import ConfigError, OnnxConfig, ServeConfig, load_config
from mlkube.serving.context import RuntimeContext
from mlkube.serving.cpulimit import CpuBudget
from mlkube.serving.grpc import inference_pb2 as pb
from mlkube.serving.grpc import inference_pb2_grpc as pb_grpc
from mlkube.serving.grpc.server import GrpcEndpoint
from mlkube.serving.metrics import Metrics
from mlkube.serving.model import ModelLoadError, ModelSettings, TensorSpec
from mlkube.serving.onnxrt import (
    CPU,
    CUDA,
    OnnxModel,
    batchable,
    check_model_file,
    choose_providers,
    datatype_of,
    dims,
    gpu_visible,
    intra_op_threads,
    merge_groups,
    numpy_datatype,
    prepare_request,
    shape_problem,
)
from mlkube.serving.protocol import (
    BINARY_HEADER,
    DATATYPES,
    ClientError,
    numeric_array,
    parse_v1_predict,
    parse_v2_infer,
    tensor_from_raw,
)
from tests.support import onnx_models

from .conftest import wait_ready

# ------------------------------------------------------------------------------ pure parts


def test_dynamic_dimensions_are_minus_one() -> None:
    assert dims(["batch", 4]) == (-1, 4)
    assert dims([None, 3, "seq"]) == (-1, 3, -1)
    assert dims([]) == ()


def test_element_types_map_to_oip_datatypes_and_others_are_refused() -> None:
    assert datatype_of("tensor(float)", "input 'x'") == "FP32"
    assert datatype_of("tensor(string)", "output 'y'") == "BYTES"
    with pytest.raises(ModelLoadError, match=r"output 'probs' is seq\(map"):
        datatype_of("seq(map(int64,tensor(float)))", "output 'probs'")


def test_shape_checks_name_the_dimension() -> None:
    assert shape_problem((5, 4), (-1, 4)) is None
    assert "dimension 1" in (shape_problem((5, 3), (-1, 4)) or "")
    assert "has 3 dimensions, the model's [-1, 4] has 2" in (
        shape_problem((4, 1, 1), (-1, 4)) or ""
    )


def test_batchable_only_when_every_tensor_starts_dynamic() -> None:
    x = TensorSpec("x", "FP32", (-1, 4))
    assert batchable([x], [TensorSpec("y", "FP32", (-1, 3))])
    assert not batchable([x], [TensorSpec("y", "FP32", (1, 3))])
    assert not batchable([TensorSpec("x", "FP32", ())], [])


def test_threads_share_the_cpu_limit_between_workers() -> None:
    assert intra_op_threads(CpuBudget(cores=16, limit=4.0), workers=1) == 4
    assert intra_op_threads(CpuBudget(cores=16, limit=4.0), workers=2) == 2
    assert intra_op_threads(CpuBudget(cores=16, limit=1.5), workers=4) == 1
    assert intra_op_threads(CpuBudget(cores=8, limit=None), workers=2) == 4
    assert intra_op_threads(CpuBudget(cores=2, limit=8.0), workers=1) == 2


def test_provider_choice() -> None:
    cpu_only = ["AzureExecutionProvider", CPU]
    gpu_build = [CUDA, CPU]
    assert choose_providers("auto", cpu_only, has_gpu=True) == ([CPU], None)
    assert choose_providers("auto", gpu_build, has_gpu=False) == ([CPU], None)
    assert choose_providers("auto", gpu_build, has_gpu=True) == ([CUDA, CPU], None)
    assert choose_providers("cuda", gpu_build, has_gpu=False) == ([CUDA, CPU], None)
    assert choose_providers("cpu", gpu_build, has_gpu=True) == ([CPU], None)
    providers, warning = choose_providers("cuda", cpu_only, has_gpu=True)
    assert providers == [CPU]
    assert warning is not None
    assert "onnxruntime-gpu" in warning


def test_gpu_visibility_from_the_device_plugin_variable() -> None:
    assert gpu_visible({"NVIDIA_VISIBLE_DEVICES": "GPU-1234"})
    assert not gpu_visible({})
    assert not gpu_visible({"NVIDIA_VISIBLE_DEVICES": "void"})


def test_model_file_checks(tmp_path: Path) -> None:
    assert check_model_file(str(tmp_path / "none.onnx")) == f"{tmp_path}/none.onnx: no such file"
    assert "not a file" in (check_model_file(str(tmp_path)) or "")
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert check_model_file(str(tmp_path / "m.onnx")) is None


def test_config_needs_a_path_for_onnx_and_reads_the_session_options() -> None:
    with pytest.raises(ConfigError, match=r"model.path .* is required"):
        load_config({"model": {"format": "onnx"}}, {})
    cfg = load_config(
        {},
        {
            "MLKUBE_MODEL_FORMAT": "onnx",
            "MLKUBE_MODEL_PATH": "/models/m.onnx",
            "MLKUBE_ONNX_GRAPH_OPTIMIZATION": "basic",
            "MLKUBE_ONNX_INTRA_OP_THREADS": "3",
            "MLKUBE_ONNX_PROVIDER": "cuda",
        },
    )
    assert cfg.model.path == "/models/m.onnx"
    assert cfg.onnx == OnnxConfig(intra_op_threads=3, graph_optimization="basic", provider="cuda")
    with pytest.raises(ConfigError, match="MLKUBE_ONNX_GRAPH_OPTIMIZATION"):
        load_config({}, {"MLKUBE_ONNX_GRAPH_OPTIMIZATION": "max"})


MLP_INPUTS = (TensorSpec("x", "FP32", (-1, 4)),)


def _v2(*tensors: dict[str, Any]) -> bytes:
    return orjson.dumps({"inputs": list(tensors)})


def test_prepare_names_the_tensor_of_every_mismatch() -> None:
    def problem(body: bytes) -> str:
        with pytest.raises(ClientError) as info:
            prepare_request(parse_v2_infer(body, 1 << 20), MLP_INPUTS, True)
        assert info.value.status == 400
        return info.value.message

    x = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
    assert problem(_v2({**x, "datatype": "INT64"})) == (
        "inputs[0].datatype: input 'x' is FP32, got INT64"
    )
    assert problem(_v2({**x, "shape": [2, 2]})).startswith(
        "inputs[0].shape: input 'x': [2, 2] does not fit the model's [-1, 4]"
    )
    assert problem(_v2(x, {"name": "z", "datatype": "FP32", "shape": [1], "data": [1]})) == (
        "inputs[1].name: the model has no input 'z' (inputs: x)"
    )
    assert problem(_v2({**x, "name": "w"})).startswith("inputs[0].name: the model has no input")
    prepared = prepare_request(parse_v2_infer(_v2(x), 1 << 20), MLP_INPUTS, True)
    assert prepared.rows == 1
    assert prepared.signature == ((4,),)
    assert prepared.feeds["x"].dtype == np.float32


def test_numeric_data_decode_to_the_declared_type_and_shape() -> None:
    f32 = np.dtype(np.float32)
    got = numeric_array([1, 2.5, True, "4"], f32, (2, 2), "inputs[0].data", "FP32")
    assert got.dtype == np.float32
    assert got.shape == (2, 2)
    assert got.tolist() == [[1.0, 2.5], [1.0, 4.0]]
    # Nested lists and arrays (other models' tensors) convert as np.asarray does.
    nested = numeric_array([[1, 2], [3, 4]], f32, (4,), "w", "FP32")
    assert nested.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert numeric_array(np.arange(4), f32, (2, 2), "w", "FP32").dtype == np.float32
    assert numeric_array([], f32, (0, 3), "w", "FP32").shape == (0, 3)
    for data, datatype, why in [
        ([1.0, "abc"], "FP32", "could not convert string to float: 'abc'"),
        ([1, 300], "UINT8", "out of bounds for uint8"),
        ([1, [2, 3]], "INT64", "sequence"),
        ([{"a": 1}], "FP64", "dict"),
    ]:
        dtype = DATATYPES[datatype]
        assert dtype is not None
        with pytest.raises(ClientError) as info:
            numeric_array(data, dtype, (len(data),), "inputs[2].data", datatype)
        assert info.value.status == 400
        assert info.value.message.startswith(f"inputs[2].data: not valid {datatype} values (")
        assert why in info.value.message


def test_a_request_with_non_numbers_is_a_400_naming_the_tensor() -> None:
    x = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, "three", 4]}
    with pytest.raises(ClientError) as info:
        prepare_request(parse_v2_infer(_v2(x), 1 << 20), MLP_INPUTS, True)
    assert info.value.status == 400
    assert info.value.message.startswith("inputs[0].data: not valid FP32 values (")


def test_output_arrays_carry_their_oip_datatype() -> None:
    for name, dtype in DATATYPES.items():
        if dtype is not None:
            assert numpy_datatype(np.zeros(2, dtype=dtype)) == name
    assert numpy_datatype(np.array(["a", "b"], dtype=object)) == "BYTES"
    assert numpy_datatype(np.array(["a", "b"])) == "BYTES"
    with pytest.raises(TypeError, match="complex128"):
        numpy_datatype(np.zeros(2, dtype=np.complex128))


def test_v1_instances_are_rows_checked_against_the_first_input() -> None:
    ok = parse_v1_predict(b'{"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}', "x", "FP32", 100)
    assert prepare_request(ok, MLP_INPUTS, True).feeds["x"].shape == (2, 4)
    for body, message in [
        (b'{"instances": [[1, 2, 3], [5, 6, 7]]}', "instances.shape: input 'x': [2, 3]"),
        (b'{"instances": [[1, 2, 3, 4], [5]]}', "instances: not FP32 rows of one shape"),
    ]:
        with pytest.raises(ClientError, match=message.replace("[", r"\[")):
            prepare_request(parse_v1_predict(body, "x", "FP32", 100), MLP_INPUTS, True)


def test_requests_merge_only_with_equal_non_batch_dimensions() -> None:
    inputs = (TensorSpec("x", "FP32", (-1, -1)),)

    def item(rows: int, width: int) -> Any:
        x = {"name": "x", "datatype": "FP32", "shape": [rows, width], "data": [0] * rows * width}
        return prepare_request(parse_v2_infer(_v2(x), 1 << 20), inputs, True)

    assert merge_groups([item(1, 4), item(2, 3), item(3, 4), item(1, 3)]) == [[0, 2], [1, 3]]


# ---------------------------------------------------------------- real sessions, in process


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("onnx")
    return {
        "mlp": str(onnx_models.mlp(d / "mlp.onnx")),
        "two": str(onnx_models.two_inputs(d / "two.onnx")),
        "labels": str(onnx_models.labeller(d / "labels.onnx")),
        "lookup": str(onnx_models.lookup(d / "lookup.onnx")),
        "fixed": str(onnx_models.fixed_batch(d / "fixed.onnx")),
    }


def onnx_config(path: str, name: str = "m", **sections: dict[str, Any]) -> ServeConfig:
    data: dict[str, Any] = {"model": {"name": name, "format": "onnx", "path": path}}
    data["server"] = {"host": "127.0.0.1", "grpc_port": 0}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return load_config(data, {})


Start = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    clients: list[TestClient[Any, Any]] = []

    async def factory(cfg: ServeConfig, ready: bool = True) -> TestClient[Any, Any]:
        metrics = Metrics(cfg.model.name, cfg.model.version, cfg.revision)
        client: TestClient[Any, Any] = TestClient(
            TestServer(create_app(cfg, RuntimeContext(metrics=metrics)))
        )
        await client.start_server()
        clients.append(client)
        if ready:
            await wait_ready(client)
        return client

    yield factory
    for client in clients:
        await client.close()


async def infer(client: TestClient[Any, Any], *tensors: dict[str, Any], **extra: Any) -> Any:
    resp = await client.post("/v2/models/m/infer", data=orjson.dumps({"inputs": tensors, **extra}))
    return resp.status, await resp.json()


async def test_metadata_comes_from_the_model(start: Start, models: dict[str, str]) -> None:
    client = await start(onnx_config(models["two"]))
    meta = await (await client.get("/v2/models/m")).json()
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "b", "datatype": "INT64", "shape": [-1, 3]},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["sum", "scaled"]
    assert meta["parameters"]["execution_provider"] == "CPUExecutionProvider"
    assert meta["parameters"]["batch_dimension"] is True
    metrics = await (await client.get("/metrics")).text()
    assert 'mlkube_model_execution_provider{model="m",provider="CPUExecutionProvider"' in metrics


async def test_mlp_answers_what_numpy_computes(start: Start, models: dict[str, str]) -> None:
    client = await start(onnx_config(models["mlp"]))
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    status, body = await infer(
        client, {"name": "x", "datatype": "FP32", "shape": [3, 4], "data": x.tolist()}, id="r1"
    )
    assert status == 200, body
    (y,) = body["outputs"]
    assert (y["name"], y["datatype"], y["shape"], body["id"]) == ("y", "FP32", [3, 3], "r1")
    np.testing.assert_allclose(
        np.array(y["data"]).reshape(3, 3), onnx_models.mlp_reference(x), rtol=1e-5
    )
    # KServe v1: a row of predictions per instance
    resp = await client.post("/v1/models/m:predict", data=orjson.dumps({"instances": x.tolist()}))
    predictions = (await resp.json())["predictions"]
    np.testing.assert_allclose(predictions, onnx_models.mlp_reference(x), rtol=1e-5)


async def test_binary_tensors_in_and_out(start: Start, models: dict[str, str]) -> None:
    client = await start(onnx_config(models["mlp"]))
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    head = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 4],
                 "parameters": {"binary_data_size": x.nbytes}}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )  # fmt: skip
    resp = await client.post(
        "/v2/models/m/infer",
        data=head + x.tobytes(),
        headers={BINARY_HEADER: str(len(head)), "Content-Type": "application/octet-stream"},
    )
    assert resp.status == 200
    body = await resp.read()
    length = int(resp.headers[BINARY_HEADER])
    (out,) = orjson.loads(body[:length])["outputs"]
    y = tensor_from_raw("y", "FP32", tuple(out["shape"]), body[length:], "y").data
    np.testing.assert_allclose(y.reshape(2, 3), onnx_models.mlp_reference(x), rtol=1e-5)


async def test_two_inputs_and_the_outputs_asked_for(start: Start, models: dict[str, str]) -> None:
    client = await start(onnx_config(models["two"]))
    a = {"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1.5, 2, 3]}
    b = {"name": "b", "datatype": "INT64", "shape": [1, 3], "data": [1, 1, 1]}
    status, body = await infer(client, a, b, outputs=[{"name": "scaled"}])
    assert status == 200
    assert [(o["name"], o["data"]) for o in body["outputs"]] == [("scaled", [3.0, 4.0, 6.0])]
    status, body = await infer(client, a)
    assert (status, body["error"]) == (400, "inputs: missing 'b' (the model needs a, b)")
    status, body = await infer(client, a, {**b, "datatype": "FP32"})
    assert (status, body["error"]) == (400, "inputs[1].datatype: input 'b' is INT64, got FP32")
    status, body = await infer(client, a, {**b, "shape": [3, 1]})
    assert status == 400
    assert body["error"].startswith("inputs[1].shape: input 'b': [3, 1]")


async def test_string_outputs(start: Start, models: dict[str, str]) -> None:
    client = await start(onnx_config(models["labels"]))
    x = {"name": "x", "datatype": "FP32", "shape": [3, 3], "data": [0, 1, 0, 5, 1, 0, 0, 0, 9]}
    status, body = await infer(client, x)
    assert status == 200
    assert body["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [3], "data": ["dog", "cat", "bird"]}
    ]
    resp = await client.post("/v1/models/m:predict", data=b'{"instances": [[0, 0, 1]]}')
    assert await resp.json() == {"predictions": ["bird"]}


async def test_a_file_that_is_not_a_model_fails_the_load(start: Start, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    client = await start(onnx_config(str(bad)), ready=False)
    state = client.server.app[STATE]
    assert state.load_task is not None
    await state.load_task
    assert isinstance(state.load_error, ModelLoadError)
    assert str(state.load_error).startswith(f"model.path: {bad}: not a loadable ONNX model")
    resp = await client.post("/v2/models/m/infer", data=b"{}")
    assert resp.status == 503


async def test_grpc_infer_and_invalid_argument(start: Start, models: dict[str, str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = onnx_config(models["mlp"], server={"grpc_port": port})
    metrics = Metrics("m", "1", "")
    app = create_app(cfg, RuntimeContext(metrics=metrics))
    endpoint = GrpcEndpoint(app[STATE])
    app.cleanup_ctx.append(endpoint.lifecycle)
    server = TestServer(app)
    await server.start_server()
    try:
        for _ in range(500):
            if app[STATE].ready:
                break
            await asyncio.sleep(0.01)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            x = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
            tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 4])
            answer = await stub.ModelInfer(
                pb.ModelInferRequest(
                    model_name="m", inputs=[tensor], raw_input_contents=[x.tobytes()]
                )
            )
            y = np.frombuffer(answer.raw_output_contents[0], dtype="<f4").reshape(1, 3)
            np.testing.assert_allclose(y, onnx_models.mlp_reference(x), rtol=1e-5)
            meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="m"))
            assert list(meta.inputs[0].shape) == [-1, 4]
            wrong = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP64", shape=[1, 4])
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(
                    pb.ModelInferRequest(
                        model_name="m",
                        inputs=[wrong],
                        raw_input_contents=[x.astype(np.float64).tobytes()],
                    )
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == "inputs[0].datatype: input 'x' is FP32, got FP64"
    finally:
        await server.close()


# ---------------------------------------------------------------------------- batching


async def _model(path: str) -> OnnxModel:
    model = OnnxModel(ModelSettings("m", "1"), path, OnnxConfig(), threads=1)
    await model.load()
    return model


def _request(rows: int, start: float = 0.0) -> Any:
    x = (np.arange(rows * 4, dtype=np.float32) + start).reshape(rows, 4)
    body = _v2({"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": x.ravel().tolist()})
    return parse_v2_infer(body, 1 << 20), x


async def test_merged_requests_are_split_back_by_rows(models: dict[str, str]) -> None:
    model = await _model(models["mlp"])
    runs: list[int] = []
    real_run = model._run

    def counting(feeds: dict[str, Any]) -> Any:
        runs.append(len(feeds["x"]))
        return real_run(feeds)

    model._run = counting  # type: ignore[method-assign]
    try:
        requests = [_request(rows, start=10 * i) for i, rows in enumerate((1, 3, 2))]
        answers = await model.predict([model.prepare(r) for r, _ in requests])
        assert runs == [6]  # one run for the three requests
        for (_, x), answer in zip(requests, answers, strict=True):
            assert not isinstance(answer, Exception)
            (y,) = answer.outputs
            assert y.shape == (len(x), 3)
            np.testing.assert_allclose(
                y.data.reshape(-1, 3), onnx_models.mlp_reference(x), rtol=1e-5
            )
    finally:
        await model.close()


async def test_one_failing_request_fails_alone(models: dict[str, str]) -> None:
    """Index 7 passes every check and fails in onnxruntime: the merged run fails, each
    request runs alone, and only the bad one gets an error (a 400 naming the inputs)."""
    model = await _model(models["lookup"])
    try:

        def req(*indices: int) -> Any:
            body = _v2(
                {"name": "i", "datatype": "INT64", "shape": [len(indices)], "data": list(indices)}
            )
            return model.prepare(parse_v2_infer(body, 100))

        answers = await model.predict([req(0), req(7, 1), req(2, 1)])
        assert not isinstance(answers[0], Exception)
        assert answers[0].outputs[0].data.tolist() == [0.0, 1.0]
        assert isinstance(answers[1], ClientError)
        assert answers[1].status == 400
        assert answers[1].message.startswith("inputs: the model cannot run on them")
        assert not isinstance(answers[2], Exception)
        assert answers[2].outputs[0].data.tolist() == [4.0, 5.0, 2.0, 3.0]
    finally:
        await model.close()


async def test_a_fixed_batch_model_runs_each_request_alone(models: dict[str, str]) -> None:
    model = await _model(models["fixed"])
    try:
        assert model.metadata().parameters["batch_dimension"] is False
        body = _v2({"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]})
        answers = await model.predict([model.prepare(parse_v2_infer(body, 100))] * 3)
        assert all(
            not isinstance(a, Exception) and a.outputs[0].data.tolist() == [1, 2] for a in answers
        )
    finally:
        await model.close()


async def test_batching_through_the_app(start: Start, models: dict[str, str]) -> None:
    """Requests that come while the model is busy go as merged batches when it is free,
    without waiting out max_delay; a bad one among them is answered 400 alone."""
    cfg = onnx_config(
        models["lookup"], batching={"enabled": True, "max_batch_size": 6, "max_delay": 0.5}
    )
    client = await start(cfg)

    def body(*indices: int) -> bytes:
        return _v2(
            {"name": "i", "datatype": "INT64", "shape": [len(indices)], "data": list(indices)}
        )

    bodies = [body(0), body(1), body(9), body(2), body(0, 2), body(1)]
    model = client.server.app[STATE].model
    assert model is not None
    busy = threading.Event()
    model.executor.submit(busy.wait, 5.0)  # the session's thread is taken for now
    t0 = asyncio.get_running_loop().time()
    sent = asyncio.gather(*(client.post("/v2/models/m/infer", data=b) for b in bodies))
    await asyncio.sleep(0.2)
    busy.set()
    responses = await sent
    assert asyncio.get_running_loop().time() - t0 < 0.45  # nobody waited for max_delay
    answers = [(r.status, await r.json()) for r in responses]
    assert [s for s, _ in answers] == [200, 200, 400, 200, 200, 200]
    assert answers[2][1]["error"].startswith("inputs: the model cannot run on them")
    assert answers[4][1]["outputs"][0]["data"] == [0.0, 1.0, 4.0, 5.0]
    metrics = await (await client.get("/metrics")).text()
    counts = re.findall(r'mlkube_batch_size_count\{model="m",revision=""\} ([0-9.]+)', metrics)
    # Two batches go to the busy session's queue, the rest accumulate and go as one.
    assert counts
    assert 1 <= float(counts[0]) <= 3
    assert 'mlkube_batch_size_sum{model="m",revision=""} 6.0' in metrics


# -------------------------------------------------------------------------------- CUDA


def _cuda_missing() -> str | None:
    """Why the CUDA provider cannot be tested on this machine (None: it can)."""
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider here (onnxruntime-gpu is not installed)"
    if not Path("/dev/nvidia0").exists():
        return "no NVIDIA GPU on this machine (/dev/nvidia0 is absent)"
    return None


@pytest.mark.skipif(_cuda_missing() is not None, reason=_cuda_missing() or "")
async def test_cuda_runs_the_mlp_and_is_reported(models: dict[str, str]) -> None:
    metrics = Metrics("m", "1", "")
    model = OnnxModel(
        ModelSettings("m", "1"), models["mlp"], OnnxConfig(provider="cuda"), 1, metrics
    )
    await model.load()
    try:
        assert model.metadata().parameters["execution_provider"] == CUDA
        requests = [_request(rows, start=i) for i, rows in enumerate((1, 4))]
        answers = await model.predict([model.prepare(r) for r, _ in requests])
        for (_, x), answer in zip(requests, answers, strict=True):
            assert not isinstance(answer, Exception)
            np.testing.assert_allclose(
                answer.outputs[0].data.reshape(-1, 3), onnx_models.mlp_reference(x), rtol=1e-4
            )
        assert f'provider="{CUDA}"' in metrics.exposition().decode()
    finally:
        await model.close()


def test_serve_refuses_a_missing_model_file_before_any_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlkube.serving.cli import main

    missing = tmp_path / "m.onnx"
    assert main(["--model-format", "onnx", "--model-path", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == (f"mlkube serve: model.path: {missing}: no such file")
    assert main(["--model-format", "onnx"]) == 2
    assert "model.path (the .onnx file) or model.storage_uri is required" in (
        capsys.readouterr().err
    )


def test_a_fetched_directory_stands_for_its_onnx_file(tmp_path: Path) -> None:
    from mlkube.serving.onnxrt import onnx_file

    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "mlp.onnx").write_bytes(b"x")
    (lone / "README").write_text("about the model")
    assert onnx_file(str(lone)) == str(lone / "mlp.onnx")
    assert onnx_file(str(lone / "mlp.onnx")) == str(lone / "mlp.onnx")
    two = tmp_path / "two"
    two.mkdir()
    for name in ("model.onnx", "b.onnx"):
        (two / name).write_bytes(b"x")
    # ambiguous: the directory itself, which check_model_file refuses by name
    assert onnx_file(str(two)) == str(two)
    assert check_model_file(str(two)) == f"{two}: not a file"


def test_serve_refuses_a_storage_directory_without_one_onnx_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlkube.serving.cli import main

    two = tmp_path / "models"
    two.mkdir()
    for name in ("a.onnx", "b.onnx"):
        onnx_models.mlp(two / name)
    assert main(["--model-format", "onnx", "--storage-uri", str(two)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mlkube serve: model.storage_uri: NotAModel: {two} is a directory with 2 .onnx "
        "files; name the model file itself"
    )


def test_string_inputs_take_text_and_refuse_other_bytes() -> None:
    inputs = (TensorSpec("s", "BYTES", (-1,)),)
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": 10},
                }
            ]
        }
    )
    text = b"\x01\x00\x00\x00a" + b"\x01\x00\x00\x00b"
    ok = prepare_request(parse_v2_infer(head + text, 100, str(len(head))), inputs, True)
    assert ok.feeds["s"].tolist() == ["a", "b"]
    latin = b"\x01\x00\x00\x00a" + b"\x01\x00\x00\x00\xe9"
    with pytest.raises(ClientError, match=r"inputs\[0\].data: an ONNX string input takes UTF-8"):
        prepare_request(parse_v2_infer(head + latin, 100, str(len(head))), inputs, True)
