"""Signed status callbacks: delivery receipts, failures in the dead-letter list, metrics."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aiohttp
from twilio.request_validator import RequestValidator

from connectors.whatsapp.emulator import SentCallback, TwilioEmulator
from gateway.deadletters import list_dead_letters, replay
from gateway.models import DeliveryReceipt
from tests.connectors.whatsapp.conftest import ConfigFactory
from tests.connectors.whatsapp.support import (
    AUTH_TOKEN,
    CUSTOMER,
    PUBLIC_BASE,
    SENDER,
    dead_letters,
    receipts,
    sender_for,
)
from tests.harness import RunningGateway, eventually, running_gateway


async def repost(
    gw: RunningGateway,
    http: aiohttp.ClientSession,
    callback: SentCallback,
    *,
    signed: bool = True,
) -> int:
    """Post a recorded status callback again, the way Twilio retries one."""
    parts = urlsplit(callback.url)
    headers = {}
    if signed:
        headers["X-Twilio-Signature"] = RequestValidator(AUTH_TOKEN).compute_signature(
            callback.url, callback.params
        )
    target = f"{gw.url}{parts.path}?{parts.query}"
    async with http.post(target, data=callback.params, headers=headers) as response:
        return response.status


def metric(gw: RunningGateway, event: str) -> float:
    value = gw.runtime.metrics.registry.get_sample_value(
        "flowbiz_channel_events_total", {"channel": "whatsapp", "event": event}
    )
    return value or 0.0


async def test_status_callbacks_become_receipts_on_the_outbound_message(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """sent → delivered → read callbacks, signed over the public URL, are stored as receipts."""
    async with running_gateway(make_config()) as gw:
        emulator.gateway_url = gw.url
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hello")
        [reply] = await emulator.wait_for(1)
        callbacks = await emulator.wait_for_callbacks(3)
        assert [c.http_status for c in callbacks] == [200, 200, 200]
        assert reply.status_callback is not None
        assert reply.status_callback.startswith(f"{PUBLIC_BASE}/whatsapp/status?")
        found = await eventually(
            lambda: _with_statuses(gw, {"queued", "sent", "delivered", "read"})
        )
        by_status = {r.status: r for r in found}
        assert by_status["read"].platform_message_id == reply.sid
        assert by_status["read"].outbound_id == by_status["queued"].outbound_id
        assert metric(gw, "status_delivered") == 1
        assert metric(gw, "status_read") == 1


async def _with_statuses(gw: RunningGateway, wanted: set[str]) -> list[DeliveryReceipt] | None:
    found = await receipts(gw)
    return found if wanted <= {r.status for r in found} else None


async def test_undelivered_is_dead_lettered_with_twilio_error_code(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """An undelivered callback (ErrorCode 63024) adds a receipt and a dead letter with the code."""
    emulator.fail_delivery(CUSTOMER, status="undelivered", error_code=63024)
    async with running_gateway(make_config()) as gw:
        emulator.gateway_url = gw.url
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hello")
        await emulator.wait_for_callbacks(2)
        [letter] = await eventually(lambda: dead_letters(gw))
        assert letter.code == "63024"
        assert letter.reason == "Twilio reported undelivered with error 63024"
        assert letter.message is not None
        assert letter.message["text"].startswith("hello")
        undelivered = [r for r in await receipts(gw) if r.status == "undelivered"]
        assert undelivered[0].detail["error_code"] == "63024"


async def test_failed_63016_callback_is_dead_lettered_as_window_closed(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Twilio accepting a free-form message and failing it later with 63016 is a dead letter
    whose reason says the window was closed."""
    emulator.close_window(CUSTOMER)
    async with running_gateway(make_config()) as gw:
        emulator.gateway_url = gw.url
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hello")
        [letter] = await eventually(lambda: dead_letters(gw))
        assert letter.code == "63016"
        assert "window closed" in letter.reason


async def test_repeated_callback_is_stored_once(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Twilio re-posting the same status callback does not add a second receipt."""
    emulator.status_flow = ("delivered",)
    async with running_gateway(make_config()) as gw:
        emulator.gateway_url = gw.url
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hello")
        [callback] = await emulator.wait_for_callbacks(1)
        assert await repost(gw, http, callback) == 200
        await asyncio.sleep(0.1)
        assert [r.status for r in await receipts(gw)].count("delivered") == 1


async def test_unsigned_status_callback_is_refused(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """A status callback without a valid signature gets 403 and stores no receipt."""
    emulator.status_flow = ("sent",)
    async with running_gateway(make_config()) as gw:
        emulator.gateway_url = gw.url
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hello")
        [callback] = await emulator.wait_for_callbacks(1)
        forged = SentCallback(
            callback.url, {**callback.params, "MessageStatus": "failed", "ErrorCode": "30008"}, 0
        )
        await eventually(lambda: _with_statuses(gw, {"queued", "sent"}))
        before = len(await receipts(gw))
        assert await repost(gw, http, forged, signed=False) == 403
        assert len(await receipts(gw)) == before
        assert await repost(gw, http, SentCallback(callback.url, forged.params, 0)) == 200
        assert len(await receipts(gw)) == before + 1  # the same payload, signed, is accepted
        assert len(await dead_letters(gw)) == 1


async def test_replaying_an_undelivered_letter_sends_it_again(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """A message Twilio reported undelivered is sent once more when an operator replays it."""
    emulator.fail_delivery(CUSTOMER, status="undelivered", error_code=63024)
    async with running_gateway(make_config()) as gw:
        emulator.gateway_url = gw.url
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hello")
        await eventually(lambda: dead_letters(gw))
        emulator._delivery_failures.clear()  # the operator fixed the cause
        store = gw.runtime.store
        assert store is not None
        [(handle, _)] = await list_dead_letters(store, gw.runtime.keyspace)
        assert await replay(store, gw.runtime.keyspace, handle) is True
        first, second = await emulator.wait_for(2)
        assert second.body == first.body
        assert await dead_letters(gw) == []
