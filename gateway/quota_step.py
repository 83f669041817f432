"""One message's quota decisions in the worker's turn, taken once and kept across the
turn's commit retries (gateway/worker.py): the inbound rate limit asked once, the outbound
quota reserved for exactly the replies committed, and whatever was reserved but not
committed given back to the tenant.
"""

from __future__ import annotations

from gateway.models import InboundMessage
from gateway.quotas import QuotaPolicy

__all__ = ["QuotaStep"]


class QuotaStep:
    """One message's quota decisions, taken once and kept across commit retries."""

    def __init__(self, policy: QuotaPolicy | None, message: InboundMessage) -> None:
        self.policy = policy
        self.message = message
        self.reserved = 0
        self._inbound: bool | None = None
        self._replies_allowed: bool | None = None
        self._notice: bool | None = None
        self.audited = False

    async def inbound_allowed(self) -> bool:
        if self.policy is None:
            return True
        if self._inbound is None:
            self._inbound = await self.policy.allow_inbound(self.message)
        return self._inbound

    async def exhausted_before_agent(self) -> bool:
        if self.policy is None or self.reserved:
            return False
        return await self.policy.outbound_exhausted(self.message.conversation.tenant)

    async def settle(self, count: int) -> str:
        """Reserve quota for ``count`` replies: "ok", "reply_capped" or "over_quota"."""
        if self.policy is None or count == 0:
            await self._adjust(0)
            return "ok"
        if self._replies_allowed is None:
            self._replies_allowed = await self.policy.allow_replies(
                self.message.conversation, count
            )
        if not self._replies_allowed:
            await self._adjust(0)
            return "reply_capped"
        return "ok" if await self._adjust(count) else "over_quota"

    async def _adjust(self, count: int) -> bool:
        """Make the reservation exactly ``count``; False (and none held) if refused."""
        if self.policy is None or count == self.reserved:
            return True
        tenant = self.message.conversation.tenant
        if count < self.reserved:
            await self.policy.release_outbound(tenant, self.reserved - count)
            self.reserved = count
            return True
        if await self.policy.reserve_outbound(tenant, count - self.reserved):
            self.reserved = count
            return True
        await self._adjust(0)
        return False

    async def notice_claimed(self) -> bool:
        if self.policy is None:
            return False
        if self._notice is None:
            self._notice = await self.policy.claim_notice(self.message.conversation)
        return self._notice

    async def give_back(self) -> None:
        if self.policy is not None and self.reserved:
            await self.policy.release_outbound(self.message.conversation.tenant, self.reserved)
            self.reserved = 0
