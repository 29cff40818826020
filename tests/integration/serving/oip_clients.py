"""The official OIP v2 gRPC clients, used with their defaults against a running server.

``python oip_clients.py triton|kserve HOST:PORT`` prints one JSON object of what the client
saw. Each client runs in a process of its own: tritonclient, kserve and mlkube each register
the protocol's messages (package ``inference``) in protobuf's default descriptor pool under
their own file name, and protobuf refuses a second definition in one process.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np


def triton(target: str) -> dict[str, Any]:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(url=target)
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("bandit"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "model_metadata": client.get_model_metadata("bandit", as_json=True),
    }
    items = tc.InferInput("items", [4], "BYTES")
    items.set_data_from_numpy(np.array([b"a", b"b", b"c", "\u00e9".encode()], dtype=np.object_))
    top_k = tc.InferInput("top_k", [1], "INT64")
    top_k.set_data_from_numpy(np.array([2], dtype=np.int64))
    result = client.infer(
        "bandit",
        [items, top_k],
        outputs=[tc.InferRequestedOutput("ranking"), tc.InferRequestedOutput("scores")],
        request_id="triton-1",
    )
    response = result.get_response(as_json=True)
    out["infer"] = {
        "id": response.get("id"),
        "outputs": [o["name"] for o in response["outputs"]],
        "ranking": [v.decode() for v in result.as_numpy("ranking").tolist()],
        "scores": result.as_numpy("scores").tolist(),
    }
    # a parameter instead of the top_k input, every output
    result = client.infer("bandit", [items], parameters={"top_k": 1})
    out["infer_parameter"] = [v.decode() for v in result.as_numpy("ranking").tolist()]

    errors: dict[str, Any] = {}
    bad = tc.InferInput("items", [2], "INT64")
    bad.set_data_from_numpy(np.array([1, 2], dtype=np.int64))
    for name, call in [
        ("bad_input", lambda: client.infer("bandit", [bad])),
        ("unknown_model", lambda: client.infer("nope", [items])),
        (
            "unknown_output",
            lambda: client.infer("bandit", [items], outputs=[tc.InferRequestedOutput("nope")]),
        ),
        ("unknown_model_ready", lambda: client.is_model_ready("nope")),
    ]:
        try:
            call()
        except InferenceServerException as exc:
            errors[name] = {"status": exc.status(), "message": exc.message()}
        else:
            errors[name] = None
    out["errors"] = errors
    client.close()
    return out


async def _kserve(target: str) -> dict[str, Any]:
    import grpc
    from kserve import InferenceGRPCClient, InferInput, InferRequest
    from kserve.protocol.infer_type import RequestedOutput

    async with InferenceGRPCClient(url=target) as client:
        out: dict[str, Any] = {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready("bandit"),
        }
        # raw (numpy) items, as set_data_from_numpy sends them
        items = InferInput("items", [3], "BYTES")
        items.set_data_from_numpy(np.array([b"a", b"b", b"c"], dtype=np.object_))
        request = InferRequest(
            "bandit",
            [items],
            request_id="kserve-1",
            parameters={"top_k": 2},
            request_outputs=[RequestedOutput("ranking")],
        )
        response = await client.infer(request)
        ranking = response.outputs[0]
        out["infer_raw"] = {
            "id": response.id,
            "outputs": [o.name for o in response.outputs],
            "ranking": [
                v.decode() if isinstance(v, bytes) else v for v in ranking.as_numpy().tolist()
            ],
        }
        # typed contents (a list, not numpy)
        typed = InferInput("items", [2], "BYTES", data=["x", "y"])
        response = await client.infer(InferRequest("bandit", [typed]))
        out["infer_typed"] = {
            o.name: [v.decode() if isinstance(v, bytes) else v for v in o.as_numpy().tolist()]
            for o in response.outputs
        }
        errors: dict[str, Any] = {}
        for name, req in [
            ("bad_input", InferRequest("bandit", [InferInput("items", [1], "INT64", data=[1])])),
            ("unknown_model", InferRequest("nope", [typed])),
        ]:
            try:
                await client.infer(req)
            except grpc.aio.AioRpcError as exc:
                errors[name] = {"code": exc.code().name, "details": exc.details()}
            else:
                errors[name] = None
        out["errors"] = errors
        return out


def main(argv: list[str]) -> int:
    which, target = argv
    result = triton(target) if which == "triton" else asyncio.run(_kserve(target))
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
