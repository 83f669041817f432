"""The HTTP listeners: aiohttp sites that bound what one client can hold open.

aiohttp alone keeps a connection whose request head trickles in byte by byte, and one whose
body never finishes, for as long as the client likes. Every listener of the gateway (the
public webhook port and the operations port) is a :class:`GuardedSite`, which guarantees:

- **a head deadline**: a request head must be complete ``header_timeout_seconds`` after the
  connection opened or its previous request ended (an idle keep-alive connection is closed
  on the same clock);
- **a body deadline**: a body must have arrived ``body_timeout_seconds`` after its head. The
  webhook edge answers 408 itself at that moment (``gateway.edge``); for any other handler the
  guard closes the connection a moment later;
- **a per-client cap**: a client address holds at most ``max_connections_per_client`` open
  connections per listener; one more is answered 503 and closed before aiohttp sees it.

Every refusal counts in ``flowbiz_http_guard_total{listener,event}`` and logs at DEBUG (an
attacker must not be able to fill the logs).

The guard learns where each request is (head read, then handled) by wrapping the request
handler of the connection it owns, not through an app middleware: a middleware costs every
request two more coroutine frames and aiohttp's middleware chain, and would not see a request
the router refuses. Every app served by a :class:`GuardedSite` is guarded, whatever its
middlewares.

:func:`serve` also settles the heap once the app has started (:func:`settle_heap`): what
start-up built is moved out of the cyclic garbage collector's sight, so the collections that
requests trigger no longer walk every module, model class and config object of the process.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.config import HttpServerConfig
from gateway.metrics import Metrics
from gateway.observability import get_logger
from gateway.runtime import RUNTIME

__all__ = [
    "BODY_GRACE_SECONDS",
    "GC_YOUNG_THRESHOLD",
    "ConnectionGuard",
    "GuardedSite",
    "serve",
    "settle_heap",
]

log = get_logger(__name__)

# After the body deadline, the edge's own 408 gets this long before the guard closes.
BODY_GRACE_SECONDS = 1.0
# Net container allocations between two young-generation collections (CPython's default is
# 700). Sixty-four requests in flight hold more than 700 objects, so at the default nearly
# every burst of requests ran a collection that walked all of them, and promoted them to be
# walked again; at this threshold only cyclic garbage waits a little longer.
GC_YOUNG_THRESHOLD = 10_000
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 67\r\n\r\n"
    b'{"error":"too_many_connections","message":"too many connections"}\n'
)


class ConnectionGuard:
    """One listener's limits and its count of open connections per client address."""

    def __init__(self, *, listener: str, limits: HttpServerConfig, metrics: Metrics) -> None:
        self.listener = listener
        self.limits = limits
        self.metrics = metrics
        self.open: Counter[str] = Counter()

    def admit(self, client: str) -> bool:
        cap = self.limits.max_connections_per_client
        if cap is not None and self.open[client] >= cap:
            self.event("too_many_connections")
            return False
        self.open[client] += 1
        return True

    def release(self, client: str) -> None:
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]

    def event(self, name: str) -> None:
        self.metrics.http_guard.labels(self.listener, name).inc()
        log.debug(f"http.{name}", listener=self.listener)


class _GuardedConnection(asyncio.Protocol):
    """Sits between the transport and aiohttp's ``RequestHandler`` and owns the deadlines."""

    __slots__ = (
        "_client",
        "_deadline",
        "_event",
        "_guard",
        "_handler",
        "_inner",
        "_server",
        "_timer",
        "_transport",
        "_unless",
    )

    def __init__(self, guard: ConnectionGuard, server: web.Server) -> None:
        self._guard = guard
        self._server = server
        self._inner: RequestHandler | None = None
        self._handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]] | None = None
        self._client: str | None = None
        self._transport: asyncio.Transport | None = None
        # The deadline in force (loop time), what its expiry is called, and a last check that
        # excuses it; ``None``: no deadline. The timer may fire before a deadline that moved
        # on since it was set, and then waits again (see _arm).
        self._deadline: float | None = None
        self._event = ""
        self._unless: Callable[[], bool] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- the protocol, forwarded ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        if not self._guard.admit(client):
            self._transport.write(_BUSY)
            self._transport.close()
            return
        self._client = client
        inner = self._inner = self._server()
        # aiohttp calls the handler it copied from the server once a request's head is parsed
        # (the app, router included); this connection's requests go through _handle first.
        # RequestHandler has __slots__: were the attribute ever renamed, this would fail loudly.
        self._handler = inner._request_handler
        inner._request_handler = self._handle
        inner.connection_made(transport)
        self._arm(self._guard.limits.header_timeout_seconds, "header_timeout")

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> None:
        if self._inner is not None:
            self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._client is not None:
            self._guard.release(self._client)
            self._client = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    # -- the deadlines ----------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Tell the deadlines where the request is: head read, then handled."""
        assert self._handler is not None  # set with the connection
        self.request_started(request)
        try:
            return await self._handler(request)
        finally:
            self.request_finished()

    def request_started(self, request: web.BaseRequest) -> None:
        """The head arrived: its deadline is met; the body's (if any) begins."""
        if request.body_exists and not request.content.is_eof():
            delay = self._guard.limits.body_timeout_seconds + BODY_GRACE_SECONDS
            self._arm(delay, "body_timeout", unless=request.content.is_eof)
        else:
            self._disarm()

    def request_finished(self) -> None:
        """The next head (or nothing: an idle connection) must come within the head deadline."""
        self._arm(self._guard.limits.header_timeout_seconds, "header_timeout")

    def _arm(self, delay: float, event: str, unless: Callable[[], bool] | None = None) -> None:
        # Every request moves the deadline; scheduling (and cancelling) a timer for each one
        # costs more than the rest of the guard. So a request only records the new deadline,
        # and one timer per connection wakes at the earliest deadline it may have to enforce.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        self._deadline, self._event, self._unless = deadline, event, unless
        if self._timer is not None and self._timer.when() <= deadline:
            return  # it wakes first, finds the deadline moved, and waits again
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(deadline, self._expired)

    def _disarm(self) -> None:
        self._deadline = None  # a timer still set finds nothing to enforce

    def _expired(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < deadline:
            self._timer = loop.call_at(deadline, self._expired)
            return
        self._deadline = None
        if self._unless is not None and self._unless():
            return  # the body did arrive; the handler is just slow
        if self._transport is not None and not self._transport.is_closing():
            self._guard.event(self._event)
            self._transport.close()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections pass through a :class:`ConnectionGuard`."""

    __slots__ = ("_bound_port", "_guard", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner)
        self._host, self._port, self._guard = host, port, guard
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        return self._bound_port if self._bound_port is not None else self._port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def loopback_url(self) -> str:
        """The URL this process reaches the site at (a wildcard host means loopback)."""
        # Not a bind: the address this process connects to when the site listens everywhere.
        wildcard = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]"}  # noqa: S104
        host = wildcard.get(self._host)
        if host is None:
            host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert isinstance(server, web.Server)  # set by runner.setup()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _GuardedConnection(self._guard, server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


def settle_heap() -> None:
    """Collect once, then freeze what survives and collect the young generation less often.

    Called when start-up is done. Without it every full collection walks the whole heap that
    imports and start-up built (about 80,000 objects: a few tens of milliseconds each, some
    10-30 us per webhook on average); frozen objects are never walked again. They are never
    freed either, which is what they are: the modules, config, connectors and app.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def serve(
    app: web.Application, *, host: str, port: int, guard: ConnectionGuard, shutdown_timeout: float
) -> None:
    """Run ``app`` on a guarded site until SIGINT or SIGTERM, then shut down gracefully."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = GuardedSite(runner, host, port, guard=guard)
        await site.start()
        app[RUNTIME].public_url = site.loopback_url
        settle_heap()
        print(f"======== Running on {site.name} ========", file=sys.stderr)
        await stop.wait()
    finally:
        await runner.cleanup()
