"""Pure: OIP v2 gRPC messages to and from the runtime's request and response types.

A ``ModelInferRequest`` decodes to the same :class:`InferenceRequest` that a REST body
decodes to, checked the same way and refused with the same messages (``inputs[0].datatype:
...``, ``outputs[1].name: ...``), so one model, one batcher and one set of tests serve both
protocols. Field paths in messages are those of the protobuf message, which REST's JSON
mirrors. Tensor data arrive either as ``raw_input_contents`` (decoded by
:func:`~mlkube.serving.protocol.tensor_from_raw`, shared with the binary tensor extension)
or in the typed ``contents`` field of their datatype; answers always carry
``raw_output_contents``, as Triton's do (one bytes field per output instead of one protobuf
value per element).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from mlkube.serving.grpc import inference_pb2 as pb
from mlkube.serving.model import ModelMetadata, TensorSpec
from mlkube.serving.protocol import (
    _MAX_DIMS,
    DATATYPES,
    MAX_TENSORS,
    ClientError,
    InferenceRequest,
    InferenceResponse,
    Tensor,
    bad_request,
    tensor_from_raw,
    tensor_to_raw,
)

#: The ``InferTensorContents`` field that carries each datatype typed (FP16 travels raw only).
CONTENTS_FIELD: dict[str, str | None] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP16": None,
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_PARAMETER_CHOICES = "bool_param, int64_param, string_param, double_param or uint64_param"
_INT64 = (-(1 << 63), (1 << 63) - 1)


# ------------------------------------------------------------------------------ parameters


def parameter_value(param: pb.InferParameter, where: str) -> Any:
    """The Python value of one ``InferParameter``; one without a value is a 400."""
    choice = param.WhichOneof("parameter_choice")
    if choice is None:
        raise bad_request(f"{where}: no value set (one of {_PARAMETER_CHOICES})")
    return getattr(param, choice)


def parameters_from_proto(params: Mapping[str, pb.InferParameter], where: str) -> dict[str, Any]:
    return {key: parameter_value(value, f"{where}.{key}") for key, value in params.items()}


def to_parameter(value: Any) -> pb.InferParameter:
    """A Python value as an ``InferParameter``; what has no protobuf type travels as JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return pb.InferParameter(int64_param=value)
        if 0 <= value < 1 << 64:
            return pb.InferParameter(uint64_param=value)
        return pb.InferParameter(string_param=str(value))
    if isinstance(value, float):
        return pb.InferParameter(double_param=value)
    if isinstance(value, str):
        return pb.InferParameter(string_param=value)
    return pb.InferParameter(
        string_param=orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    )


def _fill_parameters(target: Any, params: Mapping[str, Any] | None) -> None:
    for key, value in (params or {}).items():
        target[key].CopyFrom(to_parameter(value))


# ------------------------------------------------------------------------------- requests


def _tensor_shape(
    tensor: pb.ModelInferRequest.InferInputTensor, where: str, limit: int
) -> tuple[int, ...]:
    """Name, datatype and shape checked as the REST API checks them; the shape."""
    if not tensor.name:
        raise bad_request(f"{where}.name: required, a non-empty string")
    if tensor.datatype not in DATATYPES:
        raise bad_request(
            f"{where}.datatype: expected one of {', '.join(DATATYPES)}, got {tensor.datatype!r}"
        )
    shape = tuple(tensor.shape)
    if len(shape) > _MAX_DIMS or any(d < 0 for d in shape):
        raise bad_request(
            f"{where}.shape: expected an array of at most {_MAX_DIMS} non-negative integers"
        )
    count = math.prod(shape)
    if count > limit:
        raise ClientError(422, f"{where}.shape: {count} elements exceed the limit of {limit}")
    return shape


def _texts(items: Sequence[bytes]) -> list[Any]:
    """BYTES elements as ``str`` when they are UTF-8 (``bytes`` otherwise), as raw decoding
    gives them; one C-level pass when all of them are."""
    try:
        return list(map(bytes.decode, items))
    except UnicodeDecodeError:
        out: list[Any] = []
        for item in items:
            try:
                out.append(item.decode())
            except UnicodeDecodeError:
                out.append(item)
        return out


def _typed_data(
    tensor: pb.ModelInferRequest.InferInputTensor, shape: tuple[int, ...], where: str
) -> Any:
    """The elements of ``contents``: in the one field of the tensor's datatype, as many as
    the shape says; numbers become a numpy array of the datatype, BYTES a list."""
    datatype = tensor.datatype
    field = CONTENTS_FIELD[datatype]
    present = [f.name for f, _ in tensor.contents.ListFields()]
    if field is None:
        raise bad_request(
            f"{where}.contents: {datatype} data can only be sent in raw_input_contents"
        )
    stray = [name for name in present if name != field]
    if stray:
        raise bad_request(f"{where}.contents.{stray[0]}: {datatype} data go in contents.{field}")
    values = getattr(tensor.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise bad_request(
            f"{where}.contents.{field}: {len(values)} elements do not match shape {list(shape)}"
        )
    if datatype == "BYTES":
        return _texts(values)
    try:
        return np.array(values, dtype=DATATYPES[datatype])
    except (TypeError, ValueError, OverflowError) as exc:
        raise bad_request(f"{where}.contents.{field}: not valid {datatype} values ({exc})") from exc


def requested_outputs(
    outputs: Sequence[pb.ModelInferRequest.InferRequestedOutputTensor],
) -> tuple[str, ...] | None:
    """The outputs asked for, in order; None (every output) when none is listed."""
    if not outputs:
        return None
    names: list[str] = []
    for i, output in enumerate(outputs):
        where = f"outputs[{i}]"
        if not output.name:
            raise bad_request(f"{where}.name: required, a string")
        if output.name in names:
            raise bad_request(f"{where}.name: duplicate output {output.name!r}")
        parameters_from_proto(output.parameters, f"{where}.parameters")
        names.append(output.name)
    return tuple(names)


def decode_infer_request(message: pb.ModelInferRequest, max_elements: int) -> InferenceRequest:
    """A ``ModelInferRequest`` as the runtime's request (raises ClientError naming the field)."""
    tensors = message.inputs
    if not tensors:
        raise bad_request("inputs: required, a non-empty array of tensors")
    if len(tensors) > MAX_TENSORS:
        raise bad_request(f"inputs: {len(tensors)} tensors, at most {MAX_TENSORS} allowed")
    raw = message.raw_input_contents
    if raw and len(raw) != len(tensors):
        raise bad_request(
            f"raw_input_contents: {len(raw)} entries for {len(tensors)} inputs "
            "(one per input, in the order of inputs)"
        )
    inputs: dict[str, Tensor] = {}
    labels: dict[str, str] = {}
    for i, spec in enumerate(tensors):
        where = f"inputs[{i}]"
        shape = _tensor_shape(spec, where, max_elements)
        if raw:
            if spec.contents.ListFields():
                raise bad_request(
                    f"{where}.contents: must be empty when raw_input_contents carries the data"
                )
            tensor = tensor_from_raw(
                spec.name, spec.datatype, shape, raw[i], f"raw_input_contents[{i}]"
            )
        else:
            tensor = Tensor(spec.name, spec.datatype, shape, _typed_data(spec, shape, where))
        if spec.parameters:
            tensor.parameters = parameters_from_proto(spec.parameters, f"{where}.parameters")
        if tensor.name in inputs:
            raise bad_request(f"{where}.name: duplicate input {tensor.name!r}")
        inputs[tensor.name] = tensor
        labels[tensor.name] = where
    parameters = parameters_from_proto(message.parameters, "parameters")
    outputs = requested_outputs(message.outputs)
    return InferenceRequest(inputs, parameters, message.id or None, labels, "v2", outputs)


#: Request parameters the C request path reads (anything else: the Python path decides).
_NATIVE_PARAMETERS = frozenset({"top_k", "segment"})


def binary_rest_body(message: pb.ModelInferRequest) -> tuple[bytes, int] | None:
    """The request as a REST body with the binary tensor extension (and binary outputs), for
    the model's raw path; returns the body and its JSON part's length. None when the request
    is not of the shape that path could take: every input's data in ``raw_input_contents``,
    no tensor parameters, no requested outputs, request parameters only top_k and segment.
    The raw path declines what else it does not take, and the Python path answers instead,
    errors included, so this only ever saves work.
    """
    tensors, raw = message.inputs, message.raw_input_contents
    if not tensors or len(raw) != len(tensors) or message.outputs:
        return None
    inputs: list[dict[str, Any]] = []
    for spec, data in zip(tensors, raw, strict=True):
        if spec.parameters or spec.HasField("contents"):
            return None
        inputs.append(
            {
                "name": spec.name,
                "datatype": spec.datatype,
                "shape": list(spec.shape),
                "parameters": {"binary_data_size": len(data)},
            }
        )
    parameters: dict[str, Any] = {"binary_data_output": True}
    for key, param in message.parameters.items():
        choice = param.WhichOneof("parameter_choice")
        if key not in _NATIVE_PARAMETERS or choice is None:
            return None
        parameters[key] = getattr(param, choice)
    head: dict[str, Any] = {"inputs": inputs, "parameters": parameters}
    if message.id:
        head["id"] = message.id
    json_part = orjson.dumps(head)
    return b"".join([json_part, *raw]), len(json_part)


def response_from_binary(body: bytes, json_length: int) -> pb.ModelInferResponse:
    """A binary tensor REST answer (all outputs binary) as a ``ModelInferResponse``."""
    head = orjson.loads(body[:json_length])
    message = pb.ModelInferResponse(
        model_name=head["model_name"], model_version=head["model_version"], id=head.get("id", "")
    )
    pos = json_length
    for output in head["outputs"]:
        message.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
        size = output["parameters"]["binary_data_size"]
        message.raw_output_contents.append(body[pos : pos + size])
        pos += size
    return message


# ------------------------------------------------------------------------------ responses


def encode_infer_response(
    response: InferenceResponse, model: str, version: str, request_id: str | None
) -> pb.ModelInferResponse:
    """The model's answer with every output's data in ``raw_output_contents``."""
    message = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id or "")
    for tensor in response.outputs:
        output = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        _fill_parameters(output.parameters, tensor.parameters)
    message.raw_output_contents.extend(tensor_to_raw(t) for t in response.outputs)
    _fill_parameters(message.parameters, response.parameters)
    return message


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype, shape=spec.shape
    )


def encode_model_metadata(
    model: str, version: str, meta: ModelMetadata
) -> pb.ModelMetadataResponse:
    """Model metadata as REST's ``GET /v2/models/{name}`` has it, minus ``parameters``
    (the gRPC message has no such field)."""
    return pb.ModelMetadataResponse(
        name=model,
        versions=[version],
        platform=meta.platform,
        inputs=[_tensor_metadata(t) for t in meta.inputs],
        outputs=[_tensor_metadata(t) for t in meta.outputs],
    )
