"""The dispatcher: delivers outbox entries through their channel's connector.

Per conversation, in order (see :mod:`gateway.partitions`). Before sending it waits on the
platform's pacing bucket (delay, never drop). A transient failure is retried with
exponential backoff and jitter, or after the platform's ``Retry-After``; a permanent
failure, or too many tries, moves the message to the dead-letter list with the reason.

A successful send is recorded under the message's idempotency key together with the
acknowledgement, atomically; an entry whose key is already recorded is acknowledged without
sending, so a crash between send and acknowledgement does not post twice when the platform
offers no idempotency of its own. A send whose outcome is unknown (the connection dropped
after the request was written) is never retried blindly: connectors report it as permanent
with code ``outcome_unknown`` and it waits in the dead-letter list for an operator.

Every dead letter carries a :class:`~gateway.errors.DeliveryFailure` code (the connectors'
codes, or the dispatcher's own: ``outcome_unknown`` for its delivery timeout, ``no_channel``
for a channel without a connector), counted in ``flowbiz_dead_letters_total{reason}``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping

from pydantic import ValidationError

from connectors.base import Connector
from gateway.config import GatewayConfig
from gateway.deadletters import OUTBOX_GROUP, DeadLetter, move_to_dead_letters
from gateway.errors import DeliveryFailure, PermanentDeliveryError, TransientDeliveryError
from gateway.metrics import Metrics
from gateway.models import Channel, OutboundMessage, stored_json, utcnow
from gateway.observability import bind, get_logger
from gateway.send_policy import record_until_stored
from gateway.store import Commit, Keyspace, LogAppend, Store, StreamEntry
from gateway.usage import record_usage

__all__ = ["Dispatcher", "backoff_delay"]

log = get_logger(__name__)


def backoff_delay(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None
) -> float:
    """Seconds to wait before try ``attempt + 1``: the platform's wish, else full jitter."""
    if retry_after is not None and retry_after >= 0:
        return min(cap, retry_after) + random.uniform(0, base / 4)  # noqa: S311 - jitter, not a key
    exp = min(cap, base * 2 ** (attempt - 1))
    return random.uniform(exp / 2, exp)  # noqa: S311 - jitter, not a key


class Dispatcher:
    def __init__(
        self,
        *,
        config: GatewayConfig,
        store: Store,
        keyspace: Keyspace,
        connectors: Mapping[Channel, Connector],
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.store = store
        self.keyspace = keyspace
        self.connectors = connectors
        self.metrics = metrics
        # Applies tenants changed in the store if this process has not yet; True when it did
        # (gateway/tenant_sync.py). A reply for a tenant another process just added then
        # finds its channel instead of dead-lettering for up to a poll.
        self.catch_up: Callable[[], Awaitable[bool]] | None = None

    async def _caught_up(self) -> bool:
        return self.catch_up is not None and await self.catch_up()

    async def handle(self, partition: int, entry: StreamEntry) -> None:
        outbox = self.keyspace.outbox(partition)
        ack = (outbox, OUTBOX_GROUP, entry.id)
        try:
            message = OutboundMessage.model_validate_json(entry.payload)
        except ValidationError as exc:
            letter = DeadLetter(
                kind="outbound",
                reason=f"unparsable outbox entry: {exc.error_count()} errors",
                partition=partition,
                raw=entry.payload.decode("utf-8", "replace")[:10_000],
            )
            await move_to_dead_letters(self.store, self.keyspace, letter, ack=ack)
            return
        conv = message.conversation
        with bind(
            trace_id=message.trace_id,
            tenant=conv.tenant,
            channel=conv.channel.value,
            conversation=conv.key,
            outbound_id=message.id,
        ):
            await self._deliver(partition, message, ack)

    async def _deliver(
        self, partition: int, message: OutboundMessage, ack: tuple[str, str, str]
    ) -> None:
        channel = message.conversation.channel.value
        delivered_key = self.keyspace.delivered(partition, message.idempotency_key)
        if await self.store.get_record(delivered_key) is not None:
            await self.store.ack(*ack[:2], [ack[2]])
            self.metrics.deliveries.labels(channel, "already_delivered").inc()
            return
        connector = self.connectors.get(message.conversation.channel)
        if connector is None and await self._caught_up():
            connector = self.connectors.get(message.conversation.channel)
        if connector is None:
            await self._dead_letter(
                partition,
                message,
                ack,
                reason="no connector for this channel",
                code=DeliveryFailure.NO_CHANNEL,
                attempts=0,
            )
            return
        pipeline = self.config.pipeline
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            await self._pace(connector, message)
            try:
                async with asyncio.timeout(pipeline.delivery_timeout_seconds):
                    receipt = await connector.send(message)
            except TransientDeliveryError as exc:
                self.metrics.deliveries.labels(channel, "transient_failure").inc()
                if attempt >= pipeline.max_delivery_attempts:
                    await self._dead_letter(
                        partition,
                        message,
                        ack,
                        reason=f"gave up after {attempt} attempts: {exc}",
                        code=exc.code,
                        platform_code=exc.platform_code,
                        attempts=attempt,
                    )
                    return
                delay = backoff_delay(
                    attempt,
                    base=pipeline.retry_base_seconds,
                    cap=pipeline.retry_max_seconds,
                    retry_after=exc.retry_after,
                )
                self.metrics.retries.labels(channel).inc()
                log.info(
                    "dispatch.retry_scheduled",
                    attempt=attempt,
                    delay=round(delay, 3),
                    code=exc.code,
                )
                await asyncio.sleep(delay)
                continue
            except PermanentDeliveryError as exc:
                if (
                    exc.code == DeliveryFailure.NO_CHANNEL
                    and not refreshed
                    and await self._caught_up()
                ):
                    refreshed = True  # once: the tenants this process serves just changed
                    connector = self.connectors.get(message.conversation.channel) or connector
                    continue
                self.metrics.deliveries.labels(channel, "permanent_failure").inc()
                await self._dead_letter(
                    partition,
                    message,
                    ack,
                    reason=str(exc),
                    code=exc.code,
                    platform_code=exc.platform_code,
                    attempts=attempt,
                )
                return
            except TimeoutError:
                # The request may have reached the platform: do not send it again blindly.
                self.metrics.deliveries.labels(channel, "outcome_unknown").inc()
                await self._dead_letter(
                    partition,
                    message,
                    ack,
                    reason="delivery timed out; the platform may have received it",
                    code=DeliveryFailure.OUTCOME_UNKNOWN,
                    attempts=attempt,
                )
                return
            receipt_json = stored_json(receipt)
            await self._record_delivery(
                Commit(
                    records=[(delivered_key, receipt_json, self.config.store.dedupe_ttl_seconds)],
                    logs=[
                        LogAppend(
                            self.keyspace.receipts(message.conversation.key),
                            receipt_json,
                            self.config.store.receipts_per_conversation,
                        )
                    ],
                    acks=[ack],
                )
            )
            self.metrics.deliveries.labels(channel, "delivered").inc()
            if message.inbound_received_at is not None:
                latency = (utcnow() - message.inbound_received_at).total_seconds()
                self.metrics.end_to_end_seconds.labels(channel).observe(latency)
            log.info("dispatch.delivered", attempt=attempt)
            return

    async def _record_delivery(self, commit: Commit) -> None:
        """Record a send that happened, retrying while the store is down.

        Letting the StoreError out would hand the entry back and send it a second time
        (Slack, for one, has no idempotency key). Repeating the commit is safe: records are
        overwritten and acks are idempotent; at worst the receipt is appended twice.
        """
        await record_until_stored(lambda: self.store.commit(commit), event="dispatch.record_retry")

    async def _pace(self, connector: Connector, message: OutboundMessage) -> None:
        pacing = connector.pacing(message)
        if pacing is None:
            return
        while True:
            result = await self.store.take_tokens(pacing.key, rate=pacing.rate, burst=pacing.burst)
            if result.allowed:
                return
            await asyncio.sleep(min(result.retry_after, 60.0))

    async def _dead_letter(
        self,
        partition: int,
        message: OutboundMessage,
        ack: tuple[str, str, str],
        *,
        reason: str,
        attempts: int,
        code: DeliveryFailure,
        platform_code: str | None = None,
    ) -> None:
        channel = message.conversation.channel.value
        letter = DeadLetter(
            kind="outbound",
            reason=reason,
            code=code.value,
            platform_code=platform_code,
            attempts=attempts,
            channel=channel,
            tenant=message.conversation.tenant,
            conversation=message.conversation.key,
            partition=partition,
            message=message.model_dump(mode="json"),
        )
        await move_to_dead_letters(self.store, self.keyspace, letter, ack=ack)
        self.metrics.dead_letters.labels(channel, code.value).inc()
        await record_usage(
            self.store,
            self.keyspace,
            tenant=message.conversation.tenant,
            channel=channel,
            persona=message.persona.name,
            counts={"dead_letters": 1},
        )
        log.warning(
            "dispatch.dead_lettered",
            code=code.value,
            platform_code=platform_code,
            attempts=attempts,
        )
