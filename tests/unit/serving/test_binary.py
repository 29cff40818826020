"""The binary tensor extension (Triton's and KServe's): binary inputs and outputs over REST.

Bodies are built by hand here, byte for byte as the extension defines them, so that the
tests do not lean on a client library's reading of it (the official clients are exercised
against a real server in tests/integration/serving/test_clients.py).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from mlkube.serving.protocol import (
    BINARY_HEADER,
    ClientError,
    Tensor,
    parse_v2_infer,
    tensor_from_raw,
    tensor_to_raw,
)

INFER = "/v2/models/bandit/infer"


def raw_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def binary_body(
    inputs: list[tuple[dict[str, Any], bytes]], **extra: Any
) -> tuple[bytes, dict[str, str]]:
    """A request body: JSON part, then each input's bytes in order; and its header."""
    tensors = []
    for tensor, data in inputs:
        params = dict(tensor.get("parameters", {}), binary_data_size=len(data))
        tensors.append({**tensor, "parameters": params})
    head = orjson.dumps({"inputs": tensors, **extra})
    return head + b"".join(d for _, d in inputs), {BINARY_HEADER: str(len(head))}


def split_answer(body: bytes, headers: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The JSON part of an answer and each binary output's bytes by name."""
    length = int(headers[BINARY_HEADER])
    head = orjson.loads(body[:length])
    raw: dict[str, bytes] = {}
    pos = length
    for out in head["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if size is not None:
            raw[out["name"]] = body[pos : pos + size]
            pos += size
    assert pos == len(body), "bytes after the last binary output"
    return head, raw


def unpack_bytes(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from("<I", data, pos)
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


ITEMS = {"name": "items", "datatype": "BYTES", "shape": [3]}


async def test_binary_items_and_binary_outputs_by_request_default(client: Any) -> None:
    body, headers = binary_body(
        [(ITEMS, raw_bytes([b"a", b"b", "é".encode()]))],
        parameters={"binary_data_output": True, "top_k": 2},
    )
    resp = await client.post(INFER, data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "application/octet-stream"
    head, raw = split_answer(await resp.read(), resp.headers)
    shapes = {o["name"]: (o["datatype"], o["shape"]) for o in head["outputs"]}
    assert shapes == {"ranking": ("BYTES", [2]), "scores": ("FP64", [3])}
    assert all("data" not in o for o in head["outputs"])
    ranking = unpack_bytes(raw["ranking"])
    scores = np.frombuffer(raw["scores"], dtype="<f8")
    assert len(scores) == 3
    assert all(0.0 <= s <= 1.0 for s in scores)
    # The ranking is the top 2 of the three ids by their scores.
    ids = [b"a", b"b", "é".encode()]
    assert ranking == [ids[i] for i in np.argsort(-scores, kind="stable")[:2]]


async def test_per_output_choice_overrides_the_request_default(client: Any) -> None:
    body, headers = binary_body(
        [(ITEMS, raw_bytes([b"a", b"b", b"c"]))],
        parameters={"binary_data_output": True},
        outputs=[{"name": "ranking", "parameters": {"binary_data": False}}, {"name": "scores"}],
    )
    resp = await client.post(INFER, data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    head, raw = split_answer(await resp.read(), resp.headers)
    assert [o["name"] for o in head["outputs"]] == ["ranking", "scores"]
    assert sorted(head["outputs"][0]["data"]) == ["a", "b", "c"]
    assert list(raw) == ["scores"]


async def test_binary_inputs_with_json_outputs_answer_plain_json(client: Any) -> None:
    top_k = {"name": "top_k", "datatype": "INT32", "shape": [1]}
    body, headers = binary_body(
        [(ITEMS, raw_bytes([b"x", b"y", b"z"])), (top_k, struct.pack("<i", 1))]
    )
    resp = await client.post(INFER, data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    assert BINARY_HEADER not in resp.headers
    answer = await resp.json()
    ranking = next(o for o in answer["outputs"] if o["name"] == "ranking")
    assert ranking["shape"] == [1]
    assert ranking["data"][0] in ("x", "y", "z")


async def test_binary_output_asked_for_a_json_request(client: Any) -> None:
    body = orjson.dumps(
        {
            "inputs": [{**ITEMS, "data": ["a", "b", "c"]}],
            "outputs": [{"name": "scores", "parameters": {"binary_data": True}}],
        }
    )
    resp = await client.post(INFER, data=body)
    assert resp.status == 200, await resp.text()
    head, raw = split_answer(await resp.read(), resp.headers)
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert len(np.frombuffer(raw["scores"], dtype="<f8")) == 3


async def test_kserve_clients_model_name_in_the_body(client: Any) -> None:
    ok = orjson.dumps(
        {"model_name": "bandit", "id": "r1", "inputs": [{**ITEMS, "data": list("abc")}]}
    )
    resp = await client.post(INFER, data=ok)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["id"] == "r1"
    wrong = orjson.dumps({"model_name": "other", "inputs": [{**ITEMS, "data": list("abc")}]})
    resp = await client.post(INFER, data=wrong)
    assert resp.status == 400
    assert (await resp.json())["error"].startswith("model_name: 'other' differs")


def _bad(
    inputs: list[tuple[dict[str, Any], bytes]],
    extra: bytes = b"",
    header: str | None = None,
    **kw: Any,
) -> tuple[bytes, dict[str, str]]:
    body, headers = binary_body(inputs, **kw)
    if header is not None:
        headers[BINARY_HEADER] = header
    return body + extra, headers


BAD_BINARY: list[tuple[tuple[bytes, dict[str, str]], str]] = [
    (
        _bad([(ITEMS, raw_bytes([b"a", b"b"]))]),
        "inputs[0] binary data: binary data end inside element 2 of 3",
    ),
    (
        _bad([(ITEMS, raw_bytes([b"a", b"b", b"c", b"d"]))]),
        "inputs[0] binary data: 5 bytes of binary data after 3 elements",
    ),
    (
        _bad([(ITEMS, raw_bytes([b"a", b"b", b"c"]))], extra=b"zz"),
        "body: 2 bytes of binary data that no input claims",
    ),
    (
        _bad([(ITEMS, raw_bytes([b"a", b"b", b"c"]))], header="999999"),
        f"{BINARY_HEADER}: expected the JSON part's length",
    ),
    (
        _bad([(ITEMS, raw_bytes([b"a", b"b", b"c"]))], header="ten"),
        f"{BINARY_HEADER}: expected the JSON part's length",
    ),
    (
        _bad(
            [
                (ITEMS, raw_bytes([b"a", b"b", b"c"])),
                ({"name": "top_k", "datatype": "INT64", "shape": [1]}, b"\x01\x00\x00\x00"),
            ]
        ),
        "inputs[1] binary data: 4 bytes of binary data, but shape [1] of INT64 needs 8",
    ),
    (
        _bad([(ITEMS, raw_bytes([b"a", b"b", b"c"]))], parameters={"binary_data_output": "yes"}),
        "parameters.binary_data_output: expected a boolean",
    ),
]


@pytest.mark.parametrize(("request_", "message"), BAD_BINARY)
async def test_bad_binary_requests_are_400s_naming_the_part(
    client: Any, request_: tuple[bytes, dict[str, str]], message: str
) -> None:
    body, headers = request_
    resp = await client.post(INFER, data=body, headers=headers)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error.startswith(message), error


async def test_binary_size_without_the_header_is_refused(client: Any) -> None:
    head = orjson.dumps({"inputs": [{**ITEMS, "parameters": {"binary_data_size": 3}}]})
    resp = await client.post(INFER, data=head)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (
        error
        == f"inputs[0].parameters.binary_data_size: binary data need the {BINARY_HEADER} header"
    )


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("BOOL", [True, False, True]),
        ("UINT8", [0, 255, 7]),
        ("INT16", [-3, 0, 32767]),
        ("UINT64", [0, 2**64 - 1, 5]),
        ("FP16", [0.5, -2.0, 65504.0]),
        ("FP32", [1.5, -0.25, 3.0]),
        ("FP64", [1e-300, -2.5, 0.0]),
        ("BYTES", ["", "naïve", "x" * 300]),
    ],
)
def test_raw_tensors_round_trip(datatype: str, values: list[Any]) -> None:
    raw = tensor_to_raw(Tensor("t", datatype, (3,), values))
    back = tensor_from_raw("t", datatype, (3,), raw, "t")
    if datatype == "BYTES":
        assert back.data == values
    else:
        assert back.numpy().tolist() == values


def test_raw_bool_must_be_zero_or_one() -> None:
    with pytest.raises(ClientError, match="BOOL elements must be the bytes 0 or 1"):
        tensor_from_raw("t", "BOOL", (2,), b"\x01\x02", "t")


def test_bytes_elements_that_are_not_utf8_stay_bytes() -> None:
    raw = raw_bytes([b"\xff\xfe", b"ok"])
    assert tensor_from_raw("t", "BYTES", (2,), raw, "t").data == [b"\xff\xfe", "ok"]


def test_an_empty_json_part_is_a_clear_error() -> None:
    with pytest.raises(ClientError, match="body: empty"):
        parse_v2_infer(b"\x00\x00\x00\x00", 100, "0")
