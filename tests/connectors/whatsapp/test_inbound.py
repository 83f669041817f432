"""Inbound WhatsApp messages: dedupe on MessageSid, media, buttons, tenant selection."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from connectors.whatsapp.emulator import TwilioEmulator
from gateway.deadletters import DeadLetter
from gateway.envelope import RawEvent
from gateway.errors import ConfigError
from gateway.models import EventKind, WhatsAppReplyContext
from tests.connectors.whatsapp.conftest import ConfigFactory
from tests.connectors.whatsapp.support import (
    CUSTOMER,
    SENDER,
    SERVICE_SID,
    dead_letters,
    has_state,
    inbox_messages,
    sender_for,
)
from tests.harness import eventually, running_gateway


async def test_twilio_retry_of_the_same_message_sid_gets_one_reply(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Twilio re-posting a MessageSid (connection retry) is acked again but answered once."""
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        params = sender.inbound(from_=CUSTOMER, to=SENDER, body="only once")
        first = await sender.post(params)
        await emulator.wait_for(1)
        again = await asyncio.gather(sender.post(params), sender.post(params))
        assert [r[0] for r in (first, *again)] == [200, 200, 200]
        await asyncio.sleep(0.3)
        assert len(emulator.messages) == 1
        assert len(await inbox_messages(gw)) == 1


async def test_media_become_attachments(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """NumMedia / MediaUrlN / MediaContentTypeN become ordered attachments with their types."""
    media = [
        ("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1", "image/jpeg"),
        (
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME2",
            "application/pdf",
        ),
    ]
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        status, _ = await sender.send(from_=CUSTOMER, to=SENDER, body="my invoice", media=media)
        assert status == 200
        await emulator.wait_for(1)
        [message] = await inbox_messages(gw)
        assert [(a.kind, a.mime_type, a.url) for a in message.attachments] == [
            ("image", "image/jpeg", media[0][0]),
            ("file", "application/pdf", media[1][0]),
        ]
        assert message.text == "my invoice"


async def test_quick_reply_button_is_an_action_with_its_payload(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """A quick-reply tap (ButtonPayload) arrives as an ACTION carrying the payload."""
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        status, _ = await sender.send(
            from_=CUSTOMER, to=SENDER, body="", button=("opening-hours", "Opening hours")
        )
        assert status == 200
        [reply] = await emulator.wait_for(1)
        [message] = await inbox_messages(gw)
        assert message.kind is EventKind.ACTION
        assert message.text == "opening-hours"
        assert reply.body is not None
        assert reply.body.startswith("opening-hours")


async def test_profile_and_addresses_are_kept_for_the_reply(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """From/To/ProfileName/WaId are normalised: the conversation is the customer's address."""
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        await sender.send(from_=CUSTOMER, to=SENDER, body="hi", profile_name="Zoë")
        await emulator.wait_for(1)
        [message] = await inbox_messages(gw)
        assert message.conversation.conversation_id == CUSTOMER
        assert message.sender.display_name == "Zoë"
        assert message.reply_context == WhatsAppReplyContext(
            from_address=CUSTOMER, to_address=SENDER, wa_id="14155550100", profile_name="Zoë"
        )


async def test_messaging_service_selects_the_tenant_and_sends_the_reply(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """A channel configured by Messaging Service is found by MessagingServiceSid and replies
    through the service."""
    config = make_config(from_number=None, messaging_service_sid=SERVICE_SID)
    async with running_gateway(config) as gw:
        sender = sender_for(gw, http)
        status, _ = await sender.send(
            from_=CUSTOMER, to="whatsapp:+14155239999", body="hi", messaging_service_sid=SERVICE_SID
        )
        assert status == 200
        [reply] = await emulator.wait_for(1)
        assert reply.messaging_service_sid == SERVICE_SID
        assert reply.from_ is None


async def test_unknown_sender_number_is_404_and_malformed_input_is_400(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """A To no channel owns gets 404; a bad MessageSid or a JSON body gets 4xx; nothing stored."""
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        status, _ = await sender.send(from_=CUSTOMER, to="whatsapp:+14155230000", body="hi")
        assert status == 404
        bad = sender.inbound(from_=CUSTOMER, to=SENDER, body="hi", message_sid="SM-not-a-sid")
        assert (await sender.post(bad))[0] == 400
        async with http.post(f"{gw.url}/whatsapp/webhook", json={"Body": "hi"}) as response:
            assert response.status == 415
        await asyncio.sleep(0.2)
        assert await inbox_messages(gw) == []
        assert emulator.messages == []


async def test_hostile_signed_fields_are_kept_and_dead_lettered_not_a_crash(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """A non-UTF-8 body gets 400. Signed but nonsensical NumMedia or missing media URLs are
    acknowledged (Twilio signed them: refusing would lose them), never answered, and
    dead-lettered by the worker with their reason and the form whole."""
    overrides = ({"NumMedia": "many"}, {"NumMedia": "99"}, {"NumMedia": "1"})
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with http.post(
            f"{gw.url}/whatsapp/webhook", data=b"Body=\xff\xfe&To=x", headers=headers
        ) as response:
            assert response.status == 400
        sent: dict[str, dict[str, str]] = {}
        for override in overrides:
            params = {**sender.inbound(from_=CUSTOMER, to=SENDER, body="x"), **override}
            assert (await sender.post(params))[0] == 200
            sent[params["MessageSid"]] = params

        async def three_letters() -> list[DeadLetter]:
            letters = await dead_letters(gw)
            return letters if len(letters) == len(overrides) else []

        letters = await eventually(three_letters)
        kept = {}
        for letter in letters:
            assert letter.raw is not None
            assert (letter.kind, letter.channel, letter.tenant) == ("inbound", "whatsapp", "acme")
            event = RawEvent.model_validate_json(letter.raw)
            assert event.event == sent[event.event_id]  # the form whole, as Twilio signed it
            kept[event.event_id] = letter.reason
        assert sorted(kept.values()) == [
            "bad_media: MediaUrl0 is missing",
            "bad_media: NumMedia is not a number",
            "bad_media: NumMedia is not between 0 and 10",
        ]
        failed = gw.runtime.metrics.registry.get_sample_value(
            "flowbiz_inbound_total", {"channel": "whatsapp", "outcome": "parse_failed"}
        )
        assert failed == len(overrides)
        assert not await has_state(gw)
        assert emulator.messages == []


async def test_status_callbacks_without_a_public_url_are_a_startup_error(
    make_config: ConfigFactory,
) -> None:
    """status_callback needs a public base URL to give Twilio; the gateway refuses to start."""
    with pytest.raises(ConfigError, match="status_callback"):
        async with running_gateway(make_config(public_base_url=None)):
            pass
