"""The official inference clients against a real `mlkube serve` running an ONNX model.

The MLP of tests/support/onnx_models.py (FP32 [batch, 4] -> [batch, 3]) in one worker with
dynamic batching on, so that each client's requests go through the merge-and-split path:
tritonclient.http (with its binary defaults) and KServe's REST client (v2 and v1
``instances``), and an error for a wrong datatype, which names the tensor. (gRPC against an
ONNX model: tests/unit/serving/test_onnx.py, over a real channel; tritonclient.grpc and
kserve register the same protobuf names and cannot share this process.)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.support import onnx_models

pytestmark = pytest.mark.slow

X = (np.arange(8, dtype=np.float32).reshape(2, 4) - 3) / 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.integration.serving.conftest import REPO, Serve, free_port

    directory = tmp_path_factory.mktemp("clients-onnx")
    model = onnx_models.mlp(directory / "mlp.onnx")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(REPO),
        "MLKUBE_BATCHING": "true",
        "MLKUBE_BATCH_MAX_DELAY": "0.005",
    }
    port = free_port()
    grpc_port = next(p for p in iter(free_port, None) if p != port)
    args = ["--workers", "1", "--model-format", "onnx", "--model-path", str(model)]
    server = Serve(port, grpc_port, env, [*args, "--model-name", "mlp"], directory / "serve.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def test_triton_http(server: Any) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    meta = client.get_model_metadata("mlp")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    x = httpclient.InferInput("x", [2, 4], "FP32")
    x.set_data_from_numpy(X)  # binary data, binary outputs: the client's defaults
    result = client.infer("mlp", [x])
    np.testing.assert_allclose(result.as_numpy("y"), onnx_models.mlp_reference(X), rtol=1e-5)
    bad = httpclient.InferInput("x", [2, 4], "FP64")
    bad.set_data_from_numpy(X.astype(np.float64))
    with pytest.raises(InferenceServerException) as info:
        client.infer("mlp", [bad])
    assert info.value.status() == "400"
    assert "inputs[0].datatype: input 'x' is FP32, got FP64" in info.value.message()
    client.close()


async def test_kserve_rest_v2_and_v1(server: Any) -> None:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
    v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
    try:

        async def one(i: int) -> Any:
            x = InferInput("x", [1, 4], "FP32")
            x.set_data_from_numpy(X[i % 2 : i % 2 + 1], binary_data=bool(i % 2))
            return await v2.infer(server.base, InferRequest("mlp", [x]), model_name="mlp")

        # Concurrent requests: merged into batches by the server, each answered its own row.
        answers = await asyncio.gather(*(one(i) for i in range(8)))
        reference = onnx_models.mlp_reference(X)
        for i, answer in enumerate(answers):
            np.testing.assert_allclose(
                answer.outputs[0].as_numpy().reshape(1, 3), reference[i % 2 : i % 2 + 1], rtol=1e-5
            )
        predicted = await v1.infer(server.base, {"instances": X.tolist()}, model_name="mlp")
        np.testing.assert_allclose(predicted["predictions"], reference, rtol=1e-5)
    finally:
        await v2.close()
        await v1.close()
    _, metrics = server.get("/metrics")
    assert b'mlkube_model_execution_provider{model="mlp",provider="CPUExecutionProvider"' in metrics
