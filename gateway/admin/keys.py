"""Admin API keys: random tokens shown once, stored only as their SHA-256 digest.

A token reads ``fbk_<id>_<secret>``: the id finds the record in one store read, the secret
(32 random bytes) is what proves possession. Because the token is long and random, a plain
SHA-256 is the right digest (a slow password hash buys nothing here); comparison is
constant-time. A key has one role and is either global or scoped to one tenant; a revoked
key keeps its record (for the audit trail) but no longer authenticates.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from gateway.models import utcnow
from gateway.store import Keyspace, Store

__all__ = [
    "ApiKey",
    "Role",
    "authenticate",
    "create_key",
    "get_key",
    "list_keys",
    "revoke_key",
]

TOKEN_PREFIX = "fbk_"  # noqa: S105 - a public marker that starts every token, not a secret
_TOKEN = re.compile(r"^fbk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")
KEY_ID_PATTERN = r"^[0-9a-f]{16}$"


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "operator": 1, "admin": 2}[self.value]

    def covers(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class ApiKey(BaseModel):
    """What the store keeps about a key (never the token itself)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str = Field(min_length=1, max_length=100)
    role: Role
    tenant: str | None = None  # None: every tenant
    digest: str
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = ""
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_key(
    store: Store,
    keyspace: Keyspace,
    *,
    name: str,
    role: Role,
    tenant: str | None = None,
    created_by: str = "",
) -> tuple[ApiKey, str]:
    """Make a key; returns its record and the token — the only time the token exists."""
    key_id = secrets.token_hex(8)
    token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(
        id=key_id,
        name=name,
        role=role,
        tenant=tenant,
        digest=_digest(token),
        created_by=created_by,
    )
    await store.put_record(keyspace.api_key(key_id), record.model_dump_json().encode())
    return record, token


async def get_key(store: Store, keyspace: Keyspace, key_id: str) -> ApiKey | None:
    if re.match(KEY_ID_PATTERN, key_id) is None:
        return None
    raw = await store.get_record(keyspace.api_key(key_id))
    return None if raw is None else ApiKey.model_validate_json(raw)


async def list_keys(store: Store, keyspace: Keyspace, *, tenant: str | None = None) -> list[ApiKey]:
    """Every key (or those scoped to ``tenant``), oldest first."""
    out: list[ApiKey] = []
    for store_key in await store.scan(keyspace.api_key_prefix(), limit=100_000):
        raw = await store.get_record(store_key)
        if raw is not None:
            key = ApiKey.model_validate_json(raw)
            if tenant is None or key.tenant == tenant:
                out.append(key)
    out.sort(key=lambda k: k.created_at)
    return out


async def revoke_key(store: Store, keyspace: Keyspace, key_id: str) -> ApiKey | None:
    """Mark a key revoked (idempotent); None when there is no such key."""
    key = await get_key(store, keyspace, key_id)
    if key is None:
        return None
    if key.revoked_at is None:
        key = key.model_copy(update={"revoked_at": utcnow()})
        await store.put_record(keyspace.api_key(key_id), key.model_dump_json().encode())
    return key


async def authenticate(store: Store, keyspace: Keyspace, token: str) -> ApiKey | None:
    """The active key this token belongs to, or None (unknown, malformed, revoked)."""
    match = _TOKEN.match(token)
    if match is None:
        return None
    key = await get_key(store, keyspace, match.group(1))
    if key is None or not hmac.compare_digest(key.digest, _digest(token)):
        return None
    return key if key.active else None
