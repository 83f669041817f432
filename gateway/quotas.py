"""Plans, quotas and rate limits, atomic across processes.

A tenant's plan (``tenants[].plan``, overridable at run time through the admin API) names an
entry of ``plans:`` in the configuration (:class:`~gateway.config.PlanConfig`). The policy
enforces four limits, all kept in the shared store so every gateway process sees the same
numbers:

- **monthly outbound messages** per tenant: a counter per calendar month (UTC). A turn
  *reserves* its replies with one atomic ``Store.incr``; a reservation that would pass the
  limit is given back and refused. Because the increment and the check are one atomic
  step, two processes can never both take the last unit: the limit is never exceeded by
  even one message. A process that dies between reservation and commit leaves the units
  counted (the tenant loses a few messages of quota, never gains any).
- **inbound messages per user**: a token bucket per tenant, channel and sender.
- **replies per conversation**: a token bucket per conversation (a brake on bot loops).
- **paid LINE pushes** per tenant and month: the LINE connector calls
  :meth:`QuotaPolicy.allow_paid_push` before each push (see docs/quotas.md).

When a tenant's monthly usage reaches ``soft_limit_ratio`` of a limit, the tenant gets one
webhook per window (signed with :mod:`gateway.signing`) at its ``notify_url``, held to the
SSRF guard of :mod:`gateway.netguard` unless the tenant sets ``notify_allow_private: true``.

The policy holds no state of its own beyond a short cache of plan overrides, so any
component may build one from the shared resources (:meth:`QuotaPolicy.from_context`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict

from gateway.audit import AuditEvent, AuditLog
from gateway.config import GatewayConfig, PlanConfig
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.models import ConversationKey, InboundMessage, utcnow
from gateway.netguard import guarded_session, refused_by_guard
from gateway.observability import get_logger
from gateway.signing import SIGNATURE_HEADER, sign
from gateway.store import Keyspace, Store
from gateway.usage import Usage

if TYPE_CHECKING:
    from connectors.base import ConnectorContext

__all__ = ["QuotaPolicy", "QuotaStatus", "QuotaUsage", "month_window"]

log = get_logger(__name__)

_WINDOW_SLACK_SECONDS = 35 * 86400  # keep last month's counters readable for a while
_PLAN_CACHE_SECONDS = 5.0
_WEBHOOK_ATTEMPTS = 3

QuotaName = Literal["outbound", "line_pushes"]
OUTBOUND: QuotaName = "outbound"
LINE_PUSHES: QuotaName = "line_pushes"


def month_window(now: datetime | None = None) -> str:
    """The quota window a moment falls in: its calendar month in UTC, ``YYYY-MM``."""
    return (now or utcnow()).astimezone(UTC).strftime("%Y-%m")


def _seconds_to_window_end(now: datetime) -> float:
    now = now.astimezone(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return (datetime(year, month, 1, tzinfo=UTC) - now).total_seconds()


class QuotaUsage(BaseModel):
    model_config = ConfigDict(frozen=True)

    used: int
    limit: int | None
    remaining: int | None
    soft_limit: int | None


class QuotaStatus(BaseModel):
    """Where a tenant stands in the current window."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    plan: str
    window: str
    outbound_messages: QuotaUsage
    line_pushes: QuotaUsage
    limits: PlanConfig


@dataclass(slots=True)
class _CachedPlan:
    name: str
    until: float


class QuotaPolicy:
    def __init__(
        self,
        *,
        config: GatewayConfig,
        store: Store,
        keyspace: Keyspace,
        metrics: Metrics,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.keyspace = keyspace
        self.metrics = metrics
        self.http = http
        self.usage = Usage(store, keyspace)
        self.audit = AuditLog(store, keyspace)
        self._plans: dict[str, _CachedPlan] = {}
        self._webhooks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_context(cls, context: ConnectorContext) -> QuotaPolicy:
        """A policy over a connector's shared resources (all its state lives in the store)."""
        return cls(
            config=context.config,
            store=context.store,
            keyspace=context.keyspace,
            metrics=context.metrics,
            http=context.http,
        )

    async def aclose(self) -> None:
        """Wait briefly for warning webhooks in flight, then cancel the rest."""
        pending = list(self._webhooks)
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- plans -----------------------------------------------------------------------------------
    def plan_override_key(self, tenant: str) -> str:
        return self.keyspace.plan_override(tenant)

    async def plan_name(self, tenant: str) -> str:
        """The tenant's plan: the admin override if one is set, else the configured one."""
        cached = self._plans.get(tenant)
        if cached is not None and cached.until > time.monotonic():
            return cached.name
        override = await self.store.get_record(self.plan_override_key(tenant))
        name = override.decode() if override is not None else None
        if name is None or name not in self.config.plans:
            configured = self.config.tenant(tenant)
            name = configured.plan if configured is not None else "free"
        self._plans[tenant] = _CachedPlan(name, time.monotonic() + _PLAN_CACHE_SECONDS)
        return name

    async def plan(self, tenant: str) -> PlanConfig:
        return self.config.plans.get(await self.plan_name(tenant), PlanConfig())

    async def set_plan(self, tenant: str, plan: str) -> None:
        if plan not in self.config.plans:
            raise KeyError(plan)
        await self.store.put_record(self.plan_override_key(tenant), plan.encode())
        self._plans.pop(tenant, None)

    # -- monthly quotas ----------------------------------------------------------------------------
    def _counter(self, tenant: str, name: QuotaName, now: datetime) -> str:
        return self.keyspace.quota_counter(tenant, name, month_window(now))

    @staticmethod
    def _limit(plan: PlanConfig, name: QuotaName) -> int | None:
        return plan.monthly_outbound_messages if name == OUTBOUND else plan.monthly_line_pushes

    async def _used(self, tenant: str, name: QuotaName, now: datetime) -> int:
        # incr by 0 reads the counter atomically without changing it.
        return await self.store.incr(
            self._counter(tenant, name, now),
            0,
            ttl=_seconds_to_window_end(now) + _WINDOW_SLACK_SECONDS,
        )

    async def _reserve(self, tenant: str, name: QuotaName, amount: int) -> bool:
        plan = await self.plan(tenant)
        limit = self._limit(plan, name)
        if limit is None or amount <= 0:
            return True
        now = utcnow()
        key = self._counter(tenant, name, now)
        ttl = _seconds_to_window_end(now) + _WINDOW_SLACK_SECONDS
        used = await self.store.incr(key, amount, ttl=ttl)
        if used > limit:
            await self.store.incr(key, -amount, ttl=ttl)
            self.metrics.quota_events.labels(name, "refused").inc()
            return False
        self.metrics.quota_events.labels(name, "reserved").inc(amount)
        threshold = math.ceil(limit * plan.soft_limit_ratio)
        if used >= threshold:
            await self._soft_limit_reached(tenant, name, used=used, limit=limit, now=now)
        return True

    async def outbound_exhausted(self, tenant: str) -> bool:
        """True when the tenant cannot send one more message this window (a cheap pre-check
        before running an agent; the binding check is :meth:`reserve_outbound`)."""
        limit = (await self.plan(tenant)).monthly_outbound_messages
        if limit is None:
            return False
        return await self._used(tenant, OUTBOUND, utcnow()) >= limit

    async def reserve_outbound(self, tenant: str, amount: int) -> bool:
        """Atomically take ``amount`` messages of this month's quota, or nothing at all."""
        return await self._reserve(tenant, OUTBOUND, amount)

    async def release_outbound(self, tenant: str, amount: int) -> None:
        """Give back a reservation whose messages were never queued."""
        if amount <= 0 or (await self.plan(tenant)).monthly_outbound_messages is None:
            return
        now = utcnow()
        await self.store.incr(
            self._counter(tenant, OUTBOUND, now),
            -amount,
            ttl=_seconds_to_window_end(now) + _WINDOW_SLACK_SECONDS,
        )

    async def allow_paid_push(self, tenant: str, *, channel: str = "line") -> bool:
        """The hook the LINE connector calls before a billed push: True to go ahead.

        Counts the push in the monthly push quota and in usage; False (nothing counted)
        when the plan's ``monthly_line_pushes`` is used up.
        """
        if not await self._reserve(tenant, LINE_PUSHES, 1):
            await self.usage.record(tenant=tenant, channel=channel, persona=None, over_quota=1)
            return False
        await self.usage.record(tenant=tenant, channel=channel, persona=None, line_pushes=1)
        return True

    # -- rate limits -------------------------------------------------------------------------------
    async def allow_inbound(self, message: InboundMessage) -> bool:
        """Take one token from the sender's inbound bucket (False: drop this message)."""
        conv = message.conversation
        plan = await self.plan(conv.tenant)
        per_minute = plan.inbound_per_user_per_minute
        if per_minute is None:
            return True
        result = await self.store.take_tokens(
            self.inbound_bucket_key(conv, message.sender.id),
            rate=per_minute / 60.0,
            burst=plan.inbound_burst,
        )
        if not result.allowed:
            self.metrics.quota_events.labels("inbound_rate", "refused").inc()
        return result.allowed

    def inbound_bucket_key(self, conversation: ConversationKey, sender_id: str) -> str:
        return self.keyspace.inbound_bucket(
            conversation.tenant, conversation.channel.value, sender_id
        )

    def reply_bucket_key(self, conversation: ConversationKey) -> str:
        return self.keyspace.reply_bucket(conversation.key)

    async def allow_replies(self, conversation: ConversationKey, count: int) -> bool:
        """Take ``count`` tokens from the conversation's reply bucket, or none at all."""
        plan = await self.plan(conversation.tenant)
        per_minute = plan.replies_per_conversation_per_minute
        if per_minute is None or count <= 0:
            return True
        result = await self.store.take_tokens(
            self.reply_bucket_key(conversation),
            rate=per_minute / 60.0,
            burst=max(plan.reply_burst, count),
            cost=count,
        )
        if not result.allowed:
            self.metrics.quota_events.labels("reply_rate", "refused").inc()
        return result.allowed

    # -- over quota --------------------------------------------------------------------------------
    def notice_key(self, conversation: ConversationKey, now: datetime | None = None) -> str:
        return self.keyspace.quota_notice(conversation.key, month_window(now))

    async def claim_notice(self, conversation: ConversationKey) -> bool:
        """True exactly once per window and conversation: the turn that may send the notice."""
        now = utcnow()
        return await self.store.claim(
            self.notice_key(conversation, now), ttl=_seconds_to_window_end(now) + 86400
        )

    async def status(self, tenant: str) -> QuotaStatus:
        name = await self.plan_name(tenant)
        plan = self.config.plans.get(name, PlanConfig())
        now = utcnow()

        async def one(quota: QuotaName) -> QuotaUsage:
            limit = self._limit(plan, quota)
            used = await self._used(tenant, quota, now)
            return QuotaUsage(
                used=used,
                limit=limit,
                remaining=None if limit is None else max(0, limit - used),
                soft_limit=None if limit is None else math.ceil(limit * plan.soft_limit_ratio),
            )

        return QuotaStatus(
            tenant=tenant,
            plan=name,
            window=month_window(now),
            outbound_messages=await one(OUTBOUND),
            line_pushes=await one(LINE_PUSHES),
            limits=plan,
        )

    # -- soft-limit warning ------------------------------------------------------------------------
    def warning_key(self, tenant: str, name: QuotaName, now: datetime) -> str:
        return self.keyspace.quota_warning(tenant, name, month_window(now))

    async def _soft_limit_reached(
        self, tenant: str, name: QuotaName, *, used: int, limit: int, now: datetime
    ) -> None:
        key = self.warning_key(tenant, name, now)
        if not await self.store.claim(key, ttl=_seconds_to_window_end(now) + 86400):
            return  # already warned (or being warned) this window
        self.metrics.quota_events.labels(name, "soft_limit").inc()
        await self.audit.write(
            AuditEvent(
                actor="gateway",
                action="quota.soft_limit",
                tenant=tenant,
                detail={"quota": name, "used": used, "limit": limit, "window": month_window(now)},
            )
        )
        configured = self.config.tenant(tenant)
        if configured is None or configured.notify_url is None or self.http is None:
            return
        payload = {
            "type": "quota.soft_limit",
            "tenant": tenant,
            "quota": name,
            "used": used,
            "limit": limit,
            "window": month_window(now),
            "at": now.isoformat(),
        }
        task = asyncio.create_task(
            self._send_warning(
                configured.notify_url,
                [s.get_secret_value() for s in configured.notify_secrets],
                payload,
                claim_key=key,
                allow_private=configured.notify_allow_private,
            )
        )
        self._webhooks.add(task)
        task.add_done_callback(self._webhooks.discard)

    async def _send_warning(
        self,
        url: str,
        secrets: list[str],
        payload: dict[str, object],
        *,
        claim_key: str,
        allow_private: bool,
    ) -> None:
        assert self.http is not None  # checked by the caller
        if allow_private:
            await self._post_warning(self.http, url, secrets, payload, claim_key=claim_key)
            return
        # A guarded session of its own: at most one warning per quota and window, so the
        # cost of a fresh connection does not matter, and the app's session stays unguarded
        # for the platform APIs.
        async with guarded_session() as session:
            await self._post_warning(session, url, secrets, payload, claim_key=claim_key)

    async def _post_warning(
        self,
        session: aiohttp.ClientSession,
        url: str,
        secrets: list[str],
        payload: dict[str, object],
        *,
        claim_key: str,
    ) -> None:
        body = json.dumps(payload).encode()
        for attempt in range(1, _WEBHOOK_ATTEMPTS + 1):
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secrets, body)}
            try:
                async with session.post(
                    url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
                ) as response:
                    if response.status < 300:
                        log.info("quota.warning_sent", tenant=payload["tenant"])
                        return
                    problem = f"status {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                refused = refused_by_guard(exc)
                if refused is not None:
                    # Its DNS answer names a private address. The claim is kept: trying again
                    # on every reservation this window would only repeat the refusal.
                    self.metrics.quota_events.labels("notify", "refused").inc()
                    log.warning("quota.warning_refused", tenant=payload["tenant"], reason="ssrf")
                    return
                problem = type(exc).__name__
            log.warning("quota.warning_failed", attempt=attempt, problem=problem)
            await asyncio.sleep(0.5 * attempt)
        # Give the claim back so the next reservation over the threshold tries again.
        with contextlib.suppress(StoreError):
            await self.store.delete([claim_key])
