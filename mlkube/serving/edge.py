"""The connection edge of a worker: limits that act before aiohttp has a request to hand over.

aiohttp parses HTTP and calls our handlers; it has no bound on how long a client may take to
send a request's headers, nor on how many connections one worker holds. Each accepted
connection's protocol is therefore wrapped in :class:`Connection`, which forwards every
event to aiohttp's own protocol unchanged and adds:

- **a header timeout**: from the first byte of a request, its headers must be complete within
  ``header_timeout`` seconds (the handler starting is the proof); otherwise the client gets
  ``408`` and the connection closes. Idle keep-alive connections are aiohttp's business
  (its keep-alive timeout), and a body that is slow to arrive is bounded by the handlers
  (``server.body_timeout``);
- **a connection cap**: beyond ``max_connections`` open connections a new one is answered
  ``503`` with ``Retry-After`` and closed at once, before any of its bytes are read;
- **requests per connection**: after ``max_requests_per_connection`` answers a connection is
  told ``Connection: close``, so that keep-alive clients reconnect now and then and the
  kernel's SO_REUSEPORT spreads them again (over a worker that was just restarted, say).

The handlers find their connection with :meth:`Edge.connection` (one dict lookup).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson

REASONS = {408: "Request Timeout", 503: "Service Unavailable"}


def raw_error(status: int, message: str, extra_headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """Pure: a complete HTTP/1.1 error answer that closes the connection."""
    body = orjson.dumps({"error": message})
    head = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in extra_headers),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def closes_after(answered: int, limit: int) -> bool:
    """Pure: whether the answer number ``answered`` on a connection is its last one."""
    return limit > 0 and answered >= limit


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    header_timeout: float
    max_connections: int
    max_requests_per_connection: int


class Edge:
    """The connections of one worker and the limits they share."""

    def __init__(self, limits: EdgeLimits, on_refused: Callable[[int], None] | None = None) -> None:
        self.limits = limits
        self.open = 0
        self._by_transport: weakref.WeakKeyDictionary[Any, Connection] = weakref.WeakKeyDictionary()
        self._on_refused = on_refused

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` around aiohttp's own."""
        return lambda: Connection(self, inner)

    def connection(self, transport: Any) -> Connection | None:
        return self._by_transport.get(transport) if transport is not None else None

    def refused(self, status: int) -> None:
        if self._on_refused is not None:
            self._on_refused(status)


class Connection(asyncio.Protocol):
    """One client connection: aiohttp's protocol plus the edge's limits."""

    __slots__ = ("_edge", "_inner", "_inner_factory", "_timer", "_transport", "answered", "idle")

    def __init__(self, edge: Edge, inner_factory: Callable[[], asyncio.Protocol]) -> None:
        self._edge = edge
        self._inner_factory = inner_factory
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.answered = 0
        self.idle = True

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        edge = self._edge
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        if edge.open >= edge.limits.max_connections:
            transport.write(
                raw_error(
                    503,
                    f"server: this worker holds its limit of {edge.limits.max_connections} "
                    "connections; retry shortly",
                    (("Retry-After", "1"),),
                )
            )
            transport.close()
            edge.refused(503)
            return
        edge.open += 1
        edge._by_transport[transport] = self
        self._inner = self._inner_factory()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is None:
            return  # refused: the answer is on its way and the connection closes
        if self.idle:
            # The first bytes of a request: its headers must be complete in time.
            self.idle = False
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._edge.limits.header_timeout, self._too_slow)
        inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._inner is None:
            return
        self._edge.open -= 1
        self._inner.connection_lost(exc)
        self._inner = None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # --- called by the handlers -------------------------------------------------------------
    def request_started(self) -> None:
        """aiohttp parsed a request's headers and handed it over: the header clock stops."""
        self._cancel_timer()
        self.idle = False

    def request_done(self) -> bool:
        """The handler has its answer; True when this must be the connection's last one."""
        self.idle = True
        self.answered += 1
        return closes_after(self.answered, self._edge.limits.max_requests_per_connection)

    # --- internals --------------------------------------------------------------------------
    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        limit = self._edge.limits.header_timeout
        transport.write(
            raw_error(408, f"request: headers not complete within {limit:g} s; closing")
        )
        transport.close()
        self._edge.refused(408)
