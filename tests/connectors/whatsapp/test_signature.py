"""X-Twilio-Signature on the inbound webhook, checked against the URL Twilio called."""

from __future__ import annotations

import asyncio
import logging
import random

import aiohttp
import pytest

from connectors.whatsapp.emulator import TwilioEmulator
from tests.connectors.whatsapp.conftest import ConfigFactory
from tests.connectors.whatsapp.support import (
    AUTH_TOKEN,
    CUSTOMER,
    SENDER,
    has_state,
    inbox_messages,
    sender_for,
)
from tests.harness import RunningGateway, running_gateway

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'


async def assert_nothing_stored(gw: RunningGateway, emulator: TwilioEmulator) -> None:
    await asyncio.sleep(0.2)  # long enough for a worker to have answered, had it been stored
    assert await inbox_messages(gw) == []
    assert not await has_state(gw)
    assert emulator.messages == []


async def test_signed_webhook_is_answered_with_empty_twiml_and_a_reply(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """A correctly signed message gets empty TwiML at once and a reply via the Messages API."""
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        params = sender.inbound(from_=CUSTOMER, to=SENDER, body="hello there")
        status, body, content_type = await sender.post(params)
        assert (status, body, content_type) == (200, EMPTY_TWIML, "text/xml")
        [reply] = await emulator.wait_for(1)
        assert reply.to == CUSTOMER
        assert reply.from_ == SENDER
        assert reply.body == "hello there\n\n— Echo Desk"
        assert reply.user_agent.startswith("twilio-python/")
        [stored] = await inbox_messages(gw)
        assert stored.event_id == params["MessageSid"]


@pytest.mark.parametrize(
    ("signed_over", "accepted"),
    [
        ("https://wa.example.test/whatsapp/webhook", True),
        ("https://wa.example.test:443/whatsapp/webhook", True),
        ("http://wa.example.test/whatsapp/webhook", False),
        ("https://wa.example.test:8443/whatsapp/webhook", False),
    ],
    ids=["https", "https-default-port", "http-scheme", "other-port"],
)
async def test_signature_must_cover_the_configured_public_url(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    signed_over: str,
    accepted: bool,
) -> None:
    """The public https URL is accepted with or without :443; http or another port is not."""
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        params = sender.inbound(from_=CUSTOMER, to=SENDER, body="hello")
        status, _, _ = await sender.post(params, signature=sender.sign(params, signed_over))
        if accepted:
            assert status == 200
            await emulator.wait_for(1)
        else:
            assert status == 403
            await assert_nothing_stored(gw, emulator)


async def test_forwarded_headers_from_a_trusted_proxy_rebuild_the_public_url(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Signed over https, received over http + X-Forwarded-*: accepted from a trusted proxy."""
    config = make_config(
        public_base_url=None, status_callback=False, trusted_proxies=["127.0.0.0/8"]
    )
    async with running_gateway(config) as gw:
        sender = sender_for(gw, http, public_url="https://lb.example.test", via_proxy=True)
        assert sender.signed_url == "https://lb.example.test/whatsapp/webhook"
        status, _ = await sender.send(from_=CUSTOMER, to=SENDER, body="through the proxy")
        assert status == 200
        [reply] = await emulator.wait_for(1)
        assert reply.body is not None
        assert reply.body.startswith("through the proxy")


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored_and_the_url_is_logged(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """X-Forwarded-* from a peer outside trusted_proxies is ignored; the 403 log names the URL."""
    config = make_config(
        public_base_url=None, status_callback=False, trusted_proxies=["10.0.0.0/8"]
    )
    caplog.set_level(logging.WARNING)
    async with running_gateway(config) as gw:
        sender = sender_for(gw, http, public_url="https://lb.example.test", via_proxy=True)
        status, _ = await sender.send(from_=CUSTOMER, to=SENDER, body="spoofed proxy")
        assert status == 403
        await assert_nothing_stored(gw, emulator)
    [rejected] = [r for r in caplog.records if r.getMessage() == "whatsapp.signature_rejected"]
    fields = rejected.fields  # type: ignore[attr-defined]  # set by the gateway's logger
    assert fields["checked_url"] == f"{gw.url}/whatsapp/webhook"
    assert fields["url_source"] == "request"
    assert AUTH_TOKEN not in caplog.text


async def test_parameter_order_on_the_wire_does_not_matter(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Twilio's signature sorts the parameters, so any order on the wire is accepted."""
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        params = sender.inbound(from_=CUSTOMER, to=SENDER, body="shuffled")
        pairs = list(params.items())
        random.Random(7).shuffle(pairs)
        assert [k for k, _ in pairs] != sorted(params)
        status, _, _ = await sender.post(pairs, signature=sender.sign(params))
        assert status == 200
        await emulator.wait_for(1)


async def test_wrong_token_is_refused(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """A request signed with another Auth Token gets 403 and stores nothing."""
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http, token="not-the-auth-token")
        status, _ = await sender.send(from_=CUSTOMER, to=SENDER, body="forged")
        assert status == 403
        await assert_nothing_stored(gw, emulator)


async def test_parameter_added_after_signing_is_refused(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Adding a parameter to a signed request breaks the signature: 403, nothing stored."""
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        params = sender.inbound(from_=CUSTOMER, to=SENDER, body="original")
        signature = sender.sign(params)
        tampered = {**params, "ButtonPayload": "refund-everything"}
        status, _, _ = await sender.post(tampered, signature=signature)
        assert status == 403
        await assert_nothing_stored(gw, emulator)


async def test_missing_signature_is_refused(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """Without X-Twilio-Signature the request gets 403 and stores nothing."""
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        params = sender.inbound(from_=CUSTOMER, to=SENDER, body="unsigned")
        status, body, _ = await sender.post(params, unsigned=True)
        assert status == 403
        assert "missing_signature" in body
        await assert_nothing_stored(gw, emulator)
