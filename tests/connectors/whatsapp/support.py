"""Constants and store probes shared by the WhatsApp connector tests."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from connectors.whatsapp.emulator import TwilioWebhookSender
from gateway.models import Channel, ConversationKey, InboundMessage
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
    """Everything ever appended to the inbox (acknowledged entries stay readable)."""
    store, keys = gw.runtime.store, gw.runtime.keyspace
    assert store is not None
    found: list[InboundMessage] = []
    for p in range(keys.partitions):
        for entry in await store.range(keys.inbox(p), count=1000):
            found.append(InboundMessage.model_validate_json(entry.payload))
    return found


async def has_state(gw: RunningGateway, customer: str = CUSTOMER) -> bool:
    store = gw.runtime.store
    assert store is not None
    return await store.get_state(gw.runtime.keyspace.state(conversation(customer).key)) is not None
