"""What the C request parser and the Python decoder each make of a body, in the same terms.

Shared by the tests that hold the two against each other (test_request_path.py,
test_parse_differential.py).
"""

from __future__ import annotations

import numpy as np

from mlkube.native import V2, ItemTable, RequestScorer
from mlkube.serving.bandit import parse_query
from mlkube.serving.protocol import ClientError, parse_v1_predict, parse_v2_infer

MAX_ITEMS = 64
HEAD = b'{"model_name":"bandit","model_version":"1",'

#: (items, segment, top_k, id): a request's meaning for the bandit.
Meaning = tuple[list[str], str, int, str | None]


def table(items: list[str], alpha: list[float] | None = None) -> ItemTable:
    n = len(items)
    a = np.array([*(alpha or [1.0] * n), 1.0])
    return ItemTable(items, a, np.ones(n + 1))


def python_decode(body: bytes, protocol: int, max_items: int = MAX_ITEMS) -> Meaning | None:
    """What the Python path makes of a body: (items, segment, top_k, id), or None (4xx)."""
    try:
        if protocol == V2:
            request = parse_v2_infer(body, max_items)
        else:
            request = parse_v1_predict(body, "items", "BYTES", max_items)
        query = parse_query(request, "default", max_items, 256)
    except ClientError:
        return None
    return query.items, query.segment, query.top_k, request.id


def native_decode(scorer: RequestScorer, body: bytes, protocol: int) -> Meaning | None:
    """The same through the C parser; the items come back as the ids an empty table misses."""
    if not scorer.parse(body, protocol):
        return None
    segment = scorer.segment(body) or "default"
    top_k, request_id = scorer.top_k, scorer.request_id(body)
    scorer.score(body, table([]), protocol, HEAD)
    assert scorer.n_missing == scorer.n_items
    return scorer.missing(body), segment, top_k, request_id
