"""Wire formats: Open Inference Protocol v2 (REST/JSON) and KServe v1, parsed and rendered.

Everything here is a pure function from bytes to typed requests (or from responses to bytes),
so the HTTP handlers stay thin and every bad-input case is testable without a server. A
request that does not follow the protocol raises :class:`ClientError`, whose message starts
with the JSON path of the offending field (``inputs[0].shape: ...``); the handler turns it
into a 4xx ``{"error": ...}`` answer.

Validation is per request or per tensor, never per element, wherever the data allow it:
element checks run as C-level ``map``/``set`` passes, not Python loops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

# OIP v2 tensor datatypes and the numpy dtype each one decodes to (BYTES stays a list of str).
DATATYPES: dict[str, np.dtype[Any] | None] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": None,
}

# "model_name"/"model_version": KServe's Python client repeats the path's model in the body.
_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs", "model_name", "model_version"})
_TENSOR_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_V1_KEYS = frozenset({"instances", "inputs", "parameters"})
_FEEDBACK_KEYS = frozenset({"feedback", "segment", "idempotency_key", "ticket", "parameters"})
_MAX_TICKET = 256
_MAX_DIMS = 8
MAX_TENSORS = 64


class ClientError(Exception):
    """Bad input from the client: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ClientError:
    return ClientError(400, message)


def unprocessable(message: str) -> ClientError:
    return ClientError(422, message)


@dataclass(slots=True)
class Tensor:
    """One named input or output tensor; ``data`` is flat, row-major."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any  # list for decoded input; list or np.ndarray for output
    parameters: dict[str, Any] | None = None

    def numpy(self, where: str = "") -> np.ndarray[Any, Any]:
        """Decode numeric data into an array of the declared datatype and shape."""
        label = where or self.name
        dtype = DATATYPES[self.datatype]
        if dtype is None:
            raise bad_request(f"{label}.datatype: BYTES data cannot be read as numbers")
        return numeric_array(self.data, dtype, self.shape, f"{label}.data", self.datatype)


def numeric_array(
    data: Any, dtype: np.dtype[Any], shape: tuple[int, ...], where: str, datatype: str
) -> np.ndarray[Any, Any]:
    """Tensor data (a flat list, or an array) as an array of ``dtype`` and ``shape``; a 400
    naming ``where`` when they are not values of ``datatype``.

    A flat list (JSON ``data`` after flattening) is filled in by ``np.fromiter`` in one C
    loop, without the pass over the list's nesting and element types that ``np.asarray``
    makes first. Anything that ``fromiter`` refuses goes to ``np.asarray``, whose
    conversions and error messages are the reference."""
    if type(data) is list:
        try:
            return np.fromiter(data, dtype, len(data)).reshape(shape)
        except (TypeError, ValueError, OverflowError):
            pass  # nested lists, or elements that are not numbers: np.asarray says which
    try:
        array = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise bad_request(f"{where}: not valid {datatype} values ({exc})") from exc
    return array.reshape(shape)


@dataclass(slots=True)
class InferenceRequest:
    """A protocol-neutral inference request, as both v1 and v2 decode to it."""

    inputs: dict[str, Tensor]
    parameters: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    # "inputs[0]" style labels for error messages, by input name.
    labels: dict[str, str] = field(default_factory=dict)
    protocol: str = "v2"
    # The outputs the client asked for (OIP v2 "outputs"), in its order; None: all.
    outputs: tuple[str, ...] | None = None
    # Binary tensor extension: outputs with an explicit ``binary_data`` choice, and the
    # request's ``binary_data_output`` default for the others.
    output_binary: dict[str, bool] = field(default_factory=dict)
    binary_default: bool = False
    # The model named in the body (KServe's client sends it), checked against the path.
    model_name: str | None = None
    model_version: str | None = None

    def binary_outputs(self, names: Sequence[str]) -> frozenset[str]:
        """Which of the answer's outputs go back as binary data."""
        chosen, default = self.output_binary, self.binary_default
        return frozenset(n for n in names if chosen.get(n, default))

    def label(self, name: str) -> str:
        return self.labels.get(name, name)


@dataclass(slots=True)
class InferenceResponse:
    """What a model returns for one request."""

    outputs: list[Tensor]
    parameters: dict[str, Any] | None = None
    # Why this answer is degraded (e.g. served from a stale snapshot), or None.
    degraded: str | None = None


@dataclass(slots=True, frozen=True)
class FeedbackRequest:
    """Rewards for items, in [0, 1]; applied at most once per idempotency key."""

    items: list[str]
    rewards: np.ndarray[Any, np.dtype[np.float64]]
    segment: str | None
    idempotency_key: str | None
    # The scoring answer's ticket: which revision scored these items (see attribution.py).
    ticket: str | None = None


#: Bytes per element of each fixed-size datatype in raw (binary) form, little-endian.
RAW_ITEMSIZE: dict[str, int] = {k: v.itemsize for k, v in DATATYPES.items() if v is not None}
_LE_DTYPES = {k: v.newbyteorder("<") for k, v in DATATYPES.items() if v is not None}


def tensor_from_raw(
    name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview, where: str
) -> Tensor:
    """Decode one tensor's raw bytes (the binary tensor extension, gRPC ``raw_input_contents``).

    Fixed-size types are little-endian and row-major, so the data become a flat numpy array
    (no copy); BYTES elements are each a 4-byte little-endian length and that many bytes, and
    become ``str`` when they are UTF-8 (``bytes`` otherwise).
    """
    count = math.prod(shape)
    dtype = _LE_DTYPES.get(datatype)
    if dtype is not None:
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise bad_request(
                f"{where}: {len(raw)} bytes of binary data, but shape {list(shape)} of "
                f"{datatype} needs {expected}"
            )
        data: Any = np.frombuffer(raw, dtype=dtype)
        if datatype == "BOOL" and count and np.frombuffer(raw, np.uint8).max() > 1:
            raise bad_request(f"{where}: BOOL elements must be the bytes 0 or 1")
        return Tensor(name, datatype, shape, data)
    if datatype != "BYTES":
        raise bad_request(f"{where}.datatype: expected one of {', '.join(DATATYPES)}")
    return Tensor(name, datatype, shape, split_raw_bytes(raw, count, where))


def split_raw_bytes(raw: bytes | memoryview, count: int, where: str) -> list[Any]:
    """The ``count`` length-prefixed elements of a raw BYTES tensor (exactly, nothing after)."""
    buf = bytes(raw)
    out: list[Any] = []
    append = out.append
    pos, end = 0, len(buf)
    for i in range(count):
        if pos + 4 > end:
            raise bad_request(f"{where}: binary data end inside element {i} of {count}")
        size = int.from_bytes(buf[pos : pos + 4], "little")
        pos += 4
        if pos + size > end:
            raise bad_request(f"{where}: binary data end inside element {i} of {count}")
        item = buf[pos : pos + size]
        pos += size
        try:
            append(item.decode())
        except UnicodeDecodeError:
            append(item)
    if pos != end:
        raise bad_request(f"{where}: {end - pos} bytes of binary data after {count} elements")
    return out


def tensor_to_raw(tensor: Tensor) -> bytes:
    """The raw (binary) form of an output tensor; see :func:`tensor_from_raw`."""
    dtype = _LE_DTYPES.get(tensor.datatype)
    if dtype is not None:
        return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()
    parts: list[bytes] = []
    for item in tensor.data:
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(len(data).to_bytes(4, "little"))
        parts.append(data)
    return b"".join(parts)


def decode_json(body: bytes) -> Any:
    if not body:
        raise bad_request("body: empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"body: malformed JSON ({exc})") from exc


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{where}: expected a JSON object, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _unknown_keys(obj: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = obj.keys() - allowed
    if extra:
        name = sorted(extra)[0]
        prefix = f"{where}." if where else ""
        raise bad_request(f"{prefix}{name}: unknown field (allowed: {', '.join(sorted(allowed))})")


def _flatten(data: list[Any], depth: int, where: str) -> list[Any]:
    """Flatten nested JSON arrays (OIP allows them) by one C-level pass per level."""
    flat = data
    for _ in range(depth):
        if not flat or not isinstance(flat[0], list):
            break
        if set(map(type, flat)) != {list}:
            raise bad_request(f"{where}.data: nested arrays must have the same depth everywhere")
        flat = [x for row in flat for x in row]
    return flat


#: The binary tensor extension's request and response header: the JSON part's length.
BINARY_HEADER = "Inference-Header-Content-Length"


class _BinaryData:
    """The bytes after the JSON part of a binary request, handed out to inputs in order."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, size: Any, where: str) -> memoryview:
        if type(size) is not int or size < 0:
            raise bad_request(f"{where}.parameters.binary_data_size: expected an integer >= 0")
        left = len(self.buf) - self.pos
        if size > left:
            raise bad_request(
                f"{where}.parameters.binary_data_size: {size} bytes, but only {left} bytes of "
                "binary data are left in the body"
            )
        chunk = self.buf[self.pos : self.pos + size]
        self.pos += size
        return chunk


def split_binary_body(body: bytes, header: str | None) -> tuple[bytes, _BinaryData | None]:
    """The JSON part of a body and, with the binary extension's header, the binary part."""
    if header is None:
        return body, None
    try:
        length = int(header.strip())
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise bad_request(
            f"{BINARY_HEADER}: expected the JSON part's length in bytes, 0-{len(body)}, "
            f"got {header!r}"
        )
    return body[:length], _BinaryData(memoryview(body)[length:])


def _parse_tensor(
    raw: Any, where: str, max_elements: int, binary: _BinaryData | None = None
) -> Tensor:
    obj = _object(raw, where)
    _unknown_keys(obj, _TENSOR_KEYS, where)
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request(f"{where}.name: required, a non-empty string")
    datatype = obj.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise bad_request(
            f"{where}.datatype: expected one of {', '.join(DATATYPES)}, got {datatype!r}"
        )
    shape_raw = obj.get("shape")
    if (
        not isinstance(shape_raw, list)
        or len(shape_raw) > _MAX_DIMS
        or not all(type(d) is int and d >= 0 for d in shape_raw)
    ):
        raise bad_request(
            f"{where}.shape: expected an array of at most {_MAX_DIMS} non-negative integers"
        )
    shape = tuple(shape_raw)
    count = math.prod(shape)
    if count > max_elements:
        raise ClientError(
            422, f"{where}.shape: {count} elements exceed the limit of {max_elements}"
        )
    params = obj.get("parameters")
    if params is not None:
        _object(params, f"{where}.parameters")
        if "binary_data_size" in params:
            if binary is None:
                raise bad_request(
                    f"{where}.parameters.binary_data_size: binary data need the "
                    f"{BINARY_HEADER} header"
                )
            if "data" in obj:
                raise bad_request(f"{where}.data: not allowed with binary_data_size")
            chunk = binary.take(params["binary_data_size"], where)
            tensor = tensor_from_raw(name, datatype, shape, chunk, f"{where} binary data")
            rest = {k: v for k, v in params.items() if k != "binary_data_size"}
            tensor.parameters = rest or None
            return tensor
    data = obj.get("data")
    if not isinstance(data, list):
        raise bad_request(f"{where}.data: required, an array")
    if len(shape) > 1 or (data and isinstance(data[0], list)):
        data = _flatten(data, max(len(shape) - 1, 1), where)
    if len(data) != count:
        raise bad_request(f"{where}.data: {len(data)} elements do not match shape {list(shape)}")
    return Tensor(name, datatype, shape, data, params)


def parse_v2_infer(
    body: bytes, max_elements: int, binary_header: str | None = None
) -> InferenceRequest:
    """Decode an OIP v2 ``/infer`` body (with the binary tensor extension when its header
    ``Inference-Header-Content-Length`` is given)."""
    json_part, binary = split_binary_body(body, binary_header)
    obj = _object(decode_json(json_part), "body")
    _unknown_keys(obj, _REQUEST_KEYS, "")
    inputs_raw = obj.get("inputs")
    if not isinstance(inputs_raw, list) or not inputs_raw:
        raise bad_request("inputs: required, a non-empty array of tensors")
    if len(inputs_raw) > MAX_TENSORS:
        raise bad_request(f"inputs: {len(inputs_raw)} tensors, at most {MAX_TENSORS} allowed")
    inputs: dict[str, Tensor] = {}
    labels: dict[str, str] = {}
    for i, raw in enumerate(inputs_raw):
        where = f"inputs[{i}]"
        tensor = _parse_tensor(raw, where, max_elements, binary)
        if tensor.name in inputs:
            raise bad_request(f"{where}.name: duplicate input {tensor.name!r}")
        inputs[tensor.name] = tensor
        labels[tensor.name] = where
    params = obj.get("parameters")
    parameters = _object(params, "parameters") if params is not None else {}
    if binary is not None and binary.pos != len(binary.buf):
        raise bad_request(
            f"body: {len(binary.buf) - binary.pos} bytes of binary data that no input claims "
            "(binary_data_size)"
        )
    request_id = obj.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_request("id: expected a string")
    for key in ("model_name", "model_version"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise bad_request(f"{key}: expected a string")
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise bad_request("parameters.binary_data_output: expected a boolean")
    outputs, output_binary = _requested_outputs(obj.get("outputs"))
    return InferenceRequest(
        inputs,
        parameters,
        request_id,
        labels,
        "v2",
        outputs,
        output_binary,
        binary_default,
        obj.get("model_name"),
        obj.get("model_version"),
    )


_OUTPUT_KEYS = frozenset({"name", "parameters"})


def _requested_outputs(raw: Any) -> tuple[tuple[str, ...] | None, dict[str, bool]]:
    if raw is None:
        return None, {}
    if not isinstance(raw, list):
        raise bad_request("outputs: expected an array")
    names: list[str] = []
    binary: dict[str, bool] = {}
    for i, item in enumerate(raw):
        where = f"outputs[{i}]"
        _unknown_keys(_object(item, where), _OUTPUT_KEYS, where)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"{where}.name: required, a string")
        if name in names:
            raise bad_request(f"{where}.name: duplicate output {name!r}")
        if item.get("parameters") is not None:
            choice = _object(item["parameters"], f"{where}.parameters").get("binary_data")
            if choice is not None:
                if not isinstance(choice, bool):
                    raise bad_request(f"{where}.parameters.binary_data: expected a boolean")
                binary[name] = choice
        names.append(name)
    return tuple(names), binary


def unknown_output(requested: Sequence[str], names: Sequence[str]) -> ClientError | None:
    """Pure: the 400 for the first requested output that is not among ``names``."""
    for i, name in enumerate(requested):
        if name not in names:
            return bad_request(
                f"outputs[{i}].name: no output {name!r} (outputs: {', '.join(names)})"
            )
    return None


def select_outputs(response: InferenceResponse, requested: Sequence[str]) -> InferenceResponse:
    """Only the outputs the client asked for, in its order (OIP v2 ``outputs``)."""
    have = {t.name: t for t in response.outputs}
    problem = unknown_output(requested, list(have))
    if problem is not None:
        raise problem
    return InferenceResponse([have[n] for n in requested], response.parameters, response.degraded)


def parse_v1_predict(
    body: bytes, input_name: str, datatype: str, max_elements: int
) -> InferenceRequest:
    """Decode a KServe v1 ``:predict`` body; ``instances`` become the model's first input."""
    obj = _object(decode_json(body), "body")
    _unknown_keys(obj, _V1_KEYS, "")
    key = "instances" if "instances" in obj else "inputs"
    instances = obj.get(key)
    if not isinstance(instances, list):
        raise bad_request("instances: required, an array")
    if len(instances) > max_elements:
        raise ClientError(
            422, f"{key}: {len(instances)} instances exceed the limit of {max_elements}"
        )
    params = obj.get("parameters")
    parameters = _object(params, "parameters") if params is not None else {}
    tensor = Tensor(input_name, datatype, (len(instances),), instances)
    return InferenceRequest({input_name: tensor}, parameters, None, {input_name: key}, "v1")


def parse_feedback(
    body: bytes,
    max_items: int,
    max_id_length: int,
    header_key: str | None,
    header_ticket: str | None = None,
) -> FeedbackRequest:
    """Decode a ``:feedback`` body: ``{"feedback": [{"item": ..., "reward": ...}], ...}``."""
    obj = _object(decode_json(body), "body")
    _unknown_keys(obj, _FEEDBACK_KEYS, "")
    entries = obj.get("feedback")
    if not isinstance(entries, list) or not entries:
        raise bad_request("feedback: required, a non-empty array of {item, reward} objects")
    if len(entries) > max_items:
        raise ClientError(422, f"feedback: {len(entries)} entries exceed the limit of {max_items}")
    items: list[str] = []
    rewards = np.empty(len(entries), dtype=np.float64)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise bad_request(f"feedback[{i}]: expected an object with item and reward")
        if entry.keys() - {"item", "reward"}:
            extra = sorted(entry.keys() - {"item", "reward"})[0]
            raise bad_request(f"feedback[{i}].{extra}: unknown field (allowed: item, reward)")
        item = entry.get("item")
        if not isinstance(item, str) or not item or len(item) > max_id_length:
            raise bad_request(
                f"feedback[{i}].item: required, a string of 1-{max_id_length} characters"
            )
        reward = entry.get("reward")
        if (
            isinstance(reward, bool)
            or not isinstance(reward, int | float)
            or not 0.0 <= reward <= 1.0
        ):
            raise bad_request(f"feedback[{i}].reward: required, a number in [0, 1]")
        items.append(item)
        rewards[i] = reward
    segment = obj.get("segment")
    if segment is not None and (not isinstance(segment, str) or not 0 < len(segment) <= 128):
        raise bad_request("segment: expected a string of 1-128 characters")
    body_key = obj.get("idempotency_key")
    if body_key is not None and (not isinstance(body_key, str) or not 0 < len(body_key) <= 256):
        raise bad_request("idempotency_key: expected a string of 1-256 characters")
    if header_key is not None and not 0 < len(header_key) <= 256:
        raise bad_request("Idempotency-Key: header must be 1-256 characters")
    if header_key is not None and body_key is not None and header_key != body_key:
        raise bad_request("idempotency_key: differs from the Idempotency-Key header")
    ticket = obj.get("ticket")
    if ticket is not None and (not isinstance(ticket, str) or not 0 < len(ticket) <= _MAX_TICKET):
        raise bad_request(f"ticket: expected a string of 1-{_MAX_TICKET} characters")
    if header_ticket is not None and not 0 < len(header_ticket) <= _MAX_TICKET:
        raise bad_request(f"Mlkube-Ticket: header must be 1-{_MAX_TICKET} characters")
    if header_ticket is not None and ticket is not None and header_ticket != ticket:
        raise bad_request("ticket: differs from the Mlkube-Ticket header")
    return FeedbackRequest(items, rewards, segment, body_key or header_key, ticket or header_ticket)


def _tensor_json(tensor: Tensor) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": tensor.shape,
        "data": tensor.data,
    }
    if tensor.parameters:
        out["parameters"] = tensor.parameters
    return out


_DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY


def render_v2(
    response: InferenceResponse, model: str, version: str, request_id: str | None
) -> bytes:
    body: dict[str, Any] = {
        "model_name": model,
        "model_version": version,
        "outputs": [_tensor_json(t) for t in response.outputs],
    }
    if request_id is not None:
        body["id"] = request_id
    if response.parameters:
        body["parameters"] = response.parameters
    return orjson.dumps(body, option=_DUMPS_OPTS)


def render_v2_binary(
    response: InferenceResponse,
    model: str,
    version: str,
    request_id: str | None,
    binary: frozenset[str],
) -> tuple[bytes, int]:
    """The answer with the outputs in ``binary`` as binary data after the JSON part; returns
    the body and the JSON part's length (the ``Inference-Header-Content-Length`` header)."""
    outputs: list[dict[str, Any]] = []
    raw: list[bytes] = []
    for tensor in response.outputs:
        out = _tensor_json(tensor)
        if tensor.name in binary:
            data = tensor_to_raw(tensor)
            del out["data"]
            out["parameters"] = {**(tensor.parameters or {}), "binary_data_size": len(data)}
            raw.append(data)
        outputs.append(out)
    body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request_id is not None:
        body["id"] = request_id
    if response.parameters:
        body["parameters"] = response.parameters
    head = orjson.dumps(body, option=_DUMPS_OPTS)
    return b"".join([head, *raw]), len(head)


def render_v1(response: InferenceResponse) -> bytes:
    """KServe v1: the first output is ``predictions``; further outputs keep their names."""
    body: dict[str, Any] = {}
    for i, tensor in enumerate(response.outputs):
        body["predictions" if i == 0 else tensor.name] = tensor.data
    return orjson.dumps(body, option=_DUMPS_OPTS)


def render_error(message: str) -> bytes:
    return orjson.dumps({"error": message})
