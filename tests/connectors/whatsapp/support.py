"""Constants and store probes shared by the WhatsApp connector tests."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import aiohttp

from connectors.whatsapp.emulator import TwilioWebhookSender
from gateway.deadletters import DeadLetter, list_dead_letters
from gateway.envelope import RawEvent, is_raw_event
from gateway.models import (
    Channel,
    ConversationKey,
    DeliveryReceipt,
    InboundMessage,
    OutboundMessage,
    PersonaPresentation,
    WhatsAppReplyContext,
    new_id,
)
from gateway.state import ConversationState
from gateway.store import Commit, StateWrite
from tests.harness import RunningGateway

ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "wa-test-auth-token-9f8e7d"
SENDER = "whatsapp:+14155238886"
SERVICE_SID = "MG" + "b2" * 16
CUSTOMER = "whatsapp:+14155550100"
PUBLIC_BASE = "https://wa.example.test"
TEMPLATE_SID = "HX" + "c3" * 16
PERSONAS = Path(__file__).parent / "personas"


def sender_for(
    gw: RunningGateway,
    http: aiohttp.ClientSession,
    *,
    public_url: str | None = PUBLIC_BASE,
    via_proxy: bool = False,
    token: str = AUTH_TOKEN,
) -> TwilioWebhookSender:
    return TwilioWebhookSender(
        session=http,
        gateway_url=gw.url,
        account_sid=ACCOUNT_SID,
        auth_token=token,
        public_url=public_url,
        via_proxy=via_proxy,
    )


def conversation(customer: str = CUSTOMER) -> ConversationKey:
    return ConversationKey(tenant="acme", channel=Channel.WHATSAPP, conversation_id=customer)


async def inbox_messages(gw: RunningGateway) -> list[InboundMessage]:
    """Everything ever appended to the inbox (acknowledged entries stay readable), each
    stored form read through the connector's parse, as the worker reads it."""
    store, keys = gw.runtime.store, gw.runtime.keyspace
    assert store is not None
    found: list[InboundMessage] = []
    for p in range(keys.partitions):
        for entry in await store.range(keys.inbox(p), count=1000):
            if not is_raw_event(entry.payload):
                found.append(InboundMessage.model_validate_json(entry.payload))
                continue
            event = RawEvent.model_validate_json(entry.payload)
            message = await gw.runtime.connectors[event.channel].parse(event)
            assert message is not None  # every WhatsApp form is a customer's message
            found.append(message)
    return found


async def has_state(gw: RunningGateway, customer: str = CUSTOMER) -> bool:
    store = gw.runtime.store
    assert store is not None
    return await store.get_state(gw.runtime.keyspace.state(conversation(customer).key)) is not None


def proactive(
    text: str, *, persona: str = "core", customer: str = CUSTOMER, profile: str = "Alice"
) -> OutboundMessage:
    """A message the gateway starts (not a reply): the window decides how it may go out."""
    display = {"core": "Echo Desk", "quiet": "Quiet Desk"}[persona]
    return OutboundMessage(
        conversation=conversation(customer),
        persona=PersonaPresentation(name=persona, display_name=display),
        text=text,
        idempotency_key=f"proactive-{new_id()}",
        reply_context=WhatsAppReplyContext(
            from_address=customer, to_address=SENDER, profile_name=profile
        ),
    )


async def enqueue(gw: RunningGateway, message: OutboundMessage) -> None:
    """Put ``message`` on its outbox partition, as the worker does with replies."""
    store, keys = gw.runtime.store, gw.runtime.keyspace
    assert store is not None
    partition = keys.partition(message.conversation.key)
    await store.append(keys.outbox(partition), message.model_dump_json().encode())


async def age_last_inbound(gw: RunningGateway, hours: float, customer: str = CUSTOMER) -> None:
    """Move the conversation's last inbound message ``hours`` into the past."""
    store, keys = gw.runtime.store, gw.runtime.keyspace
    assert store is not None
    key = keys.state(conversation(customer).key)
    current = await store.get_state(key)
    assert current is not None
    state = ConversationState.model_validate_json(current.value)
    assert state.last_inbound_at is not None
    older = state.model_copy(
        update={"last_inbound_at": state.last_inbound_at - timedelta(hours=hours)}
    )
    written = await store.commit(
        Commit(
            state=StateWrite(
                key=key,
                value=older.model_dump_json().encode(),
                expected_version=current.version,
            )
        )
    )
    assert written is not None


async def dead_letters(gw: RunningGateway) -> list[DeadLetter]:
    store = gw.runtime.store
    assert store is not None
    return [letter for _, letter in await list_dead_letters(store, gw.runtime.keyspace)]


async def receipts(gw: RunningGateway, customer: str = CUSTOMER) -> list[DeliveryReceipt]:
    store = gw.runtime.store
    assert store is not None
    stream = gw.runtime.keyspace.receipts(conversation(customer).key)
    return [
        DeliveryReceipt.model_validate_json(e.payload)
        for e in await store.read_log(stream, count=1000)
    ]
