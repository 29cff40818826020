"""The C request parser against the Python decoder, on structured near misses of plain bodies.

The contract (native/score.h): whatever body mks_parse accepts, the Python decoder
(parse_v2_infer / parse_v1_predict + parse_query) accepts too, with the same meaning -- the
same items in order, segment, top_k (after min(top_k, n)) and id. test_request_path.py
mutates bodies as text; here a plain request is built as a small syntax tree and changed
where the plain subset ends -- string contents and escapes, non-ASCII text, numbers with
signs, fractions and exponents, duplicate keys, extra fields, nesting, shapes, datatypes,
top_k and segment as tensors or parameters or both, ids, whitespace -- so that most bodies
stay valid JSON and land on one side of the boundary or the other; some are then truncated
or given trailing bytes. The fuzz target's seed corpus (native/fuzz/corpus) is replayed
through the same check, and checked against the script that writes it.
"""

from __future__ import annotations

import importlib.util
import json
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from mlkube.native import V1, V2, V2_BINARY, BetaSampler, RequestScorer
from mlkube.serving.bandit import parse_query
from mlkube.serving.protocol import ClientError, parse_v2_infer
from tests.unit.native.decoding import HEAD, MAX_ITEMS, Meaning, native_decode, python_decode, table

ROOT = Path(__file__).resolve().parents[3]
FUZZ_DIR = ROOT / "native" / "fuzz"
CORPUS = FUZZ_DIR / "corpus"

Decoder = Callable[[RequestScorer, bytes, int], Meaning | None]

# --- a tiny JSON syntax tree: objects keep duplicate keys, Raw is written verbatim ---------


@dataclass(frozen=True)
class Raw:
    """A token written as it stands: `01`, `1e0`, `"\\u0061"`, `true` ..."""

    text: str


class Obj(list[tuple[str | Raw, Any]]):
    """A JSON object as (key, value) pairs: order kept, a key may come twice."""

    def get(self, key: str) -> Any:
        for k, v in self:
            if k == key:
                return v
        return None

    def set(self, key: str, value: Any) -> None:
        for i, (k, _) in enumerate(self):
            if k == key:
                self[i] = (k, value)
                return
        self.append((key, value))

    def __repr__(self) -> str:
        return f"Obj({list.__repr__(self)})"


def is_array(value: Any) -> bool:
    return isinstance(value, list) and not isinstance(value, Obj)


def render(value: Any, ws: Callable[[], str]) -> str:
    if isinstance(value, Raw):
        return ws() + value.text
    if isinstance(value, Obj):
        parts = [f"{render(k, ws)}{ws()}:{render(v, ws)}" for k, v in value]
        return f"{ws()}{{{','.join(parts)}{ws()}}}"
    if isinstance(value, list):
        return f"{ws()}[{','.join(render(v, ws) for v in value)}{ws()}]"
    plain = isinstance(value, str) and value.isascii() and value.isprintable()
    if plain and '"' not in value and "\\" not in value:
        return f'{ws()}"{value}"'  # what json.dumps writes, only faster
    return ws() + json.dumps(value, ensure_ascii=False)


# --- plain requests, and where they stop being plain ----------------------------------------

ID_CHARS = "abcXYZ019-_.:/ ~#{}[],"


def plain_id(rnd: random.Random) -> str:
    return "".join(rnd.choices(ID_CHARS, k=rnd.choice([0, 1, 2, 5, 8, 9, 16, 17, 40])))


def escaped(s: str, rnd: random.Random) -> Raw:
    """s with one character written as a JSON escape: the same string, not the plain form."""
    if not s:
        return Raw('"\\u0000"') if rnd.random() < 0.3 else Raw('"\\/"')
    i = rnd.randrange(len(s))
    c = s[i]
    esc = {"/": "\\/", '"': '\\"', "\\": "\\\\"}.get(c) or rnd.choice(
        [f"\\u{ord(c):04x}", f"\\u{ord(c):04X}"]
    )
    return Raw('"' + json.dumps(s[:i], ensure_ascii=False)[1:-1] + esc + json.dumps(s[i + 1 :])[1:])


ODD_STRINGS: list[Any] = [
    "caf\u00e9",  # non-ASCII, written as UTF-8
    Raw('"caf\\u00e9"'),  # the same, escaped
    "\U0001f600",
    Raw('"\\ud83d\\ude00"'),  # the same as a surrogate pair
    Raw('"\\ud800"'),  # a lone surrogate (orjson refuses it)
    "\x7f",
    Raw('"a\tb"'),  # a raw control character: not JSON
    "a\tb",  # the same, escaped by the renderer
    Raw('"a\\nb"'),
    Raw('"\\""'),
    Raw('"\\\\"'),
    "",
    "x" * 200,
    " ",
    Raw('"\udcff"'),  # the byte 0xff (surrogateescape, below): invalid UTF-8
]

NUMBERS = [
    "1",
    "2",
    "3",
    "0",
    "-1",
    "-0",
    "1.0",
    "2.5",
    "1e0",
    "1E1",
    "10e-1",
    "1e+1",
    "+1",
    "01",
    "00",
    ".5",
    "1.",
    "9999999999",
    "10000000000",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "true",
    "false",
    "null",
    '"2"',
    "[2]",
    "{}",
    "NaN",
    "Infinity",
]

SEGMENTS: list[Any] = ["eu", "s" * 128, "s" * 129, "", Raw('"\\u0065u"'), "\u00e9u", 5, None]
IDS: list[Any] = ["r-1", "", "x" * 300, 5, None, True, Raw('"\\u0041"'), "\u00e9", []]
DTYPES_INT = ["INT64", "INT32", "UINT64", "UINT32"]
DTYPES_OTHER = ["FP32", "FP64", "INT8", "UINT8", "BOOL", "int64", "BYTES", ""]
WHITESPACE = [" ", "\n", "\t", "\r", "\r\n  "]
NOT_WHITESPACE = ["\f", "\v", "\u00a0", "\u2028", "\x00"]


def tensor(name: str, datatype: str, shape: list[Any], data: list[Any]) -> Obj:
    return Obj([("name", name), ("datatype", datatype), ("shape", shape), ("data", data)])


def v2_plain(rnd: random.Random) -> Obj:
    n = (
        rnd.choice([1, 1, 2, 3, 5, 8])
        if rnd.random() < 0.9
        else rnd.choice([MAX_ITEMS - 1, MAX_ITEMS])
    )
    items = [plain_id(rnd) for _ in range(n)]
    if rnd.random() < 0.2 and n > 1:
        items[rnd.randrange(n)] = items[0]  # a repeated id
    inputs = [tensor("items", "BYTES", [n], items)]
    body = Obj([("inputs", inputs)])
    params = Obj()
    where_k = rnd.choice(["none", "tensor", "params", "both"])
    if where_k in ("tensor", "both"):
        k = Raw(rnd.choice(["1", "2", "3", "7", "64", "100", "9999999999"]))
        inputs.append(tensor("top_k", rnd.choice(DTYPES_INT), [1], [k]))
    if where_k in ("params", "both"):
        params.append(("top_k", Raw(rnd.choice(["1", "2", "5", "1000"]))))
    where_s = rnd.choice(["none", "tensor", "params", "both"])
    if where_s in ("tensor", "both"):
        inputs.append(tensor("segment", "BYTES", [1], [rnd.choice(["eu", "s-1", "x" * 128])]))
    if where_s in ("params", "both"):
        params.append(("segment", rnd.choice(["us", "p", "y" * 128])))
    if params or rnd.random() < 0.1:
        body.append(("parameters", params))
    if rnd.random() < 0.4:
        body.append(("id", rnd.choice(["r-1", "", "abc def", "x" * 50])))
    rnd.shuffle(inputs)
    return body


def v1_plain(rnd: random.Random) -> Obj:
    n = rnd.choice([1, 2, 3, 8]) if rnd.random() < 0.9 else MAX_ITEMS
    body = Obj([("instances", [plain_id(rnd) for _ in range(n)])])
    if rnd.random() < 0.5:
        params = Obj()
        if rnd.random() < 0.7:
            params.append(("top_k", Raw(rnd.choice(["1", "2", "100"]))))
        if rnd.random() < 0.5:
            params.append(("segment", rnd.choice(["eu", "z" * 128])))
        body.append(("parameters", params))
    return body


def objects(node: Any) -> list[Obj]:
    """Every object in the tree (the body, its tensors, parameters ...)."""
    found: list[Obj] = []
    if isinstance(node, Obj):
        found.append(node)
        for _, v in node:
            found.extend(objects(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(objects(v))
    return found


def string_slots(node: Any) -> list[tuple[Any, Any]]:
    """(container, index or key) of every string value (item ids, segments, ids, names)."""
    slots: list[tuple[Any, Any]] = []
    if isinstance(node, Obj):
        for i, (_, v) in enumerate(node):
            if isinstance(v, str):
                slots.append((node, i))
            slots.extend(string_slots(v))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, str):
                slots.append((node, i))
            slots.extend(string_slots(v))
    return slots


def put(container: Any, slot: Any, value: Any) -> None:
    if isinstance(container, Obj):
        container[slot] = (container[slot][0], value)
    else:
        container[slot] = value


def number_slots(node: Any) -> list[tuple[Any, Any]]:
    slots: list[tuple[Any, Any]] = []
    if isinstance(node, Obj):
        for i, (_, v) in enumerate(node):
            if isinstance(v, Raw | int) and not isinstance(v, bool):
                slots.append((node, i))
            slots.extend(number_slots(v))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, Raw | int) and not isinstance(v, bool):
                slots.append((node, i))
            slots.extend(number_slots(v))
    return slots


def tensors(body: Obj) -> list[Obj]:
    inputs = body.get("inputs")
    return [t for t in inputs if isinstance(t, Obj)] if is_array(inputs) else []


# Each mutation changes the tree in place (and may do nothing when it finds no target).


def m_string(body: Obj, rnd: random.Random) -> None:
    slots = string_slots(body)
    if slots:
        container, slot = rnd.choice(slots)
        old = container[slot][1] if isinstance(container, Obj) else container[slot]
        put(container, slot, escaped(old, rnd) if rnd.random() < 0.4 else rnd.choice(ODD_STRINGS))


def m_number(body: Obj, rnd: random.Random) -> None:
    slots = number_slots(body)
    if slots:
        container, slot = rnd.choice(slots)
        put(container, slot, Raw(rnd.choice(NUMBERS)))


def m_segment(body: Obj, rnd: random.Random) -> None:
    value = rnd.choice(SEGMENTS)
    inputs = body.get("inputs")
    if is_array(inputs) and rnd.random() < 0.5:
        inputs.append(tensor("segment", "BYTES", [1], [value]))
        return
    params = body.get("parameters")
    if not isinstance(params, Obj):
        params = Obj()
        body.set("parameters", params)
    params.set("segment", value)


def m_top_k(body: Obj, rnd: random.Random) -> None:
    value = Raw(rnd.choice(NUMBERS[:12]))
    inputs = body.get("inputs")
    if is_array(inputs) and rnd.random() < 0.5:
        dtype = rnd.choice(DTYPES_INT + DTYPES_OTHER[:2])
        inputs.append(tensor("top_k", dtype, [1], [value]))
        return
    params = body.get("parameters")
    if not isinstance(params, Obj):
        params = Obj()
        body.set("parameters", params)
    params.set("top_k", value)


def m_id(body: Obj, rnd: random.Random) -> None:
    body.set("id", rnd.choice(IDS))


def m_duplicate_key(body: Obj, rnd: random.Random) -> None:
    obj = rnd.choice(objects(body))
    if obj:
        key, value = rnd.choice(list(obj))
        if rnd.random() < 0.5:  # the same key again, with the same or another value
            value = rnd.choice([value, "other", Raw("1"), [], Obj()])
        obj.insert(rnd.randrange(len(obj) + 1), (key, value))


def m_extra_field(body: Obj, rnd: random.Random) -> None:
    obj = rnd.choice(objects(body))
    key = rnd.choice(["parameters", "outputs", "extra", "id", "name", "x" * 20])
    value = rnd.choice([Obj(), Obj([("x", 1)]), [Obj([("name", "scores")])], 1, None, "s"])
    obj.insert(rnd.randrange(len(obj) + 1), (key, value))


def m_nest(body: Obj, rnd: random.Random) -> None:
    ts = tensors(body)
    if not ts:
        instances = body.get("instances")
        if is_array(instances) and instances:
            body.set("instances", rnd.choice([[instances], [[x] for x in instances]]))
        return
    t = rnd.choice(ts)
    data, shape = t.get("data"), t.get("shape")
    if not is_array(data) or not is_array(shape) or not shape:
        return
    choice = rnd.randrange(4)
    if choice == 0:
        t.set("data", [data])
        t.set("shape", [1, *shape] if rnd.random() < 0.7 else shape)
    elif choice == 1:
        t.set("data", [[x] for x in data])
        t.set("shape", [*shape, 1] if rnd.random() < 0.7 else shape)
    elif choice == 2:
        t.set("shape", [shape])
    else:
        t.set("data", [*data, data[:1]])


def m_shape(body: Obj, rnd: random.Random) -> None:
    ts = tensors(body)
    if ts:
        t = rnd.choice(ts)
        shape = t.get("shape")
        n = shape[0] if is_array(shape) and shape and isinstance(shape[0], int) else 1
        t.set("shape", rnd.choice([[], [n + 1], [max(n - 1, 0)], [n, 1], [1, n], [-n], [0]]))


def m_datatype(body: Obj, rnd: random.Random) -> None:
    ts = tensors(body)
    if ts:
        rnd.choice(ts).set("datatype", rnd.choice(DTYPES_INT + DTYPES_OTHER))


def m_drop(body: Obj, rnd: random.Random) -> None:
    obj = rnd.choice(objects(body))
    if obj:
        del obj[rnd.randrange(len(obj))]


def m_retype(body: Obj, rnd: random.Random) -> None:
    obj = rnd.choice(objects(body))
    if obj:
        i = rnd.randrange(len(obj))
        obj[i] = (obj[i][0], rnd.choice([None, Obj(), [], "s", Raw("1"), Raw("true")]))


def m_many_items(body: Obj, rnd: random.Random) -> None:
    n = rnd.choice([0, 1, MAX_ITEMS, MAX_ITEMS + 1, 2 * MAX_ITEMS])
    items = [plain_id(rnd) for _ in range(n)]
    ts = [t for t in tensors(body) if t.get("name") == "items"]
    if ts:
        ts[0].set("data", items)
        ts[0].set("shape", [n])
    elif "instances" in dict(body):
        body.set("instances", items)


def m_protocol(body: Obj, rnd: random.Random) -> None:
    """v2's tensors in a v1 body or the other way round."""
    if "instances" in dict(body):
        body.insert(0, ("inputs", [tensor("items", "BYTES", [1], ["a"])]))
    else:
        body.append(("instances", ["a"]))


MUTATIONS = [
    m_string,
    m_string,
    m_number,
    m_number,
    m_segment,
    m_top_k,
    m_id,
    m_duplicate_key,
    m_extra_field,
    m_nest,
    m_shape,
    m_datatype,
    m_drop,
    m_retype,
    m_many_items,
    m_protocol,
]


def shuffled(node: Any, rnd: random.Random) -> Any:
    """The same tree with every object's keys and the inputs' tensors in random order."""
    if isinstance(node, Obj):
        pairs = [(k, shuffled(v, rnd)) for k, v in node]
        rnd.shuffle(pairs)
        return Obj(pairs)
    if isinstance(node, list):
        return [shuffled(v, rnd) for v in node]
    return node


def body_bytes(tree: Obj, rnd: random.Random) -> bytes:
    odd_ws = rnd.random() < 0.05

    def ws() -> str:
        if rnd.random() < 0.7:
            return ""
        if odd_ws and rnd.random() < 0.1:
            return rnd.choice(NOT_WHITESPACE)
        return rnd.choice(WHITESPACE)

    text = render(tree, ws) + ws()
    data = text.encode("utf-8", "surrogateescape")
    cut = rnd.random()
    if cut < 0.05:
        data = data[: rnd.randrange(len(data))]
    elif cut < 0.08:
        data += rnd.choice([b",", b" x", b"}", b"]", b"\x00", b"{}", b" \n"])
    elif cut < 0.1:
        data = b"\xef\xbb\xbf" + data
    return data


def generate(protocol: int, count: int, seed: int) -> Iterator[bytes]:
    rnd = random.Random(seed)
    make = v2_plain if protocol == V2 else v1_plain
    for _ in range(count):
        tree = make(rnd)
        for _ in range(rnd.choice([0, 0, 1, 1, 1, 2, 3])):
            rnd.choice(MUTATIONS)(tree, rnd)
        yield body_bytes(shuffled(tree, rnd), rnd)


# --- the check -------------------------------------------------------------------------------


def check(scorer: RequestScorer, body: bytes, protocol: int, fast_decode: Decoder) -> str:
    """Hold the two decoders against each other (same item limit); returns the outcome."""
    fast = fast_decode(scorer, body, protocol)
    slow = python_decode(body, protocol, scorer.max_items)
    if fast is None:
        return "declined" if slow is not None else "rejected"
    assert body.isascii(), body  # plain: ASCII ...
    assert b"\\" not in body, body  # ... without escapes
    orjson.loads(body)  # only complete, valid JSON
    assert slow == fast, (body, slow, fast)
    return "accepted"


COUNTS = {V2: 6000, V1: 2500}


@pytest.mark.parametrize("protocol", [V2, V1], ids=["v2", "v1"])
def test_what_the_c_parser_accepts_means_the_same_to_the_python_decoder(protocol: int) -> None:
    scorer = RequestScorer(MAX_ITEMS, BetaSampler(1))
    outcomes = {"accepted": 0, "declined": 0, "rejected": 0}
    for body in generate(protocol, COUNTS[protocol], seed=100 + protocol):
        outcomes[check(scorer, body, protocol, native_decode)] += 1
    # All three outcomes in earnest: the boundary is probed from both sides.
    total = COUNTS[protocol]
    assert outcomes["accepted"] > total // 5, outcomes
    assert outcomes["declined"] > total // 20, outcomes
    assert outcomes["rejected"] > total // 5, outcomes


# Wrong decoders, each a bug the C parser could have: the bodies above must expose every one.


def _prefers_parameters(scorer: RequestScorer, body: bytes, protocol: int) -> Meaning | None:
    """top_k from the request parameters even when a top_k tensor gives one."""
    meaning = native_decode(scorer, body, protocol)
    if meaning is None:
        return None
    k = orjson.loads(body).get("parameters", {}).get("top_k")
    return (meaning[0], meaning[1], min(k, len(meaning[0])), meaning[3]) if k else meaning


def _drops_the_id(scorer: RequestScorer, body: bytes, protocol: int) -> Meaning | None:
    meaning = native_decode(scorer, body, protocol)
    return None if meaning is None else (meaning[0], meaning[1], meaning[2], None)


def _segment_from_parameters(scorer: RequestScorer, body: bytes, protocol: int) -> Meaning | None:
    meaning = native_decode(scorer, body, protocol)
    if meaning is None:
        return None
    segment = orjson.loads(body).get("parameters", {}).get("segment")
    return (meaning[0], segment or meaning[1], meaning[2], meaning[3])


def _first_duplicate_wins(scorer: RequestScorer, body: bytes, protocol: int) -> Meaning | None:
    """Takes a plain v1 body whose only key is "instances", twice, reading the first."""
    meaning = native_decode(scorer, body, protocol)
    if meaning is not None or not body.isascii() or b"\\" in body:
        return meaning
    try:
        pairs = json.loads(body, object_pairs_hook=list)
    except ValueError:
        return None
    if not isinstance(pairs, list) or [k for k, _ in pairs] != ["instances", "instances"]:
        return None
    first = pairs[0][1]
    if isinstance(first, list) and first and all(isinstance(x, str) for x in first):
        return first, "default", len(first), None
    return None


@pytest.mark.parametrize(
    ("protocol", "wrong"),
    [
        (V2, _prefers_parameters),
        (V2, _drops_the_id),
        (V2, _segment_from_parameters),
        (V1, _first_duplicate_wins),
    ],
    ids=["top_k-from-parameters", "id-dropped", "segment-from-parameters", "first-duplicate"],
)
def test_the_check_catches_a_parser_that_reads_differently(protocol: int, wrong: Decoder) -> None:
    scorer = RequestScorer(MAX_ITEMS, BetaSampler(1))
    for body in generate(protocol, COUNTS[protocol], seed=100 + protocol):
        try:
            check(scorer, body, protocol, wrong)
        except AssertionError:
            return
    pytest.fail(f"{wrong.__name__}: no generated body tells it from the real parser")


# --- the fuzz target's seed corpus -----------------------------------------------------------


def _corpus_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_corpus", FUZZ_DIR / "make_corpus.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_seeds_are_what_the_script_writes() -> None:
    seeds: dict[str, bytes] = _corpus_script().seeds()
    assert len(seeds) > 40
    for name, data in seeds.items():
        path = CORPUS / name
        assert path.is_file(), f"{path} missing: run python3 native/fuzz/make_corpus.py"
        assert path.read_bytes() == data, f"{path} is stale: run python3 native/fuzz/make_corpus.py"


def test_every_corpus_body_passes_the_differential_check() -> None:
    """Replays corpus/ (script seeds and any kept fuzzer finds) through both decoders."""
    scorer = RequestScorer(4096, BetaSampler(1))  # the fuzz target's bodies have no item limit
    accepted: dict[str, list[str]] = {"v2": [], "v1": []}
    files = sorted(p for p in CORPUS.iterdir() if p.is_file())
    bodies = 0
    for path in files:
        data = path.read_bytes()
        if data[:1].isalpha() and data[:1].islower():  # another fuzz mode (see fuzz_score.c)
            continue
        bodies += 1
        for protocol, name in ((V2, "v2"), (V1, "v1")):
            if check(scorer, data, protocol, native_decode) == "accepted":
                accepted[name].append(path.stem)
    assert bodies > 40
    # The seeds say which side of the boundary they are on.
    for name in ("v2", "v1"):
        plain = {p.stem for p in files if p.stem.startswith(f"{name}-plain-")}
        near = {p.stem for p in files if "-near-" in p.stem}
        assert plain
        assert plain <= set(accepted[name]), plain - set(accepted[name])
        assert not near & set(accepted[name]), near & set(accepted[name])


# --- binary tensor requests ------------------------------------------------------------------

BinaryMeaning = tuple[Meaning, bool]  # and: are the outputs binary?


def _raw_bytes(values: list[bytes]) -> bytes:
    return b"".join(len(v).to_bytes(4, "little") + v for v in values)


def binary_case(rnd: random.Random) -> tuple[bytes, int]:
    """A binary request near tritonclient's default shape, often nudged off it; returns the
    body and the JSON part's length (the header's value)."""
    pool = [b"a", b"id-7", b"x" * 40, b"", "é".encode(), b'q"', b"b\\", b"\x7f", b"\x01", b"\xff"]
    odd = rnd.random() < 0.3  # one request in three or so carries an id C must not take
    ids = [rnd.choice(pool if odd else pool[:4]) for _ in range(rnd.randint(1, 8))]
    inputs: list[dict[str, Any]] = []
    raw = b""
    items: dict[str, Any] = {"name": "items", "datatype": "BYTES", "shape": [len(ids)]}
    if rnd.random() < 0.85:
        data = _raw_bytes(ids)
        items["parameters"] = {"binary_data_size": len(data)}
        raw += data
    else:
        items["data"] = [i.decode("latin-1") for i in ids]
    inputs.append(items)
    params: dict[str, Any] = {}
    if rnd.random() < 0.6:
        dtype, fmt = rnd.choice(
            [("INT32", "<i"), ("INT64", "<q"), ("UINT32", "<I"), ("UINT64", "<Q")]
        )
        value = rnd.choice([1, 2, 3, 100, 0, -1 if fmt.islower() else 7, 2**31 - 1])
        data = struct.pack(fmt, value)
        if rnd.random() < 0.1:
            data = data[:-1]
        inputs.append(
            {
                "name": "top_k",
                "datatype": dtype,
                "shape": [1],
                "parameters": {"binary_data_size": len(data)},
            }
        )
        raw += data
    elif rnd.random() < 0.3:
        params["top_k"] = rnd.choice([1, 2, 0])
    if rnd.random() < 0.3:
        seg = rnd.choice([b"eu", b"", b"s" * 129, "ü".encode()])
        data = _raw_bytes([seg])
        inputs.append(
            {
                "name": "segment",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": len(data)},
            }
        )
        raw += data
    if rnd.random() < 0.7:
        params["binary_data_output"] = rnd.choice([True, True, False, 1, "true"])
    if rnd.random() < 0.3 and inputs[0].get("parameters"):
        inputs[0]["parameters"]["binary_data_size"] += rnd.choice([-1, 1])
    rnd.shuffle(inputs)
    body: dict[str, Any] = {"inputs": inputs}
    if params:
        body["parameters"] = params
    if rnd.random() < 0.3:
        body["id"] = rnd.choice(["r1", "", "é"])
    head = json.dumps(body, separators=rnd.choice([(",", ":"), (", ", ": ")])).encode()
    whole = head + raw
    json_len = len(head)
    roll = rnd.random()
    if roll < 0.05:
        whole = whole[:-1]
    elif roll < 0.1:
        whole += b"\x00"
    elif roll < 0.15:
        json_len += rnd.choice([-1, 1])
    return whole, json_len


def python_binary(body: bytes, json_len: int, max_items: int) -> BinaryMeaning | None:
    try:
        request = parse_v2_infer(body, max_items, str(json_len))
        query = parse_query(request, "default", max_items, 256)
    except ClientError:
        return None
    binary = bool(request.binary_outputs(["scores", "ranking"]))
    return (query.items, query.segment, query.top_k, request.id), binary


def native_binary(scorer: RequestScorer, body: bytes, json_len: int) -> BinaryMeaning | None:
    if not scorer.parse_binary(body, json_len):
        return None
    segment = scorer.segment(body) or "default"
    top_k, request_id = scorer.top_k, scorer.request_id(body)
    scorer.score(body, table([]), V2_BINARY, HEAD)
    assert scorer.n_missing == scorer.n_items
    meaning = (scorer.missing(body), segment, top_k, request_id)
    return meaning, scorer.binary_json_length is not None


def test_what_the_c_parser_accepts_in_binary_means_the_same_to_the_python_decoder() -> None:
    scorer = RequestScorer(MAX_ITEMS, BetaSampler(1))
    rnd = random.Random(7)
    outcomes = {"accepted": 0, "declined": 0, "rejected": 0}
    for _ in range(4000):
        body, json_len = binary_case(rnd)
        fast = native_binary(scorer, body, json_len)
        slow = python_binary(body, json_len, MAX_ITEMS)
        if fast is None:
            outcomes["declined" if slow is not None else "rejected"] += 1
            continue
        outcomes["accepted"] += 1
        orjson.loads(body[:json_len])  # the JSON part is complete, valid JSON
        assert slow == fast, (body, json_len, slow, fast)
    assert outcomes["accepted"] > 400, outcomes
    assert outcomes["declined"] > 200, outcomes
    assert outcomes["rejected"] > 400, outcomes


def test_binary_corpus_seeds_land_on_their_side() -> None:
    scorer = RequestScorer(4096, BetaSampler(1))
    seen = 0
    for path in sorted(CORPUS.glob("b-*.bin")):
        data = path.read_bytes()
        json_len = int.from_bytes(data[1:3], "little")
        body = data[3:]
        fast = native_binary(scorer, body, json_len)
        slow = python_binary(body, json_len, 4096)
        if fast is not None:
            assert slow == fast, path.name
        assert (fast is not None) == ("-plain-" in path.name), path.name
        seen += 1
    assert seen >= 6
