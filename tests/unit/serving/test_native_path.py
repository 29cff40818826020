"""Which requests the C request path answers, and that it keeps the snapshot machinery going.

Every test in test_app.py already runs with the path on and off (same answers); these check
the routing between the two paths and what the native path must still do besides answering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from mlkube.serving import app as app_module
from mlkube.serving.store import MemoryStore
from tests.unit.serving.conftest import make_config

# These tests choose the path in their own configs: one run each, not one per path.
pytestmark = pytest.mark.parametrize("native_path", [True], ids=["own-config"])

INFER = "/v2/models/bandit/infer"
PREDICT = "/v1/models/bandit:predict"


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the Python decoders the app called, in order."""
    calls: list[str] = []

    def spy(name: str) -> Callable[..., Any]:
        real = getattr(app_module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)

        return wrapper

    for name in ("parse_v2_infer", "parse_v1_predict"):
        monkeypatch.setattr(app_module, name, spy(name))
    return calls


def v2(items: list[str], **extra: Any) -> bytes:
    inputs = [{"name": "items", "datatype": "BYTES", "shape": [len(items)], "data": items}]
    return orjson.dumps({"inputs": inputs, **extra})


async def test_plain_requests_never_reach_the_python_decoder(
    make_client: Any, decoded: list[str]
) -> None:
    client = await make_client(make_config(native_path=True))
    assert (await client.post(INFER, data=v2(["a", "b"], id="1"))).status == 200
    assert (await client.post(PREDICT, data=orjson.dumps({"instances": ["a"]}))).status == 200
    assert decoded == []
    # Unusual but valid (an escape), and invalid: both decoded in Python.
    escaped = v2(["a"]).replace(b'"a"', b'"\\u0061"')
    assert (await client.post(INFER, data=escaped)).status == 200
    resp = await client.post(INFER, data=v2(["a"], parameters={"top_k": 0}))
    assert resp.status == 400
    assert "top_k" in (await resp.json())["error"]
    assert decoded == ["parse_v2_infer", "parse_v2_infer"]


async def test_with_the_native_path_off_everything_is_decoded_in_python(
    make_client: Any, decoded: list[str]
) -> None:
    client = await make_client(make_config(native_path=False))
    assert (await client.post(INFER, data=v2(["a", "b"]))).status == 200
    assert (await client.post(PREDICT, data=orjson.dumps({"instances": ["a"]}))).status == 200
    assert decoded == ["parse_v2_infer", "parse_v1_predict"]


async def test_batching_keeps_requests_on_the_python_path(
    make_client: Any, decoded: list[str]
) -> None:
    client = await make_client(make_config(native_path=True, batching={"enabled": True}))
    assert (await client.post(INFER, data=v2(["a", "b"]))).status == 200
    assert decoded == ["parse_v2_infer"]


async def test_a_new_segment_is_read_once_then_served_natively(
    make_client: Any, decoded: list[str]
) -> None:
    store = MemoryStore()
    await store.add_feedback("eu", ["x"], np.array([500.0]), np.array([0.0]), None)
    client = await make_client(make_config(native_path=True), store=store)
    body = v2(["y", "x"], parameters={"segment": "eu"})
    for _ in range(3):
        out = await (await client.post(INFER, data=body)).json()
        assert out["outputs"][1]["data"] == ["x", "y"]  # eu's counts, not the default's
    assert decoded == ["parse_v2_infer"]  # first sight: the Python path reads the segment


async def test_unknown_items_in_native_answers_are_looked_up_soon(
    make_client: Any, state_of: Any
) -> None:
    store = MemoryStore()
    client = await make_client(make_config(native_path=True), store=store)
    # Counts that appear in the store after the snapshot was read (another pod's feedback).
    await store.add_feedback("default", ["late"], np.array([30.0]), np.array([0.0]), None)
    body = orjson.dumps({"instances": ["late", "other"]})
    assert (await client.post(PREDICT, data=body)).status == 200
    cache = state_of(client).model.cache
    for _ in range(200):
        snap = cache.get("default")
        if "late" in snap:
            break
        await asyncio.sleep(0.01)
    snap = cache.get("default")
    assert snap.alpha[snap.row("late")] == 31.0


def _binary(items: list[bytes], top_k: int | None = None, **params: Any) -> tuple[bytes, Any]:
    raw = b"".join(len(i).to_bytes(4, "little") + i for i in items)
    inputs: list[dict[str, Any]] = [
        {
            "name": "items",
            "datatype": "BYTES",
            "shape": [len(items)],
            "parameters": {"binary_data_size": len(raw)},
        }
    ]
    if top_k is not None:
        inputs.append(
            {
                "name": "top_k",
                "datatype": "INT32",
                "shape": [1],
                "parameters": {"binary_data_size": 4},
            }
        )
        raw += top_k.to_bytes(4, "little", signed=True)
    head = orjson.dumps({"inputs": inputs, "id": "b1", "parameters": params})
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


async def test_plain_binary_requests_are_answered_natively_with_the_same_bytes(
    make_client: Any, decoded: list[str]
) -> None:
    """tritonclient's default request (binary items and top_k, binary outputs) takes the C
    path, and its binary answer is byte for byte what the Python path answers for the same
    draws (both apps start from the same seed)."""
    answers = {}
    for native in (True, False):
        client = await make_client(make_config(native_path=native))
        for output in (True, False):
            body, headers = _binary([b"a", b"b", b"c"], top_k=2, binary_data_output=output)
            resp = await client.post(INFER, data=body, headers=headers)
            assert resp.status == 200
            answers[native, output] = (
                await resp.read(),
                resp.headers.get("Inference-Header-Content-Length"),
                resp.headers["Content-Type"],
            )
    assert decoded == ["parse_v2_infer", "parse_v2_infer"]  # the Python path's two only
    assert answers[True, True] == answers[False, True]
    # JSON answers: the same values (the C path writes 17 significant digits, orjson the
    # shortest form that reads back the same).
    assert orjson.loads(answers[True, False][0]) == orjson.loads(answers[False, False][0])
    assert answers[True, False][1:] == answers[False, False][1:]
    assert answers[True, True][2] == "application/octet-stream"
    assert answers[True, False][1] is None


async def test_unplain_binary_requests_fall_back_to_the_python_decoder(
    make_client: Any, decoded: list[str]
) -> None:
    client = await make_client(make_config(native_path=True))
    cases = [
        (_binary(["é".encode(), b"b"]), 200),  # non-ASCII id: fine, but decoded in Python
        (_binary([b"a", b"b"], top_k=0), 400),  # top_k 0: the Python path says why
        (_binary([b'"q"', b"b"]), 200),  # a quote in an id
    ]
    for (body, headers), status in cases:
        resp = await client.post(INFER, data=body, headers=headers)
        assert resp.status == status, await resp.text()
    truncated, headers = _binary([b"a", b"b"])
    resp = await client.post(INFER, data=truncated[:-1], headers=headers)
    assert resp.status == 400
    assert decoded == ["parse_v2_infer"] * 4
