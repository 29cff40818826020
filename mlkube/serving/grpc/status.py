"""Pure: the gRPC status of an error that the REST API would answer with an HTTP status.

One table serves both protocols, so a failure has one meaning whichever way it arrived:
the handlers raise :class:`~mlkube.serving.protocol.ClientError` with an HTTP status, REST
sends that status, gRPC sends the code below with the same message as details. A client
error (4xx) never maps to INTERNAL. The mapping follows the HTTP column of
``google.rpc.Code`` where one exists.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

_BY_HTTP: dict[int, grpc.StatusCode] = {
    200: grpc.StatusCode.OK,
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    # gRPC itself answers RESOURCE_EXHAUSTED for a message over the receive limit.
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

RETRY_AFTER_KEY = "retry-after"
#: gRPC's own retry pushback (gRFC A6): a client with a retry policy waits this long.
PUSHBACK_KEY = "grpc-retry-pushback-ms"


def status_code(http_status: int) -> grpc.StatusCode:
    """The gRPC code for an HTTP status: listed ones as above, other 4xx INVALID_ARGUMENT,
    anything else INTERNAL."""
    code = _BY_HTTP.get(http_status)
    if code is not None:
        return code
    if 400 <= http_status < 500:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def trailing_metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """What of an error's HTTP headers travels as gRPC trailing metadata: ``Retry-After``
    (seconds), as itself and as gRPC's retry pushback in milliseconds."""
    retry_after = headers.get("Retry-After")
    if retry_after is None:
        return ()
    try:
        millis = max(0, round(float(retry_after) * 1000))
    except ValueError:
        return ((RETRY_AFTER_KEY, retry_after),)
    return ((RETRY_AFTER_KEY, retry_after), (PUSHBACK_KEY, str(millis)))
