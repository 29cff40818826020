"""The official inference clients against the real `mlkube serve`, with their defaults.

A user who already has Triton's or KServe's client code should be able to point it at mlkube
and change nothing: health, metadata, inference (JSON and binary tensors, which are both
clients' defaults) and errors. The gRPC clients are in test_clients_grpc.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ITEMS = np.array([b"apple", b"pear", "fig\u00e9".encode()], dtype=np.object_)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One server for the module: these tests only read (feedback is never sent)."""
    from tests.integration.serving.conftest import REPO, Serve, free_port

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "MLKUBE_LOG_FORMAT": "json",
        "PYTHONPATH": str(REPO),
    }
    log = tmp_path_factory.mktemp("clients-http") / "serve.log"
    port = free_port()
    grpc_port = next(p for p in iter(free_port, None) if p != port)
    server = Serve(port, grpc_port, env, ["--workers", "1"], log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


# --- tritonclient.http -------------------------------------------------------------------------


def _triton(server: Any) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")


def test_triton_http_health_and_metadata(server: Any) -> None:
    client = _triton(server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("bandit")
    assert client.is_model_ready("bandit", "1")
    meta = client.get_server_metadata()
    assert meta["name"] == "mlkube"
    assert "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("bandit")
    assert model["versions"] == ["1"]
    assert {i["name"]: i["datatype"] for i in model["inputs"]}["items"] == "BYTES"
    assert {o["name"] for o in model["outputs"]} == {"ranking", "scores"}
    client.close()


def test_triton_http_infer_with_the_clients_defaults(server: Any) -> None:
    """InferInput.set_data_from_numpy defaults to binary data and infer() without outputs
    asks for binary outputs: the combination that used to fail with 'malformed JSON'."""
    import tritonclient.http as httpclient

    client = _triton(server)
    items = httpclient.InferInput("items", [3], "BYTES")
    items.set_data_from_numpy(ITEMS)
    top_k = httpclient.InferInput("top_k", [1], "INT32")
    top_k.set_data_from_numpy(np.array([2], dtype=np.int32))
    result = client.infer("bandit", [items, top_k], request_id="req-7")
    assert result.get_response()["id"] == "req-7"
    ranking = result.as_numpy("ranking")
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float64
    assert scores.shape == (3,)
    assert ranking.shape == (2,)
    # The ranking is the top two ids by their scores.
    expected = [ITEMS[i] for i in np.argsort(-scores, kind="stable")[:2]]
    assert list(ranking) == expected
    client.close()


def test_triton_http_json_inputs_and_chosen_outputs(server: Any) -> None:
    import tritonclient.http as httpclient

    client = _triton(server)
    items = httpclient.InferInput("items", [3], "BYTES")
    items.set_data_from_numpy(ITEMS, binary_data=False)
    outputs = [httpclient.InferRequestedOutput("ranking", binary_data=False)]
    result = client.infer("bandit", [items], outputs=outputs)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["ranking"]
    assert sorted(response["outputs"][0]["data"]) == sorted(i.decode() for i in ITEMS)
    assert result.as_numpy("scores") is None
    client.close()


def test_triton_http_errors_name_the_field(server: Any) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = _triton(server)
    bad = httpclient.InferInput("items", [2], "INT32")
    bad.set_data_from_numpy(np.array([1, 2], dtype=np.int32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("bandit", [bad])
    assert info.value.status() == "400"
    assert "inputs[0].datatype: items must be BYTES, got INT32" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("nope")
    assert info.value.status() == "404"
    assert not client.is_model_ready("nope")
    client.close()


# --- kserve InferenceRESTClient --------------------------------------------------------------


async def _kserve(protocol: str) -> Any:
    from kserve import InferenceRESTClient, RESTConfig

    return InferenceRESTClient(RESTConfig(protocol=protocol))


async def test_kserve_rest_v2_health_and_infer(server: Any) -> None:
    from kserve import InferInput, InferRequest

    client = await _kserve("v2")
    base = server.base
    try:
        assert await client.is_server_ready(base)
        assert await client.is_server_live(base)
        assert await client.is_model_ready(base, "bandit")
        for binary in (True, False):  # the client's default is binary
            items = InferInput("items", [3], "BYTES")
            items.set_data_from_numpy(ITEMS, binary_data=binary)
            response = await client.infer(
                base, InferRequest("bandit", [items]), model_name="bandit"
            )
            by_name = {o.name: o.as_numpy() for o in response.outputs}
            assert by_name["scores"].shape == (3,)
            got = [x if isinstance(x, str) else x.decode() for x in by_name["ranking"]]
            assert sorted(got) == sorted(i.decode() for i in ITEMS)
    finally:
        await client.close()


async def test_kserve_rest_v2_errors_are_http_errors_with_the_field(server: Any) -> None:
    import httpx
    from kserve import InferInput, InferRequest

    client = await _kserve("v2")
    try:
        bad = InferInput("items", [2], "FP32")
        bad.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
        with pytest.raises(httpx.HTTPStatusError) as info:
            await client.infer(server.base, InferRequest("bandit", [bad]), model_name="bandit")
        assert info.value.response.status_code == 400
        assert "items must be BYTES, got FP32" in info.value.response.json()["error"]
    finally:
        await client.close()


async def test_kserve_rest_v1_health_and_predict(server: Any) -> None:
    client = await _kserve("v1")
    base = server.base
    try:
        assert await client.is_server_live(base)
        assert await client.is_model_ready(base, "bandit")
        answer = await client.infer(
            base, {"instances": ["a", "b", "c"], "parameters": {"top_k": 2}}, model_name="bandit"
        )
        assert len(answer["predictions"]) == 3
        assert len(answer["ranking"]) == 2
    finally:
        await client.close()
