"""The C request path (native/score.h) against the Python decoder it must agree with.

The C parser accepts only a plain subset of requests and hands everything else back to the
Python path. The contract tested here: whatever it accepts, the Python decoder accepts too,
with the same items, segment, top_k and id; and its answers are what render_v2/render_v1
would write for the same scores.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import orjson
import pytest

from mlkube import native
from mlkube.native import V1, V2, BetaSampler, ItemTable, RequestScorer
from tests.unit.native.decoding import HEAD, MAX_ITEMS, native_decode, python_decode, table

# --- a corpus of requests: plain ones, unusual-but-valid ones, and broken ones ---------------

ID_CHARS = "abcXYZ019-_.:/ ~#"


def _random_id(rnd: random.Random) -> str:
    n = rnd.choice([0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 30])
    return "".join(rnd.choice(ID_CHARS) for _ in range(n))


def _ws(rnd: random.Random) -> str:
    return rnd.choice(["", "", "", " ", "\n", "\t", "\r\n  "])


def _render(value: Any, rnd: random.Random) -> str:
    """JSON with random whitespace between tokens (key order as given)."""
    if isinstance(value, dict):
        parts = [f"{_ws(rnd)}{json.dumps(k)}{_ws(rnd)}:{_render(v, rnd)}" for k, v in value.items()]
        return f"{_ws(rnd)}{{{','.join(parts)}{_ws(rnd)}}}"
    if isinstance(value, list):
        return f"{_ws(rnd)}[{','.join(_render(v, rnd) for v in value)}{_ws(rnd)}]"
    return _ws(rnd) + json.dumps(value)


def _shuffled(d: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
    keys = list(d)
    rnd.shuffle(keys)
    return {k: d[k] for k in keys}


def _v2_request(rnd: random.Random) -> dict[str, Any]:
    n = rnd.choice([1, 2, 5, MAX_ITEMS - 1, MAX_ITEMS, MAX_ITEMS + 1])
    items = [_random_id(rnd) for _ in range(n)]
    inputs = [{"name": "items", "datatype": "BYTES", "shape": [n], "data": items}]
    body: dict[str, Any] = {}
    if rnd.random() < 0.3:
        seg = rnd.choice(["s1", "", "x" * 128, "x" * 129, 5])
        inputs.append({"name": "segment", "datatype": "BYTES", "shape": [1], "data": [seg]})
    if rnd.random() < 0.3:
        k = rnd.choice([1, 3, 1000, 0, 10**12, 2.5, True])
        dt = rnd.choice(["INT64", "INT32", "UINT64", "UINT32", "FP32"])
        inputs.append({"name": "top_k", "datatype": dt, "shape": [1], "data": [k]})
    rnd.shuffle(inputs)
    body["inputs"] = [_shuffled(t, rnd) for t in inputs]
    if rnd.random() < 0.4:
        params: dict[str, Any] = {}
        if rnd.random() < 0.7:
            params["top_k"] = rnd.choice([2, 7, 0, -1])
        if rnd.random() < 0.5:
            params["segment"] = rnd.choice(["p", "pp" * 3, ""])
        if rnd.random() < 0.1:
            params["other"] = 1
        body["parameters"] = params
    if rnd.random() < 0.3:
        body["id"] = rnd.choice(["req-1", "", None, 7])
    if rnd.random() < 0.05:
        body["outputs"] = [{"name": "scores"}]
    return _shuffled(body, rnd)


def _v1_request(rnd: random.Random) -> dict[str, Any]:
    n = rnd.choice([0, 1, 4, MAX_ITEMS, MAX_ITEMS + 1])
    body: dict[str, Any] = {"instances": [_random_id(rnd) for _ in range(n)]}
    if rnd.random() < 0.4:
        body["parameters"] = {"top_k": rnd.choice([1, 3, 0])}
    if rnd.random() < 0.05:
        body["inputs"] = []
    return _shuffled(body, rnd)


MUTATIONS = [
    '"',
    "\\",
    ",",
    "]",
    "}",
    "[",
    "{",
    ":",
    "0",
    "-",
    ".",
    "e",
    " ",
    "\x01",
    "é",
    "\\u0041",
]


def _mutate(text: str, rnd: random.Random) -> str:
    data = text
    for _ in range(rnd.choice([1, 1, 2, 3])):
        i = rnd.randrange(len(data) + 1)
        op = rnd.random()
        if op < 0.4:
            data = data[:i] + rnd.choice(MUTATIONS) + data[i:]
        elif op < 0.7:
            data = data[:i] + data[i + 1 :]
        elif op < 0.85:
            data = data[:i]
        else:  # repeat a slice: duplicate keys and values
            j = rnd.randrange(len(data) + 1)
            lo, hi = min(i, j), max(i, j)
            data = data[:hi] + data[lo:hi] + data[hi:]
    return data


def corpus(protocol: int, count: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    make = _v2_request if protocol == V2 else _v1_request
    bodies = []
    for _ in range(count):
        text = _render(make(rnd), rnd)
        if rnd.random() < 0.4:
            text = _mutate(text, rnd)
        bodies.append(text.encode("utf-8", "surrogatepass"))
    return bodies


@pytest.mark.parametrize("protocol", [V2, V1], ids=["v2", "v1"])
def test_whatever_the_c_parser_accepts_the_python_decoder_reads_the_same(protocol: int) -> None:
    scorer = RequestScorer(MAX_ITEMS, BetaSampler(1))
    accepted = declined_valid = rejected = 0
    for body in corpus(protocol, 6000, seed=protocol):
        fast = native_decode(scorer, body, protocol)
        slow = python_decode(body, protocol)
        if fast is not None:
            orjson.loads(body)  # only complete, valid JSON is accepted
            assert slow == fast, body
            accepted += 1
        elif slow is not None:
            declined_valid += 1  # unusual but valid: the Python path answers it
        else:
            rejected += 1
    # The corpus exercises all three outcomes in earnest.
    assert accepted > 1000
    assert declined_valid > 300
    assert rejected > 1000


def test_plain_requests_are_accepted() -> None:
    scorer = RequestScorer(MAX_ITEMS, BetaSampler(1))
    v2 = {
        "id": "r-9",
        "inputs": [
            {"name": "items", "datatype": "BYTES", "shape": [3], "data": ["a", "b", "c"]},
            {"name": "segment", "datatype": "BYTES", "shape": [1], "data": ["eu"]},
            {"name": "top_k", "datatype": "INT64", "shape": [1], "data": [2]},
        ],
        "parameters": {"top_k": 1, "segment": "us"},  # the tensors win
    }
    body = orjson.dumps(v2)
    assert native_decode(scorer, body, V2) == (["a", "b", "c"], "eu", 2, "r-9")
    assert native_decode(scorer, body, V2) == python_decode(body, V2)
    v1 = orjson.dumps({"instances": ["x", "y"], "parameters": {"top_k": 5}})
    assert native_decode(scorer, v1, V1) == (["x", "y"], "default", 2, None)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"inputs":[{"name":"items","datatype":"BYTES","shape":[1],"data":["\\u0061"]}]}',
        '{"inputs":[{"name":"items","datatype":"BYTES","shape":[1],"data":["é"]}]}'.encode(),
        b'{"inputs":[{"name":"items","datatype":"BYTES","shape":[1],"data":["a"]}],}',
        b'{"inputs":[{"name":"items","datatype":"BYTES","shape":[1],"data":["a"]}]} x',
        b'{"inputs":[{"name":"items","datatype":"BYTES","shape":[0],"data":[]}]}',
    ],
    ids=[
        "empty",
        "no-inputs",
        "escape",
        "non-ascii",
        "trailing-comma",
        "trailing-data",
        "no-items",
    ],
)
def test_unusual_requests_go_to_the_python_path(body: bytes) -> None:
    scorer = RequestScorer(MAX_ITEMS, BetaSampler(1))
    assert not scorer.parse(body, V2)


def _expected_ranking(items: list[str], scores: list[float], k: int) -> list[str]:
    order = sorted(range(len(items)), key=lambda i: (-scores[i], i))
    return [items[i] for i in order[:k]]


@pytest.mark.parametrize("top_k", [None, 1, 3, 40])
def test_answers_match_what_the_python_renderer_writes(top_k: int | None) -> None:
    rnd = random.Random(3)
    known = [f"item-{i}" for i in range(30)]
    tab = table(known, [float(rnd.randrange(1, 50)) for _ in known])
    scorer = RequestScorer(MAX_ITEMS, BetaSampler(5))
    items = [rnd.choice([*known, "new-1", "new-2"]) for _ in range(40)]  # repeats, unknowns
    params = {} if top_k is None else {"parameters": {"top_k": top_k}}
    v2 = {"inputs": [{"name": "items", "datatype": "BYTES", "shape": [40], "data": items}]}
    body = orjson.dumps({**v2, **params, "id": "q"})
    assert scorer.parse(body, V2)
    text = scorer.score(body, tab, V2, HEAD)
    answer = orjson.loads(text)
    k = 40 if top_k is None else min(top_k, 40)
    scores = answer["outputs"][0]["data"]
    assert list(answer) == ["model_name", "model_version", "outputs", "id"]
    assert answer["outputs"] == [
        {"name": "scores", "datatype": "FP64", "shape": [40], "data": scores},
        {
            "name": "ranking",
            "datatype": "BYTES",
            "shape": [k],
            "data": _expected_ranking(items, scores, k),
        },
    ]
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("bandit", "1", "q")
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert sorted(set(scorer.missing(body))) == sorted({"new-1", "new-2"} & set(items))

    v1 = orjson.dumps({"instances": items, **params})
    assert scorer.parse(v1, V1)
    out = orjson.loads(scorer.score(v1, tab, V1))
    assert list(out) == ["predictions", "ranking"]
    assert out["ranking"] == _expected_ranking(items, out["predictions"], k)


def test_scores_come_from_each_items_posterior() -> None:
    # Beta(1e6, 1) is ~1 and Beta(1, 1e6) ~0: the scores must line up with the ids.
    items = ["hi", "lo"]
    tab = ItemTable(items, np.array([1e6, 1.0, 1.0]), np.array([1.0, 1e6, 1.0]))
    scorer = RequestScorer(8, BetaSampler(2))
    body = orjson.dumps({"instances": ["lo", "hi", "lo", "other"]})
    assert scorer.parse(body, V1)
    out = orjson.loads(scorer.score(body, tab, V1))
    lo, hi, lo2, prior = out["predictions"]
    assert hi > 0.999
    assert lo < 0.001
    assert lo2 < 0.001
    assert 0.0 <= prior <= 1.0
    assert out["ranking"][0] == "hi"
    assert out["ranking"][-2:] == ["lo", "lo"]


def test_invalid_posterior_parameters_are_an_error_not_an_answer() -> None:
    tab = ItemTable(["a", "b"], np.array([1.0, 0.0, 1.0]), np.ones(3))
    scorer = RequestScorer(8, BetaSampler(2))
    body = orjson.dumps({"instances": ["a", "b"]})
    assert scorer.parse(body, V1)
    with pytest.raises(ValueError, match="row 1 has invalid posterior parameters"):
        scorer.score(body, tab, V1)


def test_item_table_finds_every_id_and_only_those() -> None:
    items = [f"id-{i}" for i in range(20_000)] + ["", "é", "a" * 300]
    tab = table(items)
    assert len(tab) == len(items)
    assert all(tab.find(item) == row for row, item in enumerate(items))
    assert tab.find("id-20000") == -1
    assert tab.find("id-1 ") == -1
    assert table(["x", "y", "x"]).find("x") == 2  # the last row, as dict(zip(...)) has it
    queries = ["id-5", "nope", "é", "", "a" * 300, "id-19999", "\ud800"]
    assert tab.rows_of(queries).tolist() == [tab.find(q) for q in queries]
    assert tab.rows_of(queries).tolist() == [5, -1, 20_001, 20_000, 20_002, 19_999, -1]
    assert tab.rows_of([]).tolist() == []
    assert "é" in tab
    assert "nope" not in tab
    with pytest.raises(ValueError, match="need 3 rows"):
        ItemTable(["a", "b"], np.ones(2), np.ones(3))


def test_scores_are_written_so_they_read_back_exactly() -> None:
    rnd = random.Random(11)
    values = [rnd.random() ** rnd.choice([1, 2, 8, 40]) for _ in range(50_000)]
    values += [0.0, 1.0, 0.1, 2.0**-19, math.nextafter(2.0**-19, 0), 1 - 2.0**-53, 1e-300, 5e-324]
    for x in values:
        text = native.format_double(x)
        assert float(text) == x, (x, text)
        assert orjson.loads(text) == x
    assert native.format_double(0.5) == "0.5"
    assert native.format_double(0.0) == "0.0"
    assert native.format_double(1.0) == "1.0"
    assert native.format_double(float("nan")) == "null"


def test_scorer_refuses_a_score_without_a_parse() -> None:
    scorer = RequestScorer(8, BetaSampler(2))
    assert not scorer.parse(b"{}", V2)
    with pytest.raises(ValueError, match="without a successful parse"):
        scorer.score(b"{}", table(["a"]), V2, HEAD)
    with pytest.raises(ValueError, match="max_items"):
        RequestScorer(0, BetaSampler(2))
