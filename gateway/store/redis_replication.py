"""Replication-aware acknowledgement on Redis: ``WAIT`` (or ``WAITAOF``) before a reply.

A primary that fails after answering but before its replica copied the write loses that
write on failover. With ``store.replica_acks: N`` the store closes that gap for the writes
whose reply is an acknowledgement to someone (an admission, which the edge turns into the
platform's 2xx; a commit, which ends a turn or records a delivery; a log or stream append):

- Such a write's caller gets its reply only once the server said that at least N replicas
  hold everything its connection had written: the shared pipeline that carries it ends in
  one ``WAIT N timeout`` on the same connection (on a cluster, one per master that took
  such a write), so one WAIT covers a whole group-committed batch.
- Fewer than N in time, or no answer to the WAIT, fails each such call with
  :class:`ReplicationError` (a :class:`StoreError`: the edge answers 503 and the platform
  retries; dedupe makes the retry safe). The write itself stays applied on the primary,
  exactly as when a reply is lost to a dropped connection, which callers already handle.
  Each short batch is logged as ``store.replica_acks_short`` and reported to ``on_short``
  (a metric).
- Pipelines with none of those writes (reads, heartbeats, acks of handled entries) send no
  WAIT, and with N = 0 (the default) nothing here runs: the hot path is unchanged.
- ``aof: true`` uses ``WAITAOF 0 N timeout`` (replicas fsynced it to their AOF). Redis has
  it from 7.2; the store probes the server (``WAITAOF 0 0 1``, which waits for nothing) when
  it connects and refuses to start on one without it, rather than silently promise less.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.errors import StoreError
from gateway.observability import get_logger

__all__ = ["WAITAOF_PROBE", "ReplicaAcks", "ReplicationError"]

log = get_logger("gateway.store.redis")

# Waits for no fsync anywhere, so it answers at once where the command exists.
WAITAOF_PROBE = ("WAITAOF", 0, 0, 1)


class ReplicationError(StoreError):
    """A write was applied on the primary but not confirmed by enough replicas in time."""


@dataclass(frozen=True, slots=True)
class ReplicaAcks:
    """How many replicas must hold a write before its caller's reply, and for how long to
    wait for them."""

    replicas: int
    timeout_ms: int
    aof: bool = False
    # Called once per short batch with the number of calls it failed (for a metric).
    on_short: Callable[[int], None] | None = None

    def command(self) -> tuple[Any, ...]:
        if self.aof:
            return ("WAITAOF", 0, self.replicas, self.timeout_ms)
        return ("WAIT", self.replicas, self.timeout_ms)

    def shortfall(self, reply: Any) -> str | None:
        """None if ``reply`` (to :meth:`command`) confirms enough replicas; else what fell
        short, for :meth:`failed`."""
        if isinstance(reply, BaseException):
            return f"no answer to {self.command()[0]}: {type(reply).__name__}: {reply}"
        got = int(reply[1]) if self.aof else int(reply)
        if got >= self.replicas:
            return None
        return f"{got} of {self.replicas} replicas in {self.timeout_ms} ms"

    def failed(self, shortfall: str, calls: int) -> ReplicationError:
        """The error for each of a batch's ``calls`` that waited in vain; logged and counted
        once per batch."""
        log.warning(
            "store.replica_acks_short",
            wanted=self.replicas,
            shortfall=shortfall,
            calls=calls,
        )
        if self.on_short is not None:
            self.on_short(calls)
        return ReplicationError(f"redis write not confirmed by replicas: {shortfall}")
