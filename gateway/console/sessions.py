"""Console sign-in sessions and their CSRF tokens, kept in the store.

Guarantees:

- a session is named by a random cookie token (32 bytes); the store keeps only its SHA-256
  (``Keyspace.console_session``), so a copy of the store signs nobody in, and every process
  sharing the store knows every session;
- a session expires ``console.session_hours`` after sign-in (the record's TTL, and checked
  again on read); signing out deletes it;
- the session names the API key it was opened with, and every request reads that key
  again: a revoked key ends its sessions at once, a changed role applies at once;
- every state-changing request carries the session's CSRF token (form field ``csrf`` or
  header ``X-CSRF-Token``), compared in constant time against the one in the store; a
  request whose ``Origin`` is not this console is refused too;
- the cookie is ``HttpOnly``, ``SameSite=Strict``, ``Path=/console/``, and ``Secure`` when
  the request came over TLS or the configuration says so.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from gateway.admin import keys as apikeys
from gateway.admin.keys import ApiKey
from gateway.config import ConsoleConfig
from gateway.models import utcnow
from gateway.store import Keyspace, Store

__all__ = [
    "COOKIE",
    "Caller",
    "Session",
    "csrf_ok",
    "end_session",
    "open_session",
    "session_of",
    "set_cookie",
]

COOKIE = "fb_console"
PATH = "/console/"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


class Session(BaseModel):
    model_config = ConfigDict(frozen=True)

    key_id: str
    csrf: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Caller:
    """A signed-in person: their session and the API key it was opened with, read now."""

    key: ApiKey
    session: Session
    token: str

    @property
    def name(self) -> str:
        return self.key.name


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(
    store: Store, keyspace: Keyspace, key: ApiKey, config: ConsoleConfig
) -> tuple[str, Session]:
    """A new session for ``key``; returns the cookie token (never stored) and the session."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session = Session(
        key_id=key.id,
        csrf=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(hours=config.session_hours),
    )
    await store.put_record(
        keyspace.console_session(_digest(token)),
        session.model_dump_json().encode(),
        ttl=config.session_hours * 3600,
    )
    return token, session


async def session_of(store: Store, keyspace: Keyspace, request: web.Request) -> Caller | None:
    """The caller behind the request's cookie, or None (no, unknown, expired session; a
    revoked key)."""
    token = request.cookies.get(COOKIE, "")
    if _TOKEN.match(token) is None:
        return None
    raw = await store.get_record(keyspace.console_session(_digest(token)))
    if raw is None:
        return None
    session = Session.model_validate_json(raw)
    if session.expires_at <= utcnow():
        return None
    key = await apikeys.get_key(store, keyspace, session.key_id)
    if key is None or not key.active:
        return None
    return Caller(key=key, session=session, token=token)


async def end_session(store: Store, keyspace: Keyspace, caller: Caller) -> None:
    await store.delete([keyspace.console_session(_digest(caller.token))])


def _secure(request: web.Request, config: ConsoleConfig) -> bool:
    return config.secure_cookie == "always" or request.secure


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    config: ConsoleConfig,
    token: str,
    *,
    name: str = COOKIE,
) -> None:
    response.set_cookie(
        name,
        token,
        max_age=int(config.session_hours * 3600),
        path=PATH,
        httponly=True,
        samesite="Strict",
        secure=_secure(request, config),
    )


def clear_cookie(response: web.StreamResponse, *, name: str = COOKIE) -> None:
    response.del_cookie(name, path=PATH)


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request came from another site's page.

    Browsers send ``Origin`` on every POST; its absence (curl, an old client) is left to
    the CSRF token alone.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin == f"{request.scheme}://{request.host}"


def csrf_ok(expected: str, offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest(expected.encode(), (offered or "").encode())
