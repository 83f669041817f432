"""A loopback proxy in front of a real redis-server that cuts, holds or delays chosen requests.

A request is matched by the bytes it carries (a script's SHA, a key): every marker of a
:class:`Rule` must be in the chunk the client wrote. Replies on one connection keep their
order, so holding a request holds its answer, and cutting it fails it (the client sees the
connection drop); every other connection flows freely meanwhile. The fault tests use it to
force, deterministically, interleavings that a loaded machine produces only now and then.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Literal

from tests.faults.tcp_proxy import TcpFaultProxy

__all__ = ["RedisFaultProxy", "Rule", "script_id"]


def script_id(script: str) -> bytes:
    """The id redis-server knows a Lua script by (what EVALSHA sends)."""
    return hashlib.sha1(script.encode()).hexdigest().encode()  # noqa: S324 - redis' script id


@dataclass
class Rule:
    """What the proxy does with a request that carries every one of ``markers``.

    ``cut``: drop the request and close the connection; ``hold``: until :meth:`release`;
    ``delay``: ``delay`` seconds. ``once``: only the first matching request, later ones pass.
    """

    markers: tuple[bytes, ...]
    action: Literal["cut", "hold", "delay"]
    delay: float = 0.0
    once: bool = False
    active: bool = True
    seen: int = 0
    matched: asyncio.Event = field(default_factory=asyncio.Event)  # set at the first match
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


class RedisFaultProxy(TcpFaultProxy):
    """Forwards to redis-server on ``upstream_port``, applying ``rules`` to each request;
    the network faults of :class:`~tests.faults.tcp_proxy.TcpFaultProxy` switch on as well."""

    def __init__(self, upstream_port: int, rules: list[Rule]) -> None:
        super().__init__(upstream_port)
        self.rules = rules

    @property
    def url(self) -> str:
        return f"redis://{self.address}/0"

    async def start(self) -> RedisFaultProxy:
        await super().start()
        return self

    async def stop(self) -> None:
        for rule in self.rules:
            rule.release()
        await super().stop()

    async def inspect_request(self, chunk: bytes) -> bool:
        for rule in self.rules:
            if not rule.active or not all(marker in chunk for marker in rule.markers):
                continue
            if rule.once and rule.seen:
                continue
            rule.seen += 1
            rule.matched.set()
            if rule.action == "cut":
                return False  # the connection closes; the request never reaches Redis
            if rule.action == "hold":
                await rule.released.wait()
            else:
                await asyncio.sleep(rule.delay)
        return True
