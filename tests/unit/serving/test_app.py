"""Handlers through aiohttp's test client: protocols, errors, feedback, readiness, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pytest

from mlkube.serving.store import F64, MemoryStore, SegmentCounts


def v2(items: list[Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [{"name": "items", "datatype": "BYTES", "shape": [len(items)], "data": items}]
    }
    body.update(extra)
    return body


INFER = "/v2/models/bandit/infer"
PREDICT = "/v1/models/bandit:predict"
FEEDBACK = "/v1/models/bandit:feedback"


async def test_health_and_metadata(client: Any) -> None:
    assert (await client.get("/v2/health/live")).status == 200
    resp = await client.get("/v2/health/ready")
    assert resp.status == 200
    assert await resp.json() == {"ready": True}
    meta = await (await client.get("/v2")).json()
    assert meta["name"] == "mlkube"
    model = await (await client.get("/v2/models/bandit")).json()
    assert model["name"] == "bandit"
    assert model["versions"] == ["1"]
    assert [i["name"] for i in model["inputs"]] == ["items", "segment", "top_k"]
    assert (await client.get("/v2/models/bandit/versions/1")).status == 200
    assert (await (await client.get("/v2/models/bandit/ready")).json())["ready"] is True
    assert (await client.get("/v1/models/bandit")).status == 200
    assert await (await client.get("/v1/models")).json() == {"models": ["bandit"]}


async def test_v2_infer_scores_every_item_and_ranks_them(client: Any) -> None:
    items = [f"item-{i}" for i in range(50)]
    resp = await client.post(INFER, data=orjson.dumps(v2(items, id="req-1")))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    body = await resp.json()
    assert body["model_name"] == "bandit"
    assert body["model_version"] == "1"
    assert body["id"] == "req-1"
    scores, ranking = body["outputs"]
    assert scores["name"] == "scores"
    assert scores["datatype"] == "FP64"
    assert scores["shape"] == [50]
    assert all(0.0 <= s <= 1.0 for s in scores["data"])
    assert ranking["name"] == "ranking"
    assert sorted(ranking["data"]) == sorted(items)
    by_item = dict(zip(items, scores["data"], strict=True))
    ranked_scores = [by_item[i] for i in ranking["data"]]
    assert ranked_scores == sorted(ranked_scores, reverse=True)
    assert "Mlkube-Degraded" not in resp.headers


async def test_top_k_from_parameters_and_from_an_input(client: Any) -> None:
    items = [f"i{i}" for i in range(20)]
    body = v2(items, parameters={"top_k": 3})
    out = await (await client.post(INFER, data=orjson.dumps(body))).json()
    assert out["outputs"][1]["shape"] == [3]
    assert len(out["outputs"][1]["data"]) == 3
    assert out["outputs"][0]["shape"] == [20]
    body = v2(items)
    body["inputs"].append({"name": "top_k", "datatype": "INT64", "shape": [1], "data": [5]})
    out = await (await client.post(INFER, data=orjson.dumps(body))).json()
    assert len(out["outputs"][1]["data"]) == 5
    # top_k above the number of items ranks them all
    body = v2(items[:4], parameters={"top_k": 100})
    out = await (await client.post(INFER, data=orjson.dumps(body))).json()
    assert len(out["outputs"][1]["data"]) == 4


async def test_versioned_infer_path(client: Any) -> None:
    resp = await client.post("/v2/models/bandit/versions/1/infer", data=orjson.dumps(v2(["a"])))
    assert resp.status == 200


async def test_v1_predict(client: Any) -> None:
    resp = await client.post(
        PREDICT, data=orjson.dumps({"instances": ["a", "b", "c"], "parameters": {"top_k": 2}})
    )
    assert resp.status == 200
    body = await resp.json()
    assert len(body["predictions"]) == 3
    assert len(body["ranking"]) == 2


async def test_feedback_changes_the_ranking(client: Any) -> None:
    """After many rewards for one item and none for the others it is ranked first."""
    items = ["good", "bad1", "bad2", "bad3"]
    fb = [{"item": "good", "reward": 1.0}] * 200 + [
        {"item": i, "reward": 0.0} for i in items[1:] for _ in range(200)
    ]
    resp = await client.post(FEEDBACK, data=orjson.dumps({"feedback": fb}))
    assert resp.status == 200
    assert await resp.json() == {"accepted": len(fb), "duplicate": False, "unattributed": "missing"}
    for _ in range(100):  # the memory store refreshes the snapshot right after a write
        body = await (await client.post(PREDICT, data=orjson.dumps({"instances": items}))).json()
        if body["ranking"][0] == "good":
            break
        await asyncio.sleep(0.01)
    wins = 0
    for _ in range(20):
        body = await (await client.post(PREDICT, data=orjson.dumps({"instances": items}))).json()
        wins += body["ranking"][0] == "good"
    assert wins == 20


async def test_feedback_per_segment(client: Any) -> None:
    fb = {"feedback": [{"item": "x", "reward": 1}] * 300, "segment": "eu"}
    assert (await client.post(FEEDBACK, data=orjson.dumps(fb))).status == 200
    fb = {"feedback": [{"item": "y", "reward": 0}] * 300, "segment": "eu"}
    assert (await client.post(FEEDBACK, data=orjson.dumps(fb))).status == 200
    await asyncio.sleep(0.05)
    body = {"instances": ["y", "x"], "parameters": {"segment": "eu"}}
    out = await (await client.post(PREDICT, data=orjson.dumps(body))).json()
    assert out["ranking"] == ["x", "y"]
    assert out["predictions"][1] > 0.9
    assert out["predictions"][0] < 0.1


async def test_idempotent_feedback_counts_once(client: Any, state_of: Any) -> None:
    fb = orjson.dumps({"feedback": [{"item": "k", "reward": 1}], "idempotency_key": "abc"})
    first = await (await client.post(FEEDBACK, data=fb)).json()
    second = await (await client.post(FEEDBACK, data=fb)).json()
    assert first == {"accepted": 1, "duplicate": False, "unattributed": "missing"}
    assert second == {"accepted": 1, "duplicate": True, "unattributed": "missing"}
    header = await client.post(
        FEEDBACK,
        data=orjson.dumps({"feedback": [{"item": "k", "reward": 1}]}),
        headers={"Idempotency-Key": "abc"},
    )
    assert (await header.json())["duplicate"] is True
    store = state_of(client).model.store.store
    counts = (await store.read_segments(["default"]))["default"]
    assert counts is not None
    assert counts.items == ["k"]
    assert counts.successes.tolist() == [1.0]


# --- every bad-input case: status and an error naming the field ---------------------------

BAD_INFER: list[tuple[bytes, int, str]] = [
    (b"{not json", 400, "body: malformed JSON"),
    (b"", 400, "body: empty"),
    (b"[1, 2]", 400, "body: expected a JSON object"),
    (orjson.dumps({"inputs": []}), 400, "inputs:"),
    (orjson.dumps({"input": []}), 400, "input: unknown field"),
    (orjson.dumps({"inputs": [5]}), 400, "inputs[0]: expected a JSON object"),
    (
        orjson.dumps(
            {"inputs": [{"name": "items", "datatype": "FP64", "shape": [1], "data": [1]}]}
        ),
        400,
        "inputs[0].datatype: items must be BYTES",
    ),
    (
        orjson.dumps(
            {"inputs": [{"name": "items", "datatype": "STR", "shape": [1], "data": ["a"]}]}
        ),
        400,
        "inputs[0].datatype: expected one of",
    ),
    (
        orjson.dumps(
            {"inputs": [{"name": "items", "datatype": "BYTES", "shape": [2], "data": ["a"]}]}
        ),
        400,
        "inputs[0].data: 1 elements do not match shape [2]",
    ),
    (
        orjson.dumps(
            {"inputs": [{"name": "items", "datatype": "BYTES", "shape": [-1], "data": ["a"]}]}
        ),
        400,
        "inputs[0].shape",
    ),
    (
        orjson.dumps(
            {
                "inputs": [
                    {"name": "items", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]}
                ]
            }
        ),
        400,
        "inputs[0].shape: items must be one-dimensional",
    ),
    (
        orjson.dumps(
            {"inputs": [{"name": "items", "datatype": "BYTES", "shape": [2], "data": ["a", 3]}]}
        ),
        400,
        "inputs[0].data: item ids must be strings",
    ),
    (
        orjson.dumps(
            {"inputs": [{"name": "things", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}
        ),
        400,
        "inputs[0].name: unknown input 'things'",
    ),
    (
        orjson.dumps(
            {"inputs": [{"name": "segment", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}
        ),
        400,
        "inputs: missing input 'items'",
    ),
    (
        orjson.dumps({**v2(["a"]), "parameters": {"top_k": 0}}),
        400,
        "parameters.top_k: top_k must be a positive integer",
    ),
    (
        orjson.dumps({**v2(["a"]), "parameters": {"top_k": "3"}}),
        400,
        "parameters.top_k",
    ),
    (
        orjson.dumps({**v2(["a"]), "parameters": {"segment": ""}}),
        400,
        "parameters.segment",
    ),
    (orjson.dumps({**v2(["a"]), "parameters": []}), 400, "parameters: expected a JSON object"),
    (orjson.dumps({**v2(["a"]), "id": 5}), 400, "id: expected a string"),
    (
        orjson.dumps(
            {
                "inputs": [
                    {"name": f"t{i}", "datatype": "BYTES", "shape": [1], "data": ["a"]}
                    for i in range(65)
                ]
            }
        ),
        400,
        "inputs: 65 tensors, at most 64",
    ),
    (
        orjson.dumps(
            {
                "inputs": [
                    {"name": "items", "datatype": "BYTES", "shape": [1], "data": ["a"]},
                    {"name": "items", "datatype": "BYTES", "shape": [1], "data": ["b"]},
                ]
            }
        ),
        400,
        "inputs[1].name: duplicate input",
    ),
    (
        orjson.dumps(
            {
                "inputs": [
                    {"name": "items", "datatype": "BYTES", "shape": [1], "data": ["a"]},
                    {"name": "top_k", "datatype": "FP32", "shape": [1], "data": [2]},
                ]
            }
        ),
        400,
        "inputs[1].datatype: top_k must be an integer type",
    ),
    (
        orjson.dumps(
            {
                "inputs": [
                    {"name": "items", "datatype": "BYTES", "shape": [1], "data": ["a"]},
                    {"name": "top_k", "datatype": "INT64", "shape": [2], "data": [2, 3]},
                ]
            }
        ),
        400,
        "inputs[1].shape: top_k must have shape [1]",
    ),
    (
        orjson.dumps(
            {
                "inputs": [
                    {"name": "items", "datatype": "BYTES", "shape": [1], "data": ["a"], "x": 1}
                ]
            }
        ),
        400,
        "inputs[0].x: unknown field",
    ),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_INFER)
async def test_bad_infer_requests(client: Any, body: bytes, status: int, message: str) -> None:
    resp = await client.post(INFER, data=body)
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("application/json")
    error = (await resp.json())["error"]
    assert error.startswith(message), error


BAD_PREDICT: list[tuple[bytes, int, str]] = [
    (b"nope", 400, "body: malformed JSON"),
    (orjson.dumps({"instances": "a"}), 400, "instances: required, an array"),
    (orjson.dumps({"instance": ["a"]}), 400, "instance: unknown field"),
    (orjson.dumps({"instances": [1, 2]}), 400, "instances.data: item ids must be strings"),
    (orjson.dumps({"instances": [["a"]]}), 400, "instances.data: item ids must be strings"),
    (
        orjson.dumps({"instances": ["a"], "parameters": {"top_k": -1}}),
        400,
        "parameters.top_k",
    ),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_PREDICT)
async def test_bad_predict_requests(client: Any, body: bytes, status: int, message: str) -> None:
    resp = await client.post(PREDICT, data=body)
    assert resp.status == status
    error = (await resp.json())["error"]
    assert error.startswith(message), error


BAD_FEEDBACK: list[tuple[bytes, dict[str, str], int, str]] = [
    (b"{", {}, 400, "body: malformed JSON"),
    (orjson.dumps({"feedback": []}), {}, 400, "feedback: required"),
    (orjson.dumps({"feedback": [5]}), {}, 400, "feedback[0]: expected an object"),
    (orjson.dumps({"feedback": [{"item": "a"}]}), {}, 400, "feedback[0].reward"),
    (orjson.dumps({"feedback": [{"item": "a", "reward": 1.5}]}), {}, 400, "feedback[0].reward"),
    (orjson.dumps({"feedback": [{"item": "a", "reward": -0.1}]}), {}, 400, "feedback[0].reward"),
    (orjson.dumps({"feedback": [{"item": "a", "reward": True}]}), {}, 400, "feedback[0].reward"),
    (orjson.dumps({"feedback": [{"item": "a", "reward": "1"}]}), {}, 400, "feedback[0].reward"),
    (orjson.dumps({"feedback": [{"item": 3, "reward": 1}]}), {}, 400, "feedback[0].item"),
    (
        orjson.dumps({"feedback": [{"item": "a", "reward": 1}, {"item": "", "reward": 1}]}),
        {},
        400,
        "feedback[1].item",
    ),
    (
        orjson.dumps({"feedback": [{"item": "a", "reward": 1, "w": 2}]}),
        {},
        400,
        "feedback[0].w: unknown field",
    ),
    (orjson.dumps({"feedback": [{"item": "a", "reward": 1}], "segment": 4}), {}, 400, "segment"),
    (
        orjson.dumps({"feedback": [{"item": "a", "reward": 1}], "idempotency_key": ""}),
        {},
        400,
        "idempotency_key",
    ),
    (
        orjson.dumps({"feedback": [{"item": "a", "reward": 1}], "idempotency_key": "x"}),
        {"Idempotency-Key": "y"},
        400,
        "idempotency_key: differs",
    ),
    (orjson.dumps({"items": ["a"]}), {}, 400, "items: unknown field"),
]


@pytest.mark.parametrize(("body", "headers", "status", "message"), BAD_FEEDBACK)
async def test_bad_feedback_requests(
    client: Any, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    resp = await client.post(FEEDBACK, data=body, headers=headers)
    assert resp.status == status
    error = (await resp.json())["error"]
    assert error.startswith(message), error


async def test_too_many_items_is_422(make_client: Any, config: Any) -> None:
    client = await make_client(config(bandit={"max_items": 10}))
    resp = await client.post(INFER, data=orjson.dumps(v2([f"i{i}" for i in range(11)])))
    assert resp.status == 422
    assert (await resp.json())["error"].startswith("inputs[0].shape: 11 elements exceed")
    resp = await client.post(PREDICT, data=orjson.dumps({"instances": ["a"] * 11}))
    assert resp.status == 422
    assert (await resp.json())["error"].startswith("instances: 11 instances exceed")
    fb = {"feedback": [{"item": "a", "reward": 1}] * 11}
    resp = await client.post(FEEDBACK, data=orjson.dumps(fb))
    assert resp.status == 422
    assert (await resp.json())["error"].startswith("feedback: 11 entries exceed")
    assert (await client.post(INFER, data=orjson.dumps(v2(["a"] * 10)))).status == 200


async def test_body_over_the_limit_is_413(make_client: Any, config: Any) -> None:
    client = await make_client(config(server={"max_body_bytes": 2048}))
    big = orjson.dumps(v2([f"item-{i:05d}" for i in range(400)]))
    resp = await client.post(INFER, data=big)
    assert resp.status == 413
    assert (await resp.json())["error"].startswith("body:")

    async def chunks() -> Any:  # no Content-Length: the limit applies while reading
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    resp = await client.post(INFER, data=chunks())
    assert resp.status == 413
    assert (await resp.json())["error"].startswith("body:")


async def test_unknown_model_version_and_path_are_404(client: Any) -> None:
    resp = await client.post("/v2/models/other/infer", data=orjson.dumps(v2(["a"])))
    assert resp.status == 404
    assert (await resp.json())["error"].startswith("name: model 'other'")
    resp = await client.post("/v2/models/bandit/versions/9/infer", data=orjson.dumps(v2(["a"])))
    assert resp.status == 404
    assert (await resp.json())["error"].startswith("version:")
    resp = await client.post("/v1/models/other:predict", data=b"{}")
    assert resp.status == 404
    assert (await resp.json())["error"].startswith("name:")
    resp = await client.post("/v1/models/other:feedback", data=b"{}")
    assert resp.status == 404
    assert (await client.get("/v2/models/other")).status == 404
    assert (await client.get("/v2/models/bandit/versions/2")).status == 404
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert (await resp.json())["error"] == "path: no endpoint /nowhere"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", INFER, "POST"),
        ("PUT", PREDICT, "POST"),
        ("GET", FEEDBACK, "POST"),
        ("DELETE", "/v2/health/ready", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("POST", "/v2/models/bandit", "GET, HEAD"),
    ],
)
async def test_wrong_method_is_405(client: Any, method: str, path: str, allow: str) -> None:
    resp = await client.request(method, path)
    assert resp.status == 405
    assert resp.headers["Allow"] == allow
    assert (await resp.json())["error"].startswith(f"method: {method} is not allowed")


async def test_metrics_endpoint(client: Any) -> None:
    await client.post(INFER, data=orjson.dumps(v2(["a", "b"])))
    await client.post(INFER, data=b"{")
    text = await (await client.get("/metrics")).text()
    assert (
        'mlkube_requests_total{code="200",endpoint="infer",model="bandit",revision="",version="1"} 1.0'
        in text
    )
    assert 'mlkube_requests_total{code="400",endpoint="infer"' in text
    assert 'mlkube_items_scored_total{model="bandit",revision="",version="1"} 2.0' in text
    assert "mlkube_request_duration_seconds_bucket" in text
    assert 'mlkube_inflight_requests{model="bandit",revision=""} 0.0' in text
    assert "mlkube_feature_store_staleness_seconds" in text
    assert 'mlkube_feature_store_staleness_bound_seconds{model="bandit",revision=""} 5.0' in text
    assert 'mlkube_circuit_state{model="bandit",revision=""} 0.0' in text


class FlakyStore(MemoryStore):
    """A memory store whose connection can be cut (unit-test stand-in for an outage)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("connection refused")

    async def read_segments(
        self, segments: Sequence[str], known: Mapping[str, str] | None = None
    ) -> dict[str, SegmentCounts | None]:
        self._check()
        return await super().read_segments(segments, known)

    async def read_items(self, segment: str, items: Sequence[str]) -> SegmentCounts:
        self._check()
        return await super().read_items(segment, items)

    async def add_feedback(
        self, segment: str, items: Sequence[str], s: F64, f: F64, key: str | None
    ) -> bool:
        self._check()
        return await super().add_feedback(segment, items, s, f, key)


async def test_store_outage_degrades_predictions_and_refuses_feedback(
    make_client: Any, config: Any
) -> None:
    store = FlakyStore()
    await store.add_feedback("default", ["a"], np.array([50.0]), np.array([0.0]), None)
    cfg = config(
        feature_store={"refresh_interval": 0.05, "max_staleness": 0.2, "circuit_reset_timeout": 0.2}
    )
    client = await make_client(cfg, store=store)
    fb = orjson.dumps({"feedback": [{"item": "a", "reward": 1}]})
    store.down = True
    resp = await client.post(FEEDBACK, data=fb)
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"].startswith("feature store:")
    for _ in range(3):  # open the circuit
        await client.post(FEEDBACK, data=fb)
    resp = await client.post(PREDICT, data=orjson.dumps({"instances": ["a", "b"]}))
    assert resp.status == 200
    assert resp.headers["Mlkube-Degraded"] == "feature-store-unavailable"
    body = await resp.json()
    assert body["predictions"][0] > 0.8  # still served from the last snapshot
    text = await (await client.get("/metrics")).text()
    assert 'mlkube_circuit_state{model="bandit",revision=""} 1.0' in text
    assert "mlkube_degraded_responses_total" in text
    assert "mlkube_feature_store_errors_total" in text
    store.down = False
    for _ in range(200):
        resp = await client.post(PREDICT, data=orjson.dumps({"instances": ["a"]}))
        if "Mlkube-Degraded" not in resp.headers:
            break
        await asyncio.sleep(0.02)
    assert "Mlkube-Degraded" not in resp.headers
    assert (await client.post(FEEDBACK, data=fb)).status == 200


async def test_not_ready_until_the_first_snapshot_is_read(make_client: Any, config: Any) -> None:
    store = FlakyStore()
    store.down = True
    cfg = config(feature_store={"refresh_interval": 0.05, "circuit_reset_timeout": 0.05})
    client = await make_client(cfg, store=store, ready=False)
    await asyncio.sleep(0.2)
    assert (await client.get("/v2/health/ready")).status == 503
    assert (await client.get("/v2/health/live")).status == 200
    resp = await client.post(PREDICT, data=orjson.dumps({"instances": ["a"]}))
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    store.down = False
    for _ in range(100):
        if (await client.get("/v2/health/ready")).status == 200:
            break
        await asyncio.sleep(0.02)
    assert (await client.get("/v2/health/ready")).status == 200


async def test_readiness_turns_false_when_draining(client: Any, state_of: Any) -> None:
    state_of(client).draining = True
    assert (await client.get("/v2/health/ready")).status == 503
    assert (await client.get("/v2/models/bandit/ready")).status == 503
    # still serving while draining
    assert (await client.post(PREDICT, data=orjson.dumps({"instances": ["a"]}))).status == 200


async def test_batching_answers_each_request_with_its_own_items(
    make_client: Any, config: Any
) -> None:
    client = await make_client(
        config(batching={"enabled": True, "max_batch_size": 8, "max_delay": 0.005})
    )

    async def one(i: int) -> None:
        items = [f"r{i}-{j}" for j in range(i + 1)]
        body = await (await client.post(PREDICT, data=orjson.dumps({"instances": items}))).json()
        assert sorted(body["ranking"]) == sorted(items)
        assert len(body["predictions"]) == i + 1

    await asyncio.gather(*(one(i) for i in range(24)))
    text = await (await client.get("/metrics")).text()
    count = [line for line in text.splitlines() if line.startswith("mlkube_batch_size_count")]
    total = [line for line in text.splitlines() if line.startswith("mlkube_batch_size_sum")]
    assert float(total[0].split()[-1]) == 24.0
    assert float(count[0].split()[-1]) < 24  # some requests shared a batch


async def test_access_log_is_off_by_default_and_sampled_when_asked(
    make_client: Any, config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="mlkube.serving.access")
    quiet = await make_client()
    await quiet.post(PREDICT, data=orjson.dumps({"instances": ["a"]}))
    assert not [r for r in caplog.records if r.name == "mlkube.serving.access"]
    loud = await make_client(config(server={"access_log_sample_rate": 1.0}))
    await loud.post(PREDICT, data=orjson.dumps({"instances": ["a"]}))
    records = [r for r in caplog.records if r.name == "mlkube.serving.access"]
    assert len(records) >= 1
    entry = records[-1]
    assert entry.path == "/v1/models/bandit:predict"  # type: ignore[attr-defined]
    assert entry.status == 200  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/models/bandit:predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS hello
    ],
)
async def test_malformed_http_is_a_4xx_and_the_server_lives_on(client: Any, raw: bytes) -> None:
    """Bytes that are not HTTP are refused by aiohttp's parser (its own text/plain 400)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(raw)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.split()[1] == b"400"
    assert (await client.post(PREDICT, data=orjson.dumps({"instances": ["a"]}))).status == 200


# ------------------------------------------------------------------ the HTTP edge


@pytest.mark.parametrize(
    "path", ["/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/bandit", "/metrics"]
)
async def test_head_answers_like_get_without_a_body(client: Any, path: str) -> None:
    get = await client.get(path)
    head = await client.head(path)
    assert head.status == get.status == 200
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert await head.read() == b""


async def test_kserve_v1_server_liveness_at_the_root(client: Any) -> None:
    """kserve's InferenceRESTClient.is_server_live does GET / (v1)."""
    resp = await client.get("/")
    assert resp.status == 200
    assert await resp.json() == {"status": "alive"}


async def test_requested_outputs_only_and_in_the_order_asked(client: Any) -> None:
    body = v2(["a", "b"], outputs=[{"name": "ranking"}])
    out = await (await client.post(INFER, data=orjson.dumps(body))).json()
    assert [o["name"] for o in out["outputs"]] == ["ranking"]
    both = v2(["a", "b"], outputs=[{"name": "ranking"}, {"name": "scores"}])
    out = await (await client.post(INFER, data=orjson.dumps(both))).json()
    assert [o["name"] for o in out["outputs"]] == ["ranking", "scores"]


@pytest.mark.parametrize(
    ("outputs", "error"),
    [
        ([{"name": "nope"}], "outputs[0].name: no output 'nope' (outputs: scores, ranking)"),
        ([{"name": "scores"}, {"name": "scores"}], "outputs[1].name: duplicate output 'scores'"),
        ([{"nam": "scores"}], "outputs[0].nam: unknown field"),
        ([{}], "outputs[0].name: required, a string"),
        ({"name": "scores"}, "outputs: expected an array"),
    ],
)
async def test_bad_requested_outputs_are_400s_naming_them(
    client: Any, outputs: Any, error: str
) -> None:
    resp = await client.post(INFER, data=orjson.dumps(v2(["a"], outputs=outputs)))
    assert resp.status == 400
    assert (await resp.json())["error"].startswith(error)


async def test_gzip_bodies_are_decoded_and_bad_encodings_refused(client: Any) -> None:
    import gzip

    body = orjson.dumps({"instances": ["a", "b"]})
    ok = await client.post(PREDICT, data=gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert ok.status == 200
    # Plain JSON labelled gzip: the client's mistake, a 400 that says so, not a 500.
    bad = await client.post(PREDICT, data=body, headers={"Content-Encoding": "gzip"})
    assert bad.status == 400
    assert (await bad.json())["error"].startswith("body: cannot be decoded as gzip")
    assert bad.headers.get("Connection", "").lower() == "close"
    unknown = await client.post(PREDICT, data=body, headers={"Content-Encoding": "zzz"})
    assert unknown.status == 415
    assert (await unknown.json())["error"] == (
        "Content-Encoding: 'zzz' is not supported (use gzip, deflate, identity)"
    )
    # The server is fine afterwards.
    assert (await client.post(PREDICT, data=body)).status == 200
