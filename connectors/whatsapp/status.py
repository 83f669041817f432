"""Twilio status callbacks, ``POST /whatsapp/status``: delivery receipts, failures dead-lettered.

A status callback is not a message: nobody answers it, and no turn or conversation order
depends on it. It stays on the acknowledged path, where it is verified like an inbound
webhook and then written in one admission — the receipt on the conversation's receipts log,
and for ``failed`` / ``undelivered`` a dead letter with Twilio's ErrorCode — deduped on
(MessageSid, status). Its conversation is only known from the record the send left (a
store read), so it could not be partitioned into an inbox without that read anyway, and
storing the receipt where the platform's answer waits means Twilio's retry is the only
retry it needs.

Guarantees: a callback is acknowledged only once its receipt is stored (503 otherwise, so
Twilio retries); a callback for a message the gateway never sent is acknowledged and counted
as ``status_unmatched``; a failed part is forgotten as sent, so an operator's replay of the
dead letter sends that part again and only that one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from connectors.base import ConnectorContext, InboundRequest, InboundResult
from connectors.whatsapp.channels import ChannelTable, WhatsAppChannel
from connectors.whatsapp.edge import ACK, WebhookEdge
from connectors.whatsapp.signature import Form, parse_form
from gateway.deadletters import DeadLetter
from gateway.errors import IngestUnavailableError, PayloadError, StoreError, UnknownTenantError
from gateway.models import Channel, ConversationKey, DeliveryReceipt, stored_json
from gateway.observability import get_logger
from gateway.store import Admission

__all__ = [
    "DEAD_STATUSES",
    "MAX_PARTS",
    "RECEIPT_STATUS",
    "WINDOW_CLOSED_CODE",
    "ReceiptStatus",
    "StatusCallbacks",
]

log = get_logger(__name__)

WINDOW_CLOSED_CODE = 63016  # Twilio: outside the 24-hour window and no template
ReceiptStatus = Literal["sent", "queued", "delivered", "read", "failed", "undelivered"]
# Message statuses as Twilio reports them → the receipt's status.
RECEIPT_STATUS: dict[str, ReceiptStatus] = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "partially_delivered": "delivered",
    "read": "read",
    "failed": "failed",
    "undelivered": "undelivered",
}
DEAD_STATUSES = frozenset({"failed", "undelivered"})
MAX_PARTS = 64  # a reply is never split into more parts than this


class StatusCallbacks:
    """Signed status callbacks become receipts (and dead letters) on the conversation."""

    def __init__(self, context: ConnectorContext, table: ChannelTable, edge: WebhookEdge) -> None:
        self.context = context
        self._table = table
        self._edge = edge

    async def receive(self, request: InboundRequest) -> InboundResult:
        form = parse_form(request)
        channel = self._channel_for(request, form)
        self._edge.verify(request, form, channel)
        fields = form.fields
        sid = fields.get("MessageSid") or fields.get("SmsSid") or ""
        twilio_status = (fields.get("MessageStatus") or fields.get("SmsStatus") or "").lower()
        if not sid or not twilio_status:
            raise PayloadError("MessageSid and MessageStatus are required")
        events = self.context.metrics.channel_events
        receipt_status = RECEIPT_STATUS.get(twilio_status)
        ok = InboundResult(response=ACK)
        if receipt_status is None:
            events.labels("whatsapp", "status_other").inc()
            return ok
        events.labels("whatsapp", f"status_{twilio_status}").inc()
        try:
            record = await self._outbound_record(request.query.get("ob"), sid)
            if record is None:
                events.labels("whatsapp", "status_unmatched").inc()
                log.warning("whatsapp.status_unmatched", message_sid=sid, status=twilio_status)
                return ok
            await self._store_status(channel, fields, record, sid, twilio_status, receipt_status)
        except StoreError as exc:
            raise IngestUnavailableError("the status could not be stored; retry later") from exc
        return ok

    def _channel_for(self, request: InboundRequest, form: Form) -> WhatsAppChannel:
        tenant, name = request.query.get("tenant"), request.query.get("channel")
        if tenant is not None:
            channel = self._table.named(tenant, name or "whatsapp")
            if channel is None:
                raise UnknownTenantError("no WhatsApp channel for this status callback")
            return channel
        # Callbacks configured on the Messaging Service in the console carry no query.
        return self._table.for_request(form.fields, ours="From")

    async def _outbound_record(self, outbound_id: str | None, sid: str) -> dict[str, Any] | None:
        store, keys = self.context.store, self.context.keyspace
        if outbound_id is None:
            found = await store.get_record(keys.whatsapp_sid(sid))
            if found is None:
                return None
            outbound_id = found.decode()
        raw = await store.get_record(keys.whatsapp_outbound(outbound_id))
        if raw is None:
            return None
        record: dict[str, Any] = json.loads(raw)
        return record

    async def _store_status(
        self,
        channel: WhatsAppChannel,
        fields: Mapping[str, str],
        record: Mapping[str, Any],
        sid: str,
        twilio_status: str,
        receipt_status: ReceiptStatus,
    ) -> None:
        ctx = self.context
        conv = ConversationKey.model_validate(record["conversation"])
        partition = ctx.keyspace.partition(conv.key)
        error_code = fields.get("ErrorCode") or None
        receipt = DeliveryReceipt(
            outbound_id=record["outbound_id"],
            idempotency_key=record["idempotency_key"],
            channel=Channel.WHATSAPP,
            status=receipt_status,
            platform_message_id=sid,
            detail={
                "twilio_status": twilio_status,
                "error_code": error_code,
                "source": "status_callback",
            },
        )
        admissions = [
            Admission(
                dedupe_key=ctx.keyspace.status_seen(
                    partition, Channel.WHATSAPP.value, channel.tenant, sid, twilio_status
                ),
                stream=ctx.keyspace.receipts(conv.key),
                payload=stored_json(receipt),
                log_cap=ctx.config.store.receipts_per_conversation,
            )
        ]
        if twilio_status in DEAD_STATUSES:
            window = error_code == str(WINDOW_CLOSED_CODE)
            letter = DeadLetter(
                kind="outbound",
                reason=(
                    f"Twilio reported {twilio_status}"
                    + (f" with error {error_code}" if error_code else "")
                    + (" (window closed)" if window else "")
                ),
                code=error_code or twilio_status,
                attempts=1,
                channel=Channel.WHATSAPP.value,
                tenant=conv.tenant,
                conversation=conv.key,
                partition=partition,
                message=record.get("message"),
            )
            admissions.append(
                Admission(
                    dedupe_key=ctx.keyspace.status_dead_letter_seen(
                        partition, Channel.WHATSAPP.value, channel.tenant, sid, twilio_status
                    ),
                    stream=ctx.keyspace.dead_letters(partition),
                    payload=letter.model_dump_json().encode(),
                )
            )
        added = await ctx.store.admit(admissions, dedupe_ttl=ctx.config.store.dedupe_ttl_seconds)
        if len(added) > 1 and added[1] is not None:
            await self._forget_failed_part(conv, str(record["idempotency_key"]), sid)
            ctx.metrics.dead_letters.labels("whatsapp", error_code or twilio_status).inc()
            log.warning(
                "whatsapp.delivery_failed",
                message_sid=sid,
                status=twilio_status,
                error_code=error_code,
                conversation=conv.key,
            )

    async def _forget_failed_part(
        self, conv: ConversationKey, idempotency_key: str, sid: str
    ) -> None:
        """Twilio failed this part after accepting it: let an operator's replay send it again
        (the parts that did arrive stay recorded, so a replay sends only what failed)."""
        store, keys = self.context.store, self.context.keyspace
        for n in range(MAX_PARTS):
            key = keys.whatsapp_part(conv.key, idempotency_key, n)
            found = await store.get_record(key)
            if found is None:
                return
            if found.decode() == sid:
                await store.delete([key])
                return
