"""The gRPC endpoint's pure parts: the .proto's wire contract, status codes, and the codec
between protobuf messages and the runtime's requests (same checks, same messages as REST)."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import orjson
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from mlkube.serving.grpc import PROTO
from mlkube.serving.grpc import inference_pb2 as pb
from mlkube.serving.grpc.codec import (
    CONTENTS_FIELD,
    decode_infer_request,
    encode_infer_response,
    encode_model_metadata,
    parameter_value,
    to_parameter,
)
from mlkube.serving.grpc.status import status_code, trailing_metadata
from mlkube.serving.model import ModelMetadata, TensorSpec
from mlkube.serving.protocol import (
    DATATYPES,
    ClientError,
    InferenceResponse,
    Tensor,
    parse_v2_infer,
    tensor_from_raw,
)

Input = pb.ModelInferRequest.InferInputTensor


def raw_bytes(*items: bytes) -> bytes:
    return b"".join(len(i).to_bytes(4, "little") + i for i in items)


def items_input(*items: str) -> Input:
    return Input(
        name="items",
        datatype="BYTES",
        shape=[len(items)],
        contents=pb.InferTensorContents(bytes_contents=[i.encode() for i in items]),
    )


# ----------------------------------------------------------------------- the wire contract

# The Open Inference Protocol's gRPC layout (package `inference`): message -> field -> (number,
# type, repeated). Generated clients of other projects rely on exactly these.
T = FieldDescriptor
SPEC: dict[str, dict[str, tuple[int, int, bool]]] = {
    "ServerLiveRequest": {},
    "ServerLiveResponse": {"live": (1, T.TYPE_BOOL, False)},
    "ServerReadyRequest": {},
    "ServerReadyResponse": {"ready": (1, T.TYPE_BOOL, False)},
    "ModelReadyRequest": {"name": (1, T.TYPE_STRING, False), "version": (2, T.TYPE_STRING, False)},
    "ModelReadyResponse": {"ready": (1, T.TYPE_BOOL, False)},
    "ServerMetadataRequest": {},
    "ServerMetadataResponse": {
        "name": (1, T.TYPE_STRING, False),
        "version": (2, T.TYPE_STRING, False),
        "extensions": (3, T.TYPE_STRING, True),
    },
    "ModelMetadataRequest": {
        "name": (1, T.TYPE_STRING, False),
        "version": (2, T.TYPE_STRING, False),
    },
    "ModelMetadataResponse": {
        "name": (1, T.TYPE_STRING, False),
        "versions": (2, T.TYPE_STRING, True),
        "platform": (3, T.TYPE_STRING, False),
        "inputs": (4, T.TYPE_MESSAGE, True),
        "outputs": (5, T.TYPE_MESSAGE, True),
    },
    "ModelMetadataResponse.TensorMetadata": {
        "name": (1, T.TYPE_STRING, False),
        "datatype": (2, T.TYPE_STRING, False),
        "shape": (3, T.TYPE_INT64, True),
    },
    "ModelInferRequest": {
        "model_name": (1, T.TYPE_STRING, False),
        "model_version": (2, T.TYPE_STRING, False),
        "id": (3, T.TYPE_STRING, False),
        "parameters": (4, T.TYPE_MESSAGE, True),
        "inputs": (5, T.TYPE_MESSAGE, True),
        "outputs": (6, T.TYPE_MESSAGE, True),
        "raw_input_contents": (7, T.TYPE_BYTES, True),
    },
    "ModelInferRequest.InferInputTensor": {
        "name": (1, T.TYPE_STRING, False),
        "datatype": (2, T.TYPE_STRING, False),
        "shape": (3, T.TYPE_INT64, True),
        "parameters": (4, T.TYPE_MESSAGE, True),
        "contents": (5, T.TYPE_MESSAGE, False),
    },
    "ModelInferRequest.InferRequestedOutputTensor": {
        "name": (1, T.TYPE_STRING, False),
        "parameters": (2, T.TYPE_MESSAGE, True),
    },
    "ModelInferResponse": {
        "model_name": (1, T.TYPE_STRING, False),
        "model_version": (2, T.TYPE_STRING, False),
        "id": (3, T.TYPE_STRING, False),
        "parameters": (4, T.TYPE_MESSAGE, True),
        "outputs": (5, T.TYPE_MESSAGE, True),
        "raw_output_contents": (6, T.TYPE_BYTES, True),
    },
    "ModelInferResponse.InferOutputTensor": {
        "name": (1, T.TYPE_STRING, False),
        "datatype": (2, T.TYPE_STRING, False),
        "shape": (3, T.TYPE_INT64, True),
        "parameters": (4, T.TYPE_MESSAGE, True),
        "contents": (5, T.TYPE_MESSAGE, False),
    },
    "InferParameter": {
        "bool_param": (1, T.TYPE_BOOL, False),
        "int64_param": (2, T.TYPE_INT64, False),
        "string_param": (3, T.TYPE_STRING, False),
        "double_param": (4, T.TYPE_DOUBLE, False),
        "uint64_param": (5, T.TYPE_UINT64, False),
    },
    "InferTensorContents": {
        "bool_contents": (1, T.TYPE_BOOL, True),
        "int_contents": (2, T.TYPE_INT32, True),
        "int64_contents": (3, T.TYPE_INT64, True),
        "uint_contents": (4, T.TYPE_UINT32, True),
        "uint64_contents": (5, T.TYPE_UINT64, True),
        "fp32_contents": (6, T.TYPE_FLOAT, True),
        "fp64_contents": (7, T.TYPE_DOUBLE, True),
        "bytes_contents": (8, T.TYPE_BYTES, True),
    },
}
METHODS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
}


def _messages(prefix: str, descriptors: Any) -> dict[str, Descriptor]:
    out: dict[str, Descriptor] = {}
    for desc in descriptors:
        if desc.GetOptions().map_entry:
            continue  # map<string, InferParameter>: checked through the field below
        name = f"{prefix}{desc.name}"
        out[name] = desc
        out.update(_messages(f"{name}.", desc.nested_types))
    return out


def test_proto_has_the_protocols_package_service_messages_and_field_numbers() -> None:
    file = pb.DESCRIPTOR
    assert file.package == "inference"
    assert PROTO.is_file()
    assert PROTO.name == "inference.proto"
    messages = _messages("", file.message_types_by_name.values())
    assert set(messages) == set(SPEC)
    for name, fields in SPEC.items():
        got = {f.name: (f.number, f.type, f.is_repeated) for f in messages[name].fields}
        assert got == fields, name
    params = pb.InferParameter.DESCRIPTOR.oneofs_by_name["parameter_choice"]
    assert [f.name for f in params.fields] == list(SPEC["InferParameter"])
    # parameters are map<string, InferParameter> everywhere
    for message in (pb.ModelInferRequest, pb.ModelInferResponse, Input):
        entry = message.DESCRIPTOR.fields_by_name["parameters"].message_type
        assert entry.GetOptions().map_entry
        assert entry.fields_by_name["value"].message_type.full_name == "inference.InferParameter"
    service = file.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    got_methods = {
        m.name: (m.input_type.name, m.output_type.name)
        for m in service.methods
        if not m.client_streaming and not m.server_streaming
    }
    assert got_methods == METHODS
    assert len(service.methods) == len(METHODS)


# ---------------------------------------------------------------------------- status codes


@pytest.mark.parametrize(
    ("http", "code"),
    [
        (200, grpc.StatusCode.OK),
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (404, grpc.StatusCode.NOT_FOUND),
        (413, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (415, grpc.StatusCode.INVALID_ARGUMENT),
        (422, grpc.StatusCode.INVALID_ARGUMENT),
        (418, grpc.StatusCode.INVALID_ARGUMENT),
        (499, grpc.StatusCode.CANCELLED),
        (500, grpc.StatusCode.INTERNAL),
        (502, grpc.StatusCode.INTERNAL),
        (503, grpc.StatusCode.UNAVAILABLE),
        (504, grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_status_code_of_each_rest_status(http: int, code: grpc.StatusCode) -> None:
    assert status_code(http) is code


def test_no_client_error_becomes_internal_or_ok() -> None:
    bad = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK}
    assert not [s for s in range(400, 500) if status_code(s) in bad]
    assert all(status_code(s) is not grpc.StatusCode.OK for s in range(500, 600))


def test_retry_after_travels_as_trailing_metadata() -> None:
    assert trailing_metadata({}) == ()
    assert trailing_metadata({"Retry-After": "2"}) == (
        ("retry-after", "2"),
        ("grpc-retry-pushback-ms", "2000"),
    )
    assert trailing_metadata({"Retry-After": "soon"}) == (("retry-after", "soon"),)
    assert trailing_metadata({"Connection": "close"}) == ()


# ------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize(
    ("value", "choice", "back"),
    [
        (True, "bool_param", True),
        (7, "int64_param", 7),
        (-(1 << 63), "int64_param", -(1 << 63)),
        (1 << 63, "uint64_param", 1 << 63),
        (0.25, "double_param", 0.25),
        ("eu", "string_param", "eu"),
        (np.float64(0.5), "double_param", 0.5),
        (np.int32(3), "int64_param", 3),
        ({"a": [1, 2]}, "string_param", '{"a":[1,2]}'),
        (1 << 70, "string_param", str(1 << 70)),
    ],
)
def test_parameters_to_protobuf_and_back(value: Any, choice: str, back: Any) -> None:
    param = to_parameter(value)
    assert param.WhichOneof("parameter_choice") == choice
    assert parameter_value(param, "parameters.x") == back


def test_a_parameter_without_a_value_is_refused_by_name() -> None:
    request = pb.ModelInferRequest(inputs=[items_input("a")])
    request.parameters["top_k"].CopyFrom(pb.InferParameter())
    with pytest.raises(ClientError) as err:
        decode_infer_request(request, 100)
    assert err.value.status == 400
    assert err.value.message.startswith("parameters.top_k: no value set")


# -------------------------------------------------------------------------------- requests


def test_raw_and_typed_inputs_decode_like_rest() -> None:
    request = pb.ModelInferRequest(
        model_name="bandit",
        id="req-1",
        inputs=[
            Input(name="items", datatype="BYTES", shape=[3]),
            Input(name="top_k", datatype="INT64", shape=[1]),
        ],
        raw_input_contents=[raw_bytes(b"a", b"b", "\u00e9".encode()), (2).to_bytes(8, "little")],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="ranking")],
    )
    request.parameters["segment"].string_param = "eu"
    request.inputs[0].parameters["binary_data_size"].int64_param = 17
    parsed = decode_infer_request(request, 100)
    assert parsed.id == "req-1"
    assert parsed.protocol == "v2"
    assert parsed.parameters == {"segment": "eu"}
    assert parsed.outputs == ("ranking",)
    assert parsed.inputs["items"].data == ["a", "b", "\u00e9"]
    assert parsed.inputs["items"].parameters == {"binary_data_size": 17}
    assert parsed.inputs["top_k"].data.tolist() == [2]
    assert parsed.label("top_k") == "inputs[1]"

    typed = pb.ModelInferRequest(
        inputs=[
            items_input("a", "b"),
            Input(
                name="top_k",
                datatype="INT64",
                shape=[1],
                contents=pb.InferTensorContents(int64_contents=[2]),
            ),
        ]
    )
    again = decode_infer_request(typed, 100)
    assert again.id is None  # "" on the wire: not set
    assert again.outputs is None  # none listed: every output
    assert again.inputs["items"].data == ["a", "b"]
    assert again.inputs["top_k"].data.dtype == np.int64


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("BOOL", [True, False]),
        ("UINT8", [0, 255]),
        ("UINT16", [1, 65535]),
        ("UINT32", [1, 2]),
        ("UINT64", [1, 1 << 63]),
        ("INT8", [-128, 127]),
        ("INT16", [-1, 2]),
        ("INT32", [-1, 2]),
        ("INT64", [-(1 << 40), 2]),
        ("FP32", [0.5, -1.5]),
        ("FP64", [0.1, 2.5]),
    ],
)
def test_typed_contents_of_every_numeric_datatype(datatype: str, values: list[Any]) -> None:
    field = CONTENTS_FIELD[datatype]
    assert field is not None
    request = pb.ModelInferRequest(
        inputs=[
            Input(
                name="x",
                datatype=datatype,
                shape=[2],
                contents=pb.InferTensorContents(**{field: values}),
            )
        ]
    )
    tensor = decode_infer_request(request, 100).inputs["x"]
    assert tensor.data.dtype == DATATYPES[datatype]
    assert tensor.data.tolist() == pytest.approx(values)
    assert tensor.numpy().shape == (2,)


def test_the_datatype_table_covers_every_datatype() -> None:
    assert set(CONTENTS_FIELD) == set(DATATYPES)
    fields = {f.name for f in pb.InferTensorContents.DESCRIPTOR.fields}
    assert {f for f in CONTENTS_FIELD.values() if f} == fields


def _json_tensor(name: str, datatype: str, shape: list[int], data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


# (REST body, gRPC request): both must be refused with the same status and message.
SAME_AS_REST: list[tuple[str, dict[str, Any], pb.ModelInferRequest]] = [
    (
        "no inputs",
        {"inputs": []},
        pb.ModelInferRequest(),
    ),
    (
        "unknown datatype",
        {"inputs": [_json_tensor("items", "STRING", [1], ["a"])]},
        pb.ModelInferRequest(inputs=[Input(name="items", datatype="STRING", shape=[1])]),
    ),
    (
        "no name",
        {"inputs": [_json_tensor("", "BYTES", [1], ["a"])]},
        pb.ModelInferRequest(inputs=[Input(name="", datatype="BYTES", shape=[1])]),
    ),
    (
        "negative dimension",
        {"inputs": [_json_tensor("items", "BYTES", [-1], [])]},
        pb.ModelInferRequest(inputs=[Input(name="items", datatype="BYTES", shape=[-1])]),
    ),
    (
        "too many dimensions",
        {"inputs": [_json_tensor("items", "BYTES", [1] * 9, ["a"])]},
        pb.ModelInferRequest(inputs=[Input(name="items", datatype="BYTES", shape=[1] * 9)]),
    ),
    (
        "too many elements",
        {"inputs": [_json_tensor("items", "BYTES", [101], ["a"] * 101)]},
        pb.ModelInferRequest(inputs=[Input(name="items", datatype="BYTES", shape=[101])]),
    ),
    (
        "duplicate input",
        {"inputs": [_json_tensor("items", "BYTES", [1], ["a"])] * 2},
        pb.ModelInferRequest(inputs=[items_input("a"), items_input("a")]),
    ),
    (
        "too many tensors",
        {"inputs": [_json_tensor(f"x{i}", "BYTES", [1], ["a"]) for i in range(65)]},
        pb.ModelInferRequest(
            inputs=[
                Input(
                    name=f"x{i}",
                    datatype="BYTES",
                    shape=[1],
                    contents=pb.InferTensorContents(bytes_contents=[b"a"]),
                )
                for i in range(65)
            ]
        ),
    ),
    (
        "duplicate output",
        {
            "inputs": [_json_tensor("items", "BYTES", [1], ["a"])],
            "outputs": [{"name": "ranking"}, {"name": "ranking"}],
        },
        pb.ModelInferRequest(
            inputs=[items_input("a")],
            outputs=[
                pb.ModelInferRequest.InferRequestedOutputTensor(name="ranking"),
                pb.ModelInferRequest.InferRequestedOutputTensor(name="ranking"),
            ],
        ),
    ),
]


@pytest.mark.parametrize(
    ("body", "request_"), [case[1:] for case in SAME_AS_REST], ids=[c[0] for c in SAME_AS_REST]
)
def test_refused_with_the_same_status_and_message_as_rest(
    body: dict[str, Any], request_: pb.ModelInferRequest
) -> None:
    with pytest.raises(ClientError) as rest:
        parse_v2_infer(orjson.dumps(body), 100)
    with pytest.raises(ClientError) as grpc_err:
        decode_infer_request(request_, 100)
    assert (grpc_err.value.status, grpc_err.value.message) == (
        rest.value.status,
        rest.value.message,
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            pb.ModelInferRequest(
                inputs=[Input(name="items", datatype="BYTES", shape=[2])],
                raw_input_contents=[raw_bytes(b"a", b"b"), b""],
            ),
            "raw_input_contents: 2 entries for 1 inputs",
        ),
        (
            pb.ModelInferRequest(
                inputs=[Input(name="s", datatype="FP64", shape=[3])],
                raw_input_contents=[b"\0" * 16],
            ),
            "raw_input_contents[0]: 16 bytes of binary data, but shape [3] of FP64 needs 24",
        ),
        (
            pb.ModelInferRequest(inputs=[items_input("a")], raw_input_contents=[raw_bytes(b"a")]),
            "inputs[0].contents: must be empty when raw_input_contents carries the data",
        ),
        (
            pb.ModelInferRequest(
                inputs=[
                    Input(
                        name="k",
                        datatype="INT64",
                        shape=[1],
                        contents=pb.InferTensorContents(int_contents=[2]),
                    )
                ]
            ),
            "inputs[0].contents.int_contents: INT64 data go in contents.int64_contents",
        ),
        (
            pb.ModelInferRequest(
                inputs=[
                    Input(
                        name="items",
                        datatype="BYTES",
                        shape=[3],
                        contents=pb.InferTensorContents(bytes_contents=[b"a"]),
                    )
                ]
            ),
            "inputs[0].contents.bytes_contents: 1 elements do not match shape [3]",
        ),
        (
            pb.ModelInferRequest(inputs=[Input(name="h", datatype="FP16", shape=[0])]),
            "inputs[0].contents: FP16 data can only be sent in raw_input_contents",
        ),
        (
            pb.ModelInferRequest(
                inputs=[
                    Input(
                        name="b",
                        datatype="INT8",
                        shape=[1],
                        contents=pb.InferTensorContents(int_contents=[300]),
                    )
                ]
            ),
            "inputs[0].contents.int_contents: not valid INT8 values",
        ),
        (
            pb.ModelInferRequest(
                inputs=[items_input("a")],
                outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="")],
            ),
            "outputs[0].name: required, a string",
        ),
    ],
)
def test_grpc_only_problems_name_the_protobuf_field(
    request_: pb.ModelInferRequest, message: str
) -> None:
    with pytest.raises(ClientError) as err:
        decode_infer_request(request_, 100)
    assert err.value.status == 400
    assert err.value.message.startswith(message)


def test_bytes_that_are_not_utf8_stay_bytes() -> None:
    request = pb.ModelInferRequest(
        inputs=[
            Input(
                name="items",
                datatype="BYTES",
                shape=[2],
                contents=pb.InferTensorContents(bytes_contents=[b"ok", b"\xff"]),
            )
        ]
    )
    assert decode_infer_request(request, 100).inputs["items"].data == ["ok", b"\xff"]


# ------------------------------------------------------------------------------- responses


def test_response_carries_raw_output_contents_in_output_order() -> None:
    scores = np.array([0.5, 0.25, 1.0])
    response = InferenceResponse(
        [
            Tensor("scores", "FP64", (3,), scores, {"unit": "probability"}),
            Tensor("ranking", "BYTES", (2,), ["c", "\u00e9"]),
        ],
        parameters={"segment": "eu"},
    )
    message = encode_infer_response(response, "bandit", "1", "req-9")
    assert (message.model_name, message.model_version, message.id) == ("bandit", "1", "req-9")
    assert [(o.name, o.datatype, list(o.shape)) for o in message.outputs] == [
        ("scores", "FP64", [3]),
        ("ranking", "BYTES", [2]),
    ]
    assert not message.outputs[0].HasField("contents")
    assert message.outputs[0].parameters["unit"].string_param == "probability"
    assert message.parameters["segment"].string_param == "eu"
    decoded = [
        tensor_from_raw(o.name, o.datatype, tuple(o.shape), raw, "out")
        for o, raw in zip(message.outputs, message.raw_output_contents, strict=True)
    ]
    assert decoded[0].data.tolist() == scores.tolist()
    assert decoded[1].data == ["c", "\u00e9"]
    # survives the wire
    again = pb.ModelInferResponse.FromString(message.SerializeToString())
    assert list(again.raw_output_contents) == list(message.raw_output_contents)
    assert encode_infer_response(InferenceResponse([]), "m", "2", None).id == ""


def test_model_metadata_as_the_protocol_has_it() -> None:
    meta = ModelMetadata(
        platform="mlkube-bandit",
        inputs=(TensorSpec("items", "BYTES", (-1,)), TensorSpec("top_k", "INT64", (1,), True)),
        outputs=(TensorSpec("scores", "FP64", (-1,)),),
        parameters={"prior_alpha": 1.0},
    )
    message = encode_model_metadata("bandit", "3", meta)
    assert (message.name, list(message.versions), message.platform) == (
        "bandit",
        ["3"],
        "mlkube-bandit",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in message.inputs] == [
        ("items", "BYTES", [-1]),
        ("top_k", "INT64", [1]),
    ]
    assert [t.name for t in message.outputs] == ["scores"]


def test_our_messages_load_beside_the_clients_copies() -> None:
    """mlkube's generated messages sit in a descriptor pool of their own: importing kserve's
    (and so tritonclient's) copy of package `inference` after them works, and the wire
    format is the same."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as theirs

    from mlkube.serving.grpc import inference_pb2 as ours

    request = ours.ModelInferRequest(model_name="bandit", id="r1")
    request.raw_input_contents.append(b"\x01\x00\x00\x00a")
    request.parameters["top_k"].int64_param = 3
    decoded = theirs.ModelInferRequest.FromString(request.SerializeToString())
    assert decoded.model_name == "bandit"
    assert decoded.raw_input_contents == [b"\x01\x00\x00\x00a"]
    assert decoded.parameters["top_k"].int64_param == 3
