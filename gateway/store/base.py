"""The ``Store`` protocol: everything the gateway keeps, behind one small interface.

Implementations: :mod:`gateway.store.sqlite` (embedded default, one host),
:mod:`gateway.store.redis` (production, many processes on many hosts) and
:mod:`gateway.store.memory` (the executable reference, for fast unit tests). The conformance
suite in ``tests/store`` holds all three to the same semantics.

Keys are opaque strings built by :mod:`gateway.store.keys`; an implementation never parses
them. Values are bytes; callers own their encoding. The keys of one atomic call (one
admission's dedupe key and target, every key of one commit) must share a Redis Cluster hash
tag: on a cluster a call that spans slots fails with ``StoreError``. The keys of one
partition (``{pN}``) do.

Streams follow Redis Streams semantics: entry ids increase within a stream; a consumer group
delivers each new entry to exactly one consumer; a delivered entry stays *pending* for its
consumer until acknowledged; pending entries idle for long enough can be claimed by another
consumer (the reclaim of a dead worker's work). Entry ids are opaque strings (decimal
integers in SQLite, ``<ms>-<seq>`` in Redis): compare them only through the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "Admission",
    "Commit",
    "Holding",
    "LogAppend",
    "StateWrite",
    "Store",
    "StreamEntry",
    "TokenBucketResult",
    "Versioned",
]


@dataclass(frozen=True, slots=True)
class StreamEntry:
    id: str
    payload: bytes
    deliveries: int = 0  # how many times a consumer group has handed this entry out


@dataclass(frozen=True, slots=True)
class Holding:
    """Who holds a lease or a place in a membership set, and for how much longer.

    ``expires_in`` is in seconds, measured on the store's own clock (so processes whose
    clocks disagree still agree on it); always above 0, since expired holdings are not
    reported.
    """

    owner: str
    expires_in: float


@dataclass(frozen=True, slots=True)
class Versioned:
    value: bytes
    version: int  # starts at 1 on first write; 0 means "absent" in expectations


@dataclass(frozen=True, slots=True)
class Admission:
    """Claim ``dedupe_key``; only if the claim is new, append ``payload`` to ``stream``.

    With ``log_cap``, ``stream`` names a capped log (:meth:`Store.append_log`) instead.
    """

    dedupe_key: str
    stream: str
    payload: bytes
    log_cap: int | None = None


@dataclass(frozen=True, slots=True)
class LogAppend:
    """Append ``payload`` to the log ``key``, keeping only its newest ``cap`` entries."""

    key: str
    payload: bytes
    cap: int


@dataclass(frozen=True, slots=True)
class StateWrite:
    """Compare-and-set: write ``value`` only if the key's version is ``expected_version``."""

    key: str
    value: bytes
    expected_version: int  # 0 = the key must not exist
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    """Changes applied all-or-nothing by :meth:`Store.commit`.

    If ``state`` is given and its version check fails, nothing at all is applied.
    ``counters`` are added as :meth:`Store.incr_many` would add them, with the rest (on a
    Redis Cluster, whose one script cannot reach another slot: right after it, and only
    when the rest was applied).
    """

    state: StateWrite | None = None
    appends: Sequence[tuple[str, bytes]] = ()  # (stream, payload)
    logs: Sequence[LogAppend] = ()
    records: Sequence[tuple[str, bytes, float | None]] = ()  # (key, value, ttl seconds)
    acks: Sequence[tuple[str, str, str]] = ()  # (stream, group, entry id)
    deletes: Sequence[str] = ()  # record or state keys to remove
    counters: Sequence[tuple[str, int, float | None]] = ()  # (key, amount, ttl seconds)


@dataclass(frozen=True, slots=True)
class TokenBucketResult:
    allowed: bool
    remaining: float
    retry_after: float  # seconds until ``cost`` tokens are available (0 when allowed)


@runtime_checkable
class Store(Protocol):
    """Durable, shared state of the gateway. Every method is safe to call concurrently."""

    url: str

    async def ping(self) -> None:
        """Raise :class:`~gateway.errors.StoreError` when the store is not reachable."""

    async def aclose(self) -> None: ...

    # -- dedupe + durable append (the ingest path) -------------------------------------------
    async def admit(self, items: Sequence[Admission], *, dedupe_ttl: float) -> list[str | None]:
        """For each item, atomically claim its dedupe key and append its payload.

        Returns, per item, the new entry id, or ``None`` when the key was already claimed
        (a duplicate: nothing appended). Implementations group-commit concurrent calls.
        """
        ...

    async def claim(self, key: str, *, ttl: float, holder: bytes = b"1") -> bool:
        """Set ``key`` to ``holder`` if absent (expiring after ``ttl`` s). True if this call
        set it; :meth:`get_record` then tells who holds it."""
        ...

    # -- streams -------------------------------------------------------------------------------
    async def append(self, stream: str, payload: bytes, *, maxlen: int | None = None) -> str:
        """Append an entry; with ``maxlen``, trim the oldest entries beyond it."""
        ...

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create the consumer group (reading from the stream's start) if missing."""
        ...

    async def read_group(
        self,
        streams: Sequence[str],
        *,
        group: str,
        consumer: str,
        count: int,
        block: float,
    ) -> list[tuple[str, StreamEntry]]:
        """Hand out entries never delivered to ``group``, as ``(stream, entry)`` pairs.

        Waits up to ``block`` seconds when there are none. Each returned entry becomes pending
        for ``consumer``. Entries of one stream come in id order. ``count`` caps the entries
        taken from *each* stream (Redis ``COUNT`` semantics: one ``XREADGROUP`` over several
        streams cannot cap the total), so a call may return up to ``count * len(streams)``.
        The group is created (reading from the stream's start) if missing.
        """
        ...

    async def claim_pending(
        self, stream: str, *, group: str, consumer: str, min_idle: float, count: int
    ) -> list[StreamEntry]:
        """Take over pending entries idle for at least ``min_idle`` s, oldest first."""
        ...

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries; returns how many were pending."""
        ...

    async def backlog(self, stream: str, group: str) -> int:
        """Entries not yet acknowledged by ``group``: undelivered plus pending."""
        ...

    async def range(
        self, stream: str, *, after: str | None = None, count: int = 100
    ) -> list[StreamEntry]:
        """Entries with id greater than ``after`` (all when None), oldest first.

        A malformed ``after`` raises :class:`~gateway.errors.CursorError`
        (:mod:`gateway.store.cursors`); ``get_entry`` and ``delete_entries`` find nothing
        under a malformed id.
        """
        ...

    async def get_entry(self, stream: str, entry_id: str) -> StreamEntry | None: ...

    async def delete_entries(self, stream: str, ids: Sequence[str]) -> int: ...

    async def trim_acknowledged(self, stream: str, group: str) -> int:
        """Drop the entries ``group`` is done with: delivered, acknowledged, and older than
        its oldest pending entry. Returns how many went.

        For streams read by this one group only (the inbox and outbox): without trimming they
        would keep every message ever handled.
        """
        ...

    # -- logs ----------------------------------------------------------------------------------
    # A log is a short, capped, append-only list kept per conversation (replies waiting to be
    # polled, delivery receipts): no consumer groups, read by cursor. Keeping it apart from
    # streams lets a store pick a cheaper structure (Redis: a list, not a 4 KiB stream node).
    async def append_log(self, key: str, payload: bytes, *, cap: int) -> str:
        """Append an entry, keeping the newest ``cap``; returns its id (ids increase)."""
        ...

    async def read_log(
        self, key: str, *, after: str | None = None, count: int = 100
    ) -> list[StreamEntry]:
        """Entries after the id ``after`` (all kept ones when None or trimmed away), oldest
        first. A malformed ``after`` raises :class:`~gateway.errors.CursorError`."""
        ...

    # -- state and records ---------------------------------------------------------------------
    async def get_state(self, key: str) -> Versioned | None: ...

    async def commit(self, commit: Commit) -> int | None:
        """Apply ``commit`` atomically. Returns the state's new version (0 when the commit has
        no state write), or ``None`` when the state version check failed and nothing changed.
        """
        ...

    async def put_record(self, key: str, value: bytes, *, ttl: float | None = None) -> None: ...

    async def get_record(self, key: str) -> bytes | None: ...

    async def delete(self, keys: Sequence[str]) -> int:
        """Remove records, states and whole streams by key; returns how many existed."""
        ...

    async def scan(self, prefix: str, *, limit: int = 1000) -> list[str]:
        """Live keys of records, states, streams and counters starting with ``prefix``
        (unordered). Keys used only for buckets, leases and heartbeats may or may not be
        listed (Redis cannot tell them apart), so give those their own prefixes.
        """
        ...

    # -- counters, buckets, leases ----------------------------------------------------------------
    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add to a counter (created at 0); ``ttl`` is set only when the counter is created."""
        ...

    async def incr_many(self, items: Sequence[tuple[str, int, float | None]]) -> list[int]:
        """:meth:`incr` for each ``(key, amount, ttl)``, in one store call; the new values.

        Each counter keeps :meth:`incr`'s semantics (the TTL is set only on creation). The
        items are applied together but not atomically as a group: for counters that are
        independent of each other, such as one turn's usage counts.
        """
        ...

    async def take_tokens(
        self, key: str, *, rate: float, burst: float, cost: float = 1.0
    ) -> TokenBucketResult:
        """Token bucket refilled at ``rate``/s up to ``burst``; take ``cost`` if available."""
        ...

    async def acquire_lease(self, key: str, owner: str, *, ttl: float) -> bool:
        """Take the lease if free or expired, or renew it if ``owner`` holds it."""
        ...

    async def renew_lease(self, key: str, owner: str, *, ttl: float) -> bool:
        """Extend the lease to ``ttl`` s from now only if ``owner`` holds it and it has not
        expired; False otherwise, even when nobody took it meanwhile.

        What tells a holder that it held the lease without a gap (:meth:`acquire_lease`
        would win a lapsed lease back and hide that someone may have held it in between).
        """
        ...

    async def release_lease(self, key: str, owner: str) -> None: ...

    async def heartbeat(self, key: str, member: str, *, ttl: float) -> list[str]:
        """Mark ``member`` alive for ``ttl`` s; return all members alive now, sorted."""
        ...

    # -- reading leases and membership (the console's health page) -------------------------------
    # Read-only: unlike heartbeat() and acquire_lease(), these register, renew and purge
    # nothing, so an observer can look at a deployment without joining it.
    async def members(self, key: str) -> list[Holding]:
        """The members of the set :meth:`heartbeat` keeps under ``key`` alive now, sorted by
        name, each with the time its last beat has left. Changes nothing."""
        ...

    async def lease_holders(self, keys: Sequence[str]) -> dict[str, Holding | None]:
        """For each lease key, who holds it and for how much longer (``None``: free or
        expired), in one store call. Changes nothing."""
        ...
