"""Outbound through the twilio SDK: splitting, retries, permanent errors, the 24-hour window."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from connectors.whatsapp.connector import BODY_LIMIT, WhatsAppConnector, split_body
from connectors.whatsapp.emulator import TwilioEmulator
from gateway.errors import TransientDeliveryError
from gateway.models import Attachment, Channel
from tests.connectors.whatsapp.conftest import ConfigFactory
from tests.connectors.whatsapp.support import (
    CUSTOMER,
    SENDER,
    TEMPLATE_SID,
    age_last_inbound,
    dead_letters,
    enqueue,
    proactive,
    sender_for,
)
from tests.harness import RunningGateway, eventually, running_gateway

WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "elit", "tempor")


def long_text(length: int) -> str:
    words: list[str] = []
    n = 0
    while sum(len(w) + 1 for w in words) < length:
        words.append(f"{WORDS[n % len(WORDS)]}{n}")
        n += 1
    return " ".join(words)[:length].rstrip()


def connector(gw: RunningGateway) -> WhatsAppConnector:
    found = gw.runtime.connectors[Channel.WHATSAPP]
    assert isinstance(found, WhatsAppConnector)
    return found


async def test_a_1700_character_reply_arrives_in_two_ordered_parts(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """A reply over 1,600 characters is split at a word boundary into ordered parts."""
    text = long_text(1700)
    async with running_gateway(make_config()) as gw:
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body=text)
        first, second = await emulator.wait_for(2)
        assert first.body is not None
        assert second.body is not None
        assert len(first.body) <= BODY_LIMIT
        assert len(second.body) <= BODY_LIMIT
        assert f"{first.body} {second.body}" == f"{text}\n\n— Echo Desk"


def test_split_body_keeps_order_and_limits() -> None:
    """Parts stay within the limit (UTF-16 units), in order, cut at spaces, else hard."""
    assert split_body("short") == ["short"]
    assert split_body("") == [""]
    assert split_body("aaaa bbbb cccc", limit=9) == ["aaaa bbbb", "cccc"]
    assert split_body("x" * 25, limit=10) == ["x" * 10, "x" * 10, "x" * 5]
    assert split_body("line one\nline two", limit=12) == ["line one", "line two"]
    assert split_body("ab \U0001f600\U0001f600", limit=4) == ["ab", "\U0001f600\U0001f600"]


async def test_429_with_retry_after_is_retried_and_delivered_once(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Twilio's 429 (20429) is retried after Retry-After and the reply goes out exactly once."""
    emulator.fail_next(1, status=429, code=20429, retry_after=0.2)
    async with running_gateway(make_config()) as gw:
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="busy?")
        [reply] = await emulator.wait_for(1)
        assert reply.body == "busy?\n\n— Echo Desk"
        assert emulator.refused == [(429, 20429)]
        await asyncio.sleep(0.3)
        assert len(emulator.messages) == 1
        assert await dead_letters(gw) == []


async def test_retry_after_header_reaches_the_dispatcher(
    make_config: ConfigFactory, emulator: TwilioEmulator
) -> None:
    """The SDK's exception lacks headers; the connector still reports Retry-After seconds."""
    emulator.fail_next(1, status=429, code=20429, retry_after=7)
    async with running_gateway(make_config()) as gw:
        with pytest.raises(TransientDeliveryError) as caught:
            await connector(gw).send(proactive("hello"))
        assert caught.value.retry_after == 7.0
        assert (caught.value.code, caught.value.platform_code) == ("rate_limited", "20429")


async def test_5xx_is_retried_until_delivered(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Two 503s from the Messages API are retried; the reply is delivered once."""
    emulator.fail_next(2, status=503, code=20503, message="Service Unavailable")
    async with running_gateway(make_config()) as gw:
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="are you there")
        await emulator.wait_for(1)
        assert emulator.refused == [(503, 20503), (503, 20503)]
        await asyncio.sleep(0.3)
        assert len(emulator.messages) == 1


async def test_retry_after_a_partial_send_does_not_repeat_sent_parts(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Part 1 sent, part 2 hit a 429: the retry sends part 2 only."""
    emulator.fail_next(1, status=429, code=20429, retry_after=0.1, after=1)
    async with running_gateway(make_config()) as gw:
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body=long_text(1700))
        first, second = await emulator.wait_for(2)
        assert emulator.refused == [(429, 20429)]
        await asyncio.sleep(0.3)
        assert len(emulator.messages) == 2
        assert first.body != second.body


async def test_permanent_twilio_error_is_dead_lettered_with_its_code(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """A 400 with error 21211 is not retried: it lands in the dead-letter list with the code."""
    emulator.fail_next(1, status=400, code=21211, message="Invalid 'To' Phone Number")
    async with running_gateway(make_config()) as gw:
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hello")
        [letter] = await eventually(lambda: dead_letters(gw))
        assert (letter.code, letter.platform_code) == ("rejected", "21211")
        assert "21211" in letter.reason
        assert letter.conversation is not None
        assert letter.message is not None
        assert letter.message["text"] == "hello"
        assert emulator.refused == [(400, 21211)]
        assert emulator.messages == []


async def test_window_closed_with_a_template_sends_the_content_template(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Over 24 h after the last inbound message, the persona's ContentSid goes out, no Body."""
    async with running_gateway(make_config()) as gw:
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hi", profile_name="Ana")
        await emulator.wait_for(1)
        await age_last_inbound(gw, hours=25)
        await enqueue(gw, proactive("Your order shipped", profile="Ana"))
        _, template = await emulator.wait_for(2)
        assert template.content_sid == TEMPLATE_SID
        assert template.content_variables == {"1": "Ana", "2": "Echo Desk"}
        assert template.body is None
        assert template.media_urls == ()


async def test_window_open_sends_free_form(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Within 24 h of the customer's last message a proactive message is free-form text."""
    async with running_gateway(make_config()) as gw:
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hi")
        await emulator.wait_for(1)
        await age_last_inbound(gw, hours=23)
        await enqueue(gw, proactive("Your order shipped"))
        _, update = await emulator.wait_for(2)
        assert update.body == "Your order shipped"
        assert update.content_sid is None


async def test_window_closed_without_a_template_is_dead_lettered(
    make_config: ConfigFactory, emulator: TwilioEmulator
) -> None:
    """No inbound message ever and no template for the persona: dead letter "window closed"."""
    async with running_gateway(make_config()) as gw:
        await enqueue(gw, proactive("We miss you", persona="quiet"))
        [letter] = await eventually(lambda: dead_letters(gw))
        assert letter.code == "window_closed"
        assert letter.reason.startswith("window closed")
        assert letter.message is not None
        assert letter.message["text"] == "We miss you"
        assert emulator.messages == []
        assert emulator.refused == []


async def test_63016_from_twilio_is_a_permanent_window_closed(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """If Twilio itself answers 63016 the message is dead-lettered as window closed, once."""
    emulator.close_window(CUSTOMER, at_api=True)
    async with running_gateway(make_config()) as gw:
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hello")
        [letter] = await eventually(lambda: dead_letters(gw))
        assert letter.code == "window_closed"
        assert "63016" in letter.reason
        assert emulator.refused == [(400, 63016)]


async def test_outbound_media_go_one_per_message_after_the_text(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Attachments with URLs are sent as MediaUrl, one per WhatsApp message, after the text."""
    async with running_gateway(make_config()) as gw:
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hi")
        await emulator.wait_for(1)
        photo, manual = "https://cdn.example.test/a.jpg", "https://cdn.example.test/b.pdf"
        message = proactive("Here you are").model_copy(
            update={
                "attachments": (
                    Attachment(kind="image", url=photo),
                    Attachment(kind="file", url=manual),
                )
            }
        )
        receipt = await connector(gw).send(message)
        sent = emulator.messages[1:]
        assert [(m.body, m.media_urls) for m in sent] == [
            ("Here you are", ()),
            (None, (photo,)),
            (None, (manual,)),
        ]
        assert receipt.detail["message_sids"] == [m.sid for m in sent]
