"""The audit log: one append-only stream of every mutating admin action.

Each entry says who (the API key's id and name, or ``cli:<user>``), what (the operation and
its target), when, from where (the client address, or ``cli@<host>``) and the outcome
status. Nothing in the gateway deletes or rewrites entries; the stream is trimmed only by
length (:data:`AUDIT_MAXLEN`), oldest first. Targets that name a person (a conversation
being erased) are written as a SHA-256 digest, so the log itself keeps no personal data.

An event that names a tenant is also appended to that tenant's own stream
(``Keyspace.audit_tenant``, capped at :data:`AUDIT_TENANT_MAXLEN`), so a tenant's read costs
one range of ``limit`` entries however many events other tenants wrote. The two appends are
not one atomic step (the keys sit in different Redis Cluster slots): the global one comes
first and is the record; a failure between them leaves an event missing only from the
tenant's view, and the write reports the failure. Cursors belong to the stream that
returned them: a cursor from a tenant's read pages that tenant's read.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.models import new_id, utcnow
from gateway.store import Keyspace, Store

__all__ = ["AUDIT_MAXLEN", "AUDIT_TENANT_MAXLEN", "AuditEvent", "AuditLog", "digest"]

AUDIT_MAXLEN = 1_000_000
AUDIT_TENANT_MAXLEN = 100_000


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
        payload = event.model_dump_json().encode()
        await self.store.append(self.keyspace.audit(), payload, maxlen=AUDIT_MAXLEN)
        if event.tenant is not None:
            await self.store.append(
                self.keyspace.audit_tenant(event.tenant), payload, maxlen=AUDIT_TENANT_MAXLEN
            )

    async def read(
        self, *, tenant: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[tuple[str, AuditEvent]]:
        """``(cursor, event)`` pairs oldest first; pass the last cursor as ``after`` to page.

        With ``tenant``, that tenant's stream: one bounded range, never a scan of the rest.
        """
        stream = self.keyspace.audit() if tenant is None else self.keyspace.audit_tenant(tenant)
        entries = await self.store.range(stream, after=after, count=limit)
        return [(entry.id, AuditEvent.model_validate_json(entry.payload)) for entry in entries]
