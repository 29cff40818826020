"""OIP v2 over gRPC on the real `mlkube serve` (master + workers).

* stubs generated from our own .proto, grpc.health.v1, metrics, uvloop, and no gRPC in the
  master process;
* the official clients with their defaults: tritonclient[grpc] and kserve's
  InferenceGRPCClient (each in a process of its own, see oip_clients.py);
* readiness and SIGTERM: health NOT_SERVING before the model loads and from the start of the
  drain, calls in flight finish, the process exits 0;
* our .proto against the protocol as those clients ship it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mlkube.serving.grpc import inference_pb2 as pb
from mlkube.serving.grpc import inference_pb2_grpc as pb_grpc
from mlkube.serving.metrics import FLUSH_INTERVAL
from mlkube.serving.protocol import tensor_from_raw
from tests.integration.serving.conftest import children

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
Input = pb.ModelInferRequest.InferInputTensor
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "inference.GRPCInferenceService"


def health_status(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def outputs(response: pb.ModelInferResponse) -> dict[str, Any]:
    return {
        o.name: tensor_from_raw(o.name, o.datatype, tuple(o.shape), raw, o.name).data
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def raw_bytes(*items: bytes) -> bytes:
    return b"".join(len(i).to_bytes(4, "little") + i for i in items)


def last_json_line(*args: str) -> dict[str, Any]:
    """Run a Python of its own with ``args``; the JSON object on its last line of output."""
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_client(which: str, target: str) -> dict[str, Any]:
    return last_json_line(str(HERE / "oip_clients.py"), which, target)


def loads_grpc(pid: int) -> bool:
    """Whether a process has gRPC's native core mapped (i.e. imported grpc)."""
    return "cygrpc" in Path(f"/proc/{pid}/maps").read_text()


def test_our_stubs_against_the_real_server(serve: Any) -> None:
    server = serve("--workers", "2")
    with grpc.insecure_channel(server.grpc_target) as channel:
        wait_for(lambda: health_status(channel) == SERVING, what="gRPC health SERVING")
        assert health_status(channel, SERVICE) == SERVING
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name="bandit", version="1")).ready
        assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "mlkube"
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="bandit"))
        assert [t.name for t in meta.outputs] == ["scores", "ranking"]

        request = pb.ModelInferRequest(
            model_name="bandit",
            id="ours-1",
            inputs=[Input(name="items", datatype="BYTES", shape=[3])],
            raw_input_contents=[raw_bytes(b"a", b"b", b"c")],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="ranking")],
        )
        request.parameters["top_k"].int64_param = 2
        answer = stub.ModelInfer(request)
        assert answer.id == "ours-1"
        ranking = outputs(answer)["ranking"]
        assert len(ranking) == 2
        assert set(ranking) <= {"a", "b", "c"}

        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(pb.ModelInferRequest(model_name="nope"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(
                pb.ModelInferRequest(
                    model_name="bandit", inputs=[Input(name="items", datatype="TEXT", shape=[1])]
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("inputs[0].datatype: expected one of BOOL")

    # counted with REST's metrics, summed over the workers
    time.sleep(FLUSH_INTERVAL * 3)
    status, body = server.get("/metrics")
    assert status == 200
    metrics = body.decode()
    assert 'code="200",endpoint="grpc_infer",model="bandit",revision="",version="1"} 1.0' in metrics
    assert 'code="404",endpoint="grpc_infer"' in metrics
    assert 'code="400",endpoint="grpc_infer"' in metrics

    # every worker serves gRPC on uvloop; the master never imported grpc (it forks workers)
    def listening() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        return [entry for entry in lines if entry["msg"] == "gRPC listening"]

    # readiness needs one worker; on a busy machine the other may still be starting
    wait_for(lambda: len(listening()) == 2, what="both workers listening for gRPC")
    assert {entry["loop"] for entry in listening()} == {"uvloop"}
    assert not loads_grpc(server.proc.pid)
    workers = children(server.proc.pid)
    assert len(workers) == 2
    assert all(loads_grpc(pid) for pid in workers)


def test_tritonclient_with_its_defaults(serve: Any) -> None:
    server = serve("--workers", "1")
    got = run_client("triton", server.grpc_target)
    assert (got["live"], got["ready"], got["model_ready"]) == (True, True, True)
    assert got["server_metadata"]["name"] == "mlkube"
    meta = got["model_metadata"]
    assert (meta["name"], meta["versions"], meta["platform"]) == ("bandit", ["1"], "mlkube-bandit")
    assert [i["name"] for i in meta["inputs"]] == ["items", "segment", "top_k"]
    infer = got["infer"]
    assert infer["id"] == "triton-1"
    assert infer["outputs"] == ["ranking", "scores"]  # the order asked for
    assert len(infer["ranking"]) == 2
    assert set(infer["ranking"]) <= {"a", "b", "c", "\u00e9"}
    assert len(infer["scores"]) == 4
    assert all(0.0 <= s <= 1.0 for s in infer["scores"])
    assert len(got["infer_parameter"]) == 1
    errors = got["errors"]
    assert errors["bad_input"] == {
        "status": "StatusCode.INVALID_ARGUMENT",
        "message": "inputs[0].datatype: items must be BYTES, got INT64",
    }
    assert errors["unknown_model"]["status"] == "StatusCode.NOT_FOUND"
    assert errors["unknown_model"]["message"].startswith("name: model 'nope' is not served here")
    assert errors["unknown_output"] == {
        "status": "StatusCode.INVALID_ARGUMENT",
        "message": "outputs[0].name: no output 'nope' (outputs: scores, ranking)",
    }
    assert errors["unknown_model_ready"]["status"] == "StatusCode.NOT_FOUND"


def test_kserve_client_with_its_defaults(serve: Any) -> None:
    server = serve("--workers", "1")
    got = run_client("kserve", server.grpc_target)
    assert (got["live"], got["ready"], got["model_ready"]) == (True, True, True)
    raw = got["infer_raw"]
    assert raw["id"] == "kserve-1"
    assert raw["outputs"] == ["ranking"]
    assert len(raw["ranking"]) == 2
    assert set(raw["ranking"]) <= {"a", "b", "c"}
    typed = got["infer_typed"]
    assert sorted(typed["ranking"]) == ["x", "y"]
    assert len(typed["scores"]) == 2
    assert got["errors"]["bad_input"] == {
        "code": "INVALID_ARGUMENT",
        "details": "inputs[0].datatype: items must be BYTES, got INT64",
    }
    assert got["errors"]["unknown_model"]["code"] == "NOT_FOUND"


def test_health_follows_readiness_and_sigterm_drains_grpc(serve: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    config = tmp_path / "serve.yaml"
    config.write_text(
        json.dumps(
            {
                "model": {
                    "name": "gated",
                    "format": "custom",
                    "class": "tests.support.gated_model:GatedModel",
                    "parameters": {"gate": str(gate)},
                },
                "server": {"drain_seconds": 1.0, "grace_seconds": 10},
            }
        )
    )
    server = serve("--workers", "1", "--config", str(config), ready=False)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        wait_for(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=2).live, what="live")
        assert health_status(channel) == NOT_SERVING
        assert health_status(channel, SERVICE) == NOT_SERVING
        assert not stub.ModelReady(pb.ModelReadyRequest(name="gated")).ready
        assert server.get("/v2/health/ready")[0] == 503

        gate.touch()
        wait_for(lambda: health_status(channel) == SERVING, what="SERVING after the load")
        assert health_status(channel, SERVICE) == SERVING

        slow = pb.ModelInferRequest(
            model_name="gated",
            inputs=[Input(name="x", datatype="FP64", shape=[2])],
            raw_input_contents=[np.array([1.0, 2.5]).tobytes()],
        )
        slow.parameters["sleep_ms"].int64_param = 1800
        answers: list[Any] = []
        call = threading.Thread(target=lambda: answers.append(stub.ModelInfer(slow, timeout=30)))
        call.start()
        time.sleep(0.3)  # the call is in the model now
        server.terminate()
        # from the start of the drain: NOT_SERVING while the worker still answers
        wait_for(lambda: health_status(channel) == NOT_SERVING, timeout=0.8, what="NOT_SERVING")
        assert health_status(channel, SERVICE) == NOT_SERVING
        assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=2).ready
        call.join(timeout=30)
        assert len(answers) == 1, "the call in flight was not answered"
        assert outputs(answers[0])["y"].tolist() == [2.0, 5.0]
    assert server.wait(timeout=30) == 0
    log = server.log()
    assert "Traceback" not in log


# Run in a process of its own per module: the protocol's messages can be defined once per
# process (see oip_clients.py).
LAYOUT = """
import importlib, json, sys


def layout(messages, prefix=""):
    out = {}
    for desc in messages:
        name = prefix + desc.name
        out[name] = {
            f.name: [
                f.number,
                f.type,
                f.is_repeated,
                f.message_type.full_name if f.message_type else None,
            ]
            for f in desc.fields
        }
        out.update(layout(desc.nested_types, name + "."))
    return out


file = importlib.import_module(sys.argv[1]).DESCRIPTOR
service = file.services_by_name["GRPCInferenceService"]
print(json.dumps({
    "package": file.package,
    "messages": layout(file.message_types_by_name.values()),
    "methods": {m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods},
}))
"""


def layout_of(module: str) -> dict[str, Any]:
    return last_json_line("-c", LAYOUT, module)


@pytest.mark.parametrize(
    "module", ["tritonclient.grpc.service_pb2", "kserve.protocol.grpc.grpc_predict_v2_pb2"]
)
def test_our_proto_matches_the_clients_own(module: str) -> None:
    """Every message, field (number, type, repeated, message type) and method of ours is in
    the client's copy of the protocol, the same; only kserve's lacks the two newer
    InferParameter choices."""
    ours = layout_of("mlkube.serving.grpc.inference_pb2")
    theirs = layout_of(module)
    assert theirs["package"] == ours["package"] == "inference"
    assert len(ours["methods"]) == 6
    for method, types in ours["methods"].items():
        assert theirs["methods"][method] == types
    missing_ok = {("InferParameter", "double_param"), ("InferParameter", "uint64_param")}
    for message, fields in ours["messages"].items():
        for field, layout in fields.items():
            if module.startswith("kserve") and (message, field) in missing_ok:
                assert field not in theirs["messages"][message]
                continue
            assert theirs["messages"][message][field] == layout, (message, field)


def test_grpc_port_in_use_fails_at_start_naming_the_field(serve: Any) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = serve("--host", "127.0.0.1", "--grpc-port", str(port), ready=False)
        assert server.wait(30) == 2
        assert f"server.grpc_port: cannot listen on 127.0.0.1:{port}" in server.log()


def test_grpc_port_zero_turns_grpc_off(serve: Any) -> None:
    server = serve("--workers", "1", "--grpc-port", "0")
    assert server.get("/v2/health/ready")[0] == 200
    assert "gRPC listening" not in server.log()
    assert not any(loads_grpc(pid) for pid in children(server.proc.pid))
