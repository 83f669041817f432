"""Display names looked up on a platform, cached in the store for every process.

A connector's parse step (in the worker, never on the acknowledged edge path) asks
:meth:`NameCache.resolve` for a sender's name; on a miss the cache calls the connector's own
look-up (Slack ``users.info``, LINE's profile APIs) and keeps what it returned under
:meth:`~gateway.store.Keyspace.contact_name` for ``pipeline.contact_name_ttl_seconds``.

Guarantees:

- a failed look-up never fails the parse: a platform error, a timeout or a store outage
  gives ``None`` (the message goes on with the raw id), counted in
  ``flowbiz_contact_lookups_total{channel,outcome="failed"}``, and is remembered only for
  ``pipeline.contact_name_failure_ttl_seconds`` so the platform is not asked again at once;
- a name is cleaned before it is kept (:func:`gateway.contacts.model.clean_name`), and an
  email is kept only when the platform vouches for it (the connector says so);
- nothing of the person is logged: the outcome and the channel only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from gateway.contacts.model import clean_email, clean_name
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.observability import get_logger
from gateway.store import Keyspace, Store

__all__ = ["NameCache", "Profile"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Profile:
    """What a platform says of one person: the name to show and an email it verified."""

    name: str | None
    verified_email: str | None = None


class _Kept(BaseModel):
    ok: bool
    name: str | None = None
    email: str | None = None


LookUp = Callable[[], Awaitable[Profile | None]]
"""The platform's answer; None when it does not know the person. Raising any exception
(the connector's error types, a timeout) counts as a failed look-up."""


class NameCache:
    def __init__(
        self,
        *,
        store: Callable[[], Store],
        keyspace: Keyspace,
        metrics: Metrics,
        ttl: Callable[[], float],
        failure_ttl: Callable[[], float],
        timeout: float = 3.0,
    ) -> None:
        # The store and the TTLs are read per call: the store opens after the connectors
        # are built, and the TTLs follow the configuration a tenant change swaps in.
        self._store = store
        self.keyspace = keyspace
        self.metrics = metrics
        self._ttl = ttl
        self._failure_ttl = failure_ttl
        self.timeout = timeout

    async def resolve(
        self, tenant: str, channel: str, user: str, look_up: LookUp, *, timeout: float | None = None
    ) -> Profile | None:
        """The person's profile, from the store or the platform; None if unknown or failed."""
        key = self.keyspace.contact_name(tenant, channel, user)
        store = self._store()
        try:
            raw = await store.get_record(key)
        except StoreError:
            raw = None  # the look-up still runs; the store's outage is the worker's to see
        if raw is not None:
            try:
                kept = _Kept.model_validate_json(raw)
            except ValidationError:
                kept = None
            if kept is not None:
                self.metrics.contact_lookups.labels(channel, "cached").inc()
                return Profile(kept.name, kept.email) if kept.ok else None
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                found = await look_up()
        except Exception as exc:  # noqa: BLE001 - any failure of the look-up leaves the id
            self.metrics.contact_lookups.labels(channel, "failed").inc()
            log.info("contacts.lookup_failed", channel=channel, error_type=type(exc).__name__)
            await self._keep(store, key, _Kept(ok=False), self._failure_ttl())
            return None
        if found is None:
            self.metrics.contact_lookups.labels(channel, "unknown").inc()
            await self._keep(store, key, _Kept(ok=False), self._failure_ttl())
            return None
        profile = Profile(clean_name(found.name), clean_email(found.verified_email))
        self.metrics.contact_lookups.labels(channel, "fetched").inc()
        kept = _Kept(ok=True, name=profile.name, email=profile.verified_email)
        await self._keep(store, key, kept, self._ttl())
        return profile

    @staticmethod
    def name_in(raw: bytes | None) -> str | None:
        """The name a record of :meth:`resolve`'s holds, if any (for pages and exports)."""
        if raw is None:
            return None
        try:
            return _Kept.model_validate_json(raw).name
        except ValidationError:
            return None

    @staticmethod
    async def _keep(store: Store, key: str, kept: _Kept, ttl: float) -> None:
        try:
            await store.put_record(key, kept.model_dump_json(exclude_none=True).encode(), ttl=ttl)
        except StoreError:
            log.info("contacts.name_not_kept")  # asked again next time: only a cost
