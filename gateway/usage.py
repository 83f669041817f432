"""Usage counters per tenant, day, channel and persona.

Each count is one store counter (``Store.incr``) under ``Keyspace.usage(...)``, kept for
:data:`USAGE_TTL_SECONDS`. Counting is best effort next to the turn it describes: it runs
after the turn's commit, so a crash between the two loses a count, never a message.

Metrics: ``inbound``, ``outbound``, ``line_pushes``, ``agent_ms``, ``dead_letters``,
``over_quota``, ``rate_limited`` and ``reply_capped``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict

from gateway.models import utcnow
from gateway.store import Keyspace, Store

__all__ = [
    "METRICS",
    "USAGE_TTL_SECONDS",
    "Usage",
    "UsageRow",
    "read_usage",
    "record_usage",
    "usage_counters",
]

USAGE_TTL_SECONDS = 400 * 86400
METRICS = (
    "inbound",
    "outbound",
    "line_pushes",
    "agent_ms",
    "dead_letters",
    "over_quota",
    "rate_limited",
    "reply_capped",
)
NO_PERSONA = "-"


class UsageRow(BaseModel):
    """The counts of one tenant on one day, channel and persona."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    day: date
    channel: str
    persona: str
    inbound: int = 0
    outbound: int = 0
    line_pushes: int = 0
    agent_ms: int = 0
    dead_letters: int = 0
    over_quota: int = 0
    rate_limited: int = 0
    reply_capped: int = 0


def usage_counters(
    keyspace: Keyspace,
    *,
    tenant: str,
    channel: str,
    persona: str | None,
    counts: Mapping[str, int],
    at: datetime | None = None,
) -> list[tuple[str, int, float | None]]:
    """The counter increments that add ``counts`` (metric → amount) to today's row, for
    :meth:`Store.incr_many` or a :class:`Commit`'s ``counters``; zero amounts are skipped."""
    day = (at or utcnow()).date().isoformat()
    who = persona or NO_PERSONA
    return [
        (keyspace.usage(tenant, day, channel, who, metric), amount, USAGE_TTL_SECONDS)
        for metric, amount in counts.items()
        if amount and metric in METRICS
    ]


async def record_usage(
    store: Store,
    keyspace: Keyspace,
    *,
    tenant: str,
    channel: str,
    persona: str | None,
    counts: Mapping[str, int],
    at: datetime | None = None,
) -> None:
    """Add ``counts`` (metric → amount) to today's row; zero amounts are skipped."""
    # One store call for the whole row (one pipeline on Redis, one operation of the group
    # commit on SQLite): a turn counts two or three metrics.
    items = usage_counters(
        keyspace, tenant=tenant, channel=channel, persona=persona, counts=counts, at=at
    )
    if items:
        await store.incr_many(items)


async def read_usage(
    store: Store,
    keyspace: Keyspace,
    *,
    tenant: str,
    since: date | None = None,
    until: date | None = None,
) -> list[UsageRow]:
    """Rows of ``tenant`` between ``since`` and ``until`` (inclusive), oldest first."""
    prefix = keyspace.usage_prefix(tenant)
    keys = await store.scan(prefix, limit=100_000)
    rows: dict[tuple[str, str, str], dict[str, int]] = {}
    wanted: list[tuple[tuple[str, str, str], str, str]] = []
    for key in keys:
        parts = key[len(prefix) :].rsplit(":", 3)
        if len(parts) != 4 or parts[3] not in METRICS:
            continue
        day_text, channel, persona, metric = parts
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            continue
        if (since is not None and day < since) or (until is not None and day > until):
            continue
        wanted.append(((day_text, channel, persona), metric, key))
    # incr by 0 reads a counter without changing it (the protocol has no plain read).
    values = await store.incr_many([(key, 0, None) for _, _, key in wanted])
    for (row_key, metric, _), value in zip(wanted, values, strict=True):
        rows.setdefault(row_key, {})[metric] = value
    return [
        UsageRow(
            tenant=tenant,
            day=date.fromisoformat(day_text),
            channel=channel,
            persona=persona,
            **counts,
        )
        for (day_text, channel, persona), counts in sorted(rows.items())
    ]


class Usage:
    """The recorder bound to one store, for the worker, dispatcher and quota policy."""

    def __init__(self, store: Store, keyspace: Keyspace) -> None:
        self.store = store
        self.keyspace = keyspace

    def counters(
        self, *, tenant: str, channel: str, persona: str | None, **counts: int
    ) -> list[tuple[str, int, float | None]]:
        """What :meth:`record` would add, for a commit to apply with the turn it counts."""
        return usage_counters(
            self.keyspace, tenant=tenant, channel=channel, persona=persona, counts=counts
        )

    async def record(
        self, *, tenant: str, channel: str, persona: str | None, **counts: int
    ) -> None:
        await record_usage(
            self.store,
            self.keyspace,
            tenant=tenant,
            channel=channel,
            persona=persona,
            counts=counts,
        )
