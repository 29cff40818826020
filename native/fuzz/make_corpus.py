"""Write the fuzz target's seed corpus (native/fuzz/corpus/): `python3 native/fuzz/make_corpus.py`.

Seeds are small request bodies -- plain ones the C parser takes and near misses it must hand
to the Python decoder, for OIP v2 and KServe v1 -- plus doubles for mks_format_double (files
starting with "d") and binary tensor requests (files starting with "b"; see fuzz_score.c). The bodies are written out by hand below, not by a JSON
library, so that whitespace, key order, duplicates and broken syntax stay exactly as meant.
tests/unit/native/test_parse_differential.py checks that corpus/ holds what this script
writes and replays every body through the C/Python differential check. Other files in
corpus/ (inputs the fuzzer once found, kept as regressions) are left alone.
"""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().with_name("corpus")


def tensor(name: str, datatype: str, shape: str, data: str, extra: str = "") -> str:
    return f'{{"name":"{name}","datatype":"{datatype}","shape":{shape},"data":{data}{extra}}}'


ITEMS3 = tensor("items", "BYTES", "[3]", '["a","b","c"]')
SEGMENT = tensor("segment", "BYTES", "[1]", '["eu"]')
TOPK = tensor("top_k", "INT64", "[1]", "[2]")


def v2(*tensors: str, rest: str = "") -> str:
    return '{"inputs":[' + ",".join(tensors) + "]" + rest + "}"


SHORT = ",".join(f'"{i % 97}"' for i in range(150))
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x80) if chr(c) not in '"\\')
MANY = ",".join(f'"id-{i}"' for i in range(64))

# Bodies the C parser accepts (the plain shape).
PLAIN = {
    "v2-plain-minimal": v2(tensor("items", "BYTES", "[1]", '["a"]')),
    "v2-plain-all": v2(ITEMS3, SEGMENT, TOPK, rest=',"id":"req-1"'),
    "v2-plain-params": v2(ITEMS3, rest=',"parameters":{"top_k":1,"segment":"us"}'),
    "v2-plain-both": v2(ITEMS3, TOPK, SEGMENT, rest=',"parameters":{"segment":"us","top_k":9}'),
    "v2-plain-uint32": v2(tensor("top_k", "UINT32", "[1]", "[9999999999]"), ITEMS3),
    "v2-plain-int32": v2(ITEMS3, tensor("top_k", "INT32", "[1]", "[1]"), rest=',"id":""'),
    "v2-plain-uint64": v2(ITEMS3, tensor("top_k", "UINT64", "[1]", "[3]")),
    "v2-plain-order": '{"id":"x","parameters":{},"inputs":[{"data":["q","r"],"shape":[2],'
    '"datatype":"BYTES","name":"items"}]}',
    "v2-plain-whitespace": ' \t\r\n{ "inputs" : [ { "name" : "items" , "datatype" : "BYTES" ,'
    '\n"shape" : [ 2 ] , "data" : [ "a" ,\t"b" ] } ] ,\r\n"parameters" : { "top_k" : 1 } }\n',
    "v2-plain-chars": v2(tensor("items", "BYTES", "[3]", f'["","{PRINTABLE}","\x7f"]')),
    "v2-plain-long": v2(
        tensor("items", "BYTES", "[2]", '["' + "x" * 300 + '","y"]'),
        tensor("segment", "BYTES", "[1]", '["' + "s" * 128 + '"]'),
        rest=',"id":"' + "i" * 100 + '"',
    ),
    "v2-plain-many": v2(tensor("items", "BYTES", "[64]", f"[{MANY}]"), TOPK),
    "v2-plain-repeats": v2(tensor("items", "BYTES", "[4]", '["a","b","a","a"]')),
    "v2-plain-150": v2(tensor("items", "BYTES", "[150]", f"[{SHORT}]"), TOPK),
    "v1-plain-minimal": '{"instances":["a"]}',
    "v1-plain-params": '{"instances":["a","b","c"],"parameters":{"top_k":2,"segment":"eu"}}',
    "v1-plain-whitespace": '\n{ "parameters" : { } ,\t"instances" : [ "x" , "" , "y z" ] }\r\n',
    "v1-plain-many": f'{{"instances":[{MANY}]}}',
}

# Bodies it must hand to the Python decoder (valid or not, but not plain).
NEAR = {
    "v2-near-escape": v2(tensor("items", "BYTES", "[1]", '["a\\"b"]')),
    "v2-near-unicode-escape": v2(tensor("items", "BYTES", "[1]", '["\\u0061"]')),
    "v2-near-utf8": v2(tensor("items", "BYTES", "[1]", '["caf\u00e9"]')),
    "v2-near-control": v2(tensor("items", "BYTES", "[1]", '["a\tb"]')),
    "v2-near-negative": v2(ITEMS3, tensor("top_k", "INT64", "[1]", "[-1]")),
    "v2-near-fraction": v2(ITEMS3, rest=',"parameters":{"top_k":1.0}'),
    "v2-near-exponent": v2(ITEMS3, rest=',"parameters":{"top_k":1e1}'),
    "v2-near-leading-zero": v2(ITEMS3, rest=',"parameters":{"top_k":01}'),
    "v2-near-eleven-digits": v2(ITEMS3, rest=',"parameters":{"top_k":10000000000}'),
    "v2-near-zero": v2(ITEMS3, rest=',"parameters":{"top_k":0}'),
    "v2-near-duplicate-inputs": v2(ITEMS3, rest=',"inputs":[' + ITEMS3 + "]"),
    "v2-near-duplicate-param": v2(ITEMS3, rest=',"parameters":{"top_k":1,"top_k":2}'),
    "v2-near-duplicate-segment": v2(ITEMS3, rest=',"parameters":{"segment":"a","segment":"b"}'),
    "v2-near-four-tensors": v2(ITEMS3, SEGMENT, TOPK, ITEMS3),
    "v2-near-duplicate-tensor": v2(ITEMS3, ITEMS3),
    "v2-near-duplicate-field": v2(tensor("items", "BYTES", "[1]", '["a"]', ',"data":["b"]')),
    "v2-near-outputs": v2(ITEMS3, rest=',"outputs":[{"name":"scores"}]'),
    "v2-near-tensor-params": v2(tensor("items", "BYTES", "[1]", '["a"]', ',"parameters":{}')),
    "v2-near-unknown": v2(ITEMS3, rest=',"extra":1'),
    "v2-near-unknown-param": v2(ITEMS3, rest=',"parameters":{"other":true}'),
    "v2-near-nested": v2(tensor("items", "BYTES", "[1,2]", '[["a","b"]]')),
    "v2-near-shape-scalar": v2(ITEMS3, tensor("top_k", "INT64", "[]", "[2]")),
    "v2-near-shape-mismatch": v2(tensor("items", "BYTES", "[2]", '["a","b","c"]')),
    "v2-near-empty": v2(tensor("items", "BYTES", "[0]", "[]")),
    "v2-near-segment-empty": v2(ITEMS3, rest=',"parameters":{"segment":""}'),
    "v2-near-segment-long": v2(ITEMS3, rest=',"parameters":{"segment":"' + "s" * 129 + '"}'),
    "v2-near-segment-int": v2(ITEMS3, tensor("segment", "INT64", "[1]", "[5]")),
    "v2-near-segment-number": v2(ITEMS3, tensor("segment", "BYTES", "[1]", "[5]")),
    "v2-near-segment-two": v2(ITEMS3, tensor("segment", "BYTES", "[2]", '["a","b"]')),
    "v2-near-topk-string": v2(ITEMS3, tensor("top_k", "INT64", "[1]", '["2"]')),
    "v2-near-items-number": v2(tensor("items", "BYTES", "[1]", "[7]")),
    "v2-near-topk-fp32": v2(ITEMS3, tensor("top_k", "FP32", "[1]", "[2]")),
    "v2-near-topk-two": v2(ITEMS3, tensor("top_k", "INT64", "[2]", "[2,3]")),
    "v2-near-id-number": v2(ITEMS3, rest=',"id":5'),
    "v2-near-id-null": v2(ITEMS3, rest=',"id":null'),
    "v2-near-params-null": v2(ITEMS3, rest=',"parameters":null'),
    "v2-near-no-items": v2(SEGMENT),
    "v2-near-trailing-comma": v2(ITEMS3) + ",",
    "v2-near-trailing-data": v2(ITEMS3) + " x",
    "v2-near-truncated": v2(ITEMS3, SEGMENT)[:-7],
    "v2-near-bom": "\ufeff" + v2(ITEMS3),
    "v2-near-formfeed": v2(ITEMS3).replace(":", ":\f", 1),
    "v2-near-strings": '{"inputs":["a"]}',
    "v1-near-inputs": '{"inputs":["a","b"]}',
    "v1-near-empty": '{"instances":[]}',
    "v1-near-numbers": '{"instances":[1,2]}',
    "v1-near-nested": '{"instances":[["a"]]}',
    "v1-near-escape": '{"instances":["a\\/b"]}',
    "v1-near-both": '{"instances":["a"],"inputs":["b"]}',
    "v1-near-duplicate": '{"instances":["a"],"instances":["b"]}',
    "v1-near-id": '{"instances":["a"],"id":"x"}',
}

DOUBLES = [
    0.0,
    -0.0,
    1.0,
    0.5,
    0.1,
    2.0**-19,
    math.nextafter(2.0**-19, 0.0),
    1 - 2.0**-53,
    float.fromhex("0x1.274p-11"),  # an exact tie at the 18th digit
    1e-300,
    5e-324,
    1e22,
    2.0,
    math.inf,
    math.nan,
    -0.25,
]


def binary(
    items: list[bytes], top_k: bytes | None = None, datatype: str = "INT32", rest: str = ""
) -> bytes:
    """A mode 'b' seed: 'b', the JSON part's length (2 bytes, little-endian), the body."""
    raw = b"".join(struct.pack("<I", len(i)) + i for i in items)
    head = (
        '{"inputs":[{"name":"items","datatype":"BYTES","shape":[' + str(len(items)) + "],"
        '"parameters":{"binary_data_size":' + str(len(raw)) + "}}"
    )
    if top_k is not None:
        head += (
            ',{"name":"top_k","datatype":"' + datatype + '","shape":[1],'
            '"parameters":{"binary_data_size":' + str(len(top_k)) + "}}"
        )
        raw += top_k
    body = (head + "]" + rest + "}").encode()
    return b"b" + struct.pack("<H", len(body)) + body + raw


# Binary tensor requests (tritonclient's default shape) and near misses.
BINARY = {
    "b-plain-default": binary(
        [b"a", b"bb", b"ccc"],
        struct.pack("<i", 2),
        rest=',"parameters":{"binary_data_output":true}',
    ),
    "b-plain-json-answer": binary(
        [b"x", b"y"], rest=',"id":"r1","parameters":{"binary_data_output":false}'
    ),
    "b-plain-int64": binary([b"p", b"q"], struct.pack("<q", 1), datatype="INT64"),
    "b-plain-many": binary([f"id-{i}".encode() for i in range(64)], struct.pack("<I", 5), "UINT32"),
    "b-near-utf8": binary(["é".encode(), b"b"]),
    "b-near-quote": binary([b'a"b']),
    "b-near-negative": binary([b"a"], struct.pack("<i", -1)),
    "b-near-short": binary([b"a", b"b"])[:-1],
}


def seeds() -> dict[str, bytes]:
    """Every seed file this script writes, by name."""
    out = {f"{name}.json": body.encode() for name, body in {**PLAIN, **NEAR}.items()}
    out["double-edges.bin"] = b"d" + struct.pack(f"<{len(DOUBLES)}d", *DOUBLES)
    out.update({f"{name}.bin": data for name, data in BINARY.items()})
    return out


def main() -> int:
    CORPUS.mkdir(exist_ok=True)
    for name, data in seeds().items():
        (CORPUS / name).write_bytes(data)
    print(f"{len(seeds())} seeds in {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
