"""The audit log: one append-only stream of every mutating admin action.

Each entry says who (the API key's id and name, or ``cli:<user>``), what (the operation and
its target), when, from where (the client address, or ``cli@<host>``) and the outcome
status. Nothing in the gateway deletes or rewrites entries; the stream is trimmed only by
length (:data:`AUDIT_MAXLEN`), oldest first. Targets that name a person (a conversation
being erased) are written as a SHA-256 digest, so the log itself keeps no personal data.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.models import new_id, utcnow
from gateway.store import Keyspace, Store

__all__ = ["AUDIT_MAXLEN", "AuditEvent", "AuditLog", "digest"]

AUDIT_MAXLEN = 1_000_000


def digest(value: str) -> str:
    """A stable stand-in for a value that must not be kept in the log itself."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


class AuditEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=new_id)
    at: datetime = Field(default_factory=utcnow)
    actor: str  # api key id, "cli:<user>" or "gateway" for automatic events
    actor_name: str = ""
    role: str = ""
    action: str  # e.g. "conversations.erase", "quota.exceeded"
    tenant: str | None = None
    target: dict[str, str] = Field(default_factory=dict)
    remote: str | None = None
    status: int | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class AuditLog:
    def __init__(self, store: Store, keyspace: Keyspace) -> None:
        self.store = store
        self.keyspace = keyspace

    async def write(self, event: AuditEvent) -> None:
        await self.store.append(
            self.keyspace.audit(), event.model_dump_json().encode(), maxlen=AUDIT_MAXLEN
        )

    async def read(
        self, *, tenant: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[tuple[str, AuditEvent]]:
        """``(cursor, event)`` pairs oldest first; pass the last cursor as ``after`` to page."""
        out: list[tuple[str, AuditEvent]] = []
        cursor = after
        while len(out) < limit:
            entries = await self.store.range(self.keyspace.audit(), after=cursor, count=500)
            if not entries:
                break
            for entry in entries:
                cursor = entry.id
                event = AuditEvent.model_validate_json(entry.payload)
                if tenant is None or event.tenant == tenant:
                    out.append((entry.id, event))
                    if len(out) >= limit:
                        break
        return out
