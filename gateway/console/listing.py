"""The conversations a caller may see, as rows for the inbox and the handoff queue.

Read from the per-tenant index the worker commits with each turn
(:mod:`gateway.conversations`) and each conversation's state (handoff status, holder, last
message), for the tenants the caller's key may list. Message text (last message, search)
is shown only where the key may read history (the admin API's ``getConversation``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.conversations import ConversationIndexEntry, list_conversations, read_state
from gateway.handoff import handoff_fact, handoff_status, holder_of
from gateway.models import utcnow
from gateway.state import ConversationState
from gateway.store import Keyspace, Store

__all__ = ["STATES", "Filters", "Row", "fingerprint", "rows"]

STATES = {
    "bot": "bot",
    "waiting": "waiting for a person",
    "person": "with a person",
    "closed": "closed",
}
_PER_TENANT = 200
_SEARCHED_TURNS = 50


@dataclass(frozen=True, slots=True)
class Filters:
    tenant: str = ""
    channel: str = ""
    persona: str = ""
    state: str = ""
    q: str = ""

    @classmethod
    def of(cls, query: Any) -> Filters:
        return cls(**{f: str(query.get(f, ""))[:200].strip() for f in cls.__slots__})

    def query(self) -> str:
        from urllib.parse import urlencode

        return urlencode({f: getattr(self, f) for f in self.__slots__ if getattr(self, f)})


@dataclass(frozen=True, slots=True)
class Row:
    tenant: str
    handle: str
    channel: str
    customer: str
    persona: str | None
    state: str
    holder: str | None
    last_text: str | None  # None: the caller may not read history
    activity: datetime
    waiting_since: datetime | None

    @property
    def state_label(self) -> str:
        return STATES[self.state]

    @property
    def waited(self) -> str:
        return _ago(self.waiting_since) if self.waiting_since is not None else ""

    @property
    def active(self) -> str:
        return _ago(self.activity)


def _ago(when: datetime) -> str:
    seconds = max(0, int((utcnow() - when).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def _row(
    tenant: str, entry: ConversationIndexEntry, state: ConversationState | None, text: bool
) -> Row:
    fact = handoff_fact(state) if state is not None else None
    holder = holder_of(fact)
    last = state.history[-1].text if state is not None and state.history else ""
    since = fact.get("since") if fact is not None else None
    activity = max(entry.updated_at, state.updated_at) if state is not None else entry.updated_at
    return Row(
        tenant=tenant,
        handle=entry.handle,
        channel=entry.conversation.channel.value,
        customer=entry.customer or entry.conversation.conversation_id,
        persona=entry.persona,
        state=handoff_status(state) if state is not None else "bot",
        holder=str(holder["name"]) if holder is not None else None,
        last_text=(last[:140] if text else None),
        activity=activity,
        waiting_since=datetime.fromisoformat(since) if isinstance(since, str) else None,
    )


def _matches(
    row: Row, entry: ConversationIndexEntry, state: ConversationState | None, f: Filters
) -> bool:
    if f.channel and row.channel != f.channel:
        return False
    if f.persona and row.persona != f.persona:
        return False
    if f.state and row.state != f.state:
        return False
    if f.q:
        needle = f.q.casefold()
        haystack = [row.customer, entry.conversation.conversation_id]
        if row.last_text is not None and state is not None:  # history only where readable
            haystack += [h.text for h in state.history[-_SEARCHED_TURNS:]]
        if not any(needle in s.casefold() for s in haystack):
            return False
    return True


async def rows(
    store: Store,
    keyspace: Keyspace,
    tenants: list[str],
    filters: Filters,
    *,
    readable: set[str],
    limit: int = 200,
) -> list[Row]:
    """Matching conversations of ``tenants``, newest activity first; ``readable``: the
    tenants whose message text the caller may read."""
    out: list[Row] = []
    for tenant in tenants:
        if filters.tenant and tenant != filters.tenant:
            continue
        for entry in await list_conversations(store, keyspace, tenant, limit=_PER_TENANT):
            state = await read_state(store, keyspace, entry.key)
            row = _row(tenant, entry, state, tenant in readable)
            if _matches(row, entry, state, filters):
                out.append(row)
    out.sort(key=lambda r: r.activity, reverse=True)
    return out[:limit]


async def fingerprint(store: Store, keyspace: Keyspace, tenants: list[str]) -> str:
    """Changes whenever a turn is committed for one of ``tenants`` or a handoff changes
    anywhere: cheap enough to poll twice a second (index records and one counter)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(await store.incr(keyspace.console_activity(), 0)).encode())
    for tenant in tenants:
        for entry in await list_conversations(store, keyspace, tenant, limit=_PER_TENANT):
            digest.update(f"{entry.key}|{entry.updated_at.isoformat()}\n".encode())
    return digest.hexdigest()
