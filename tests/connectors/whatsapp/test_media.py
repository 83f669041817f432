"""Files both ways and the typing indicator, through the running gateway and the emulator:
inbound media fetched with the account's credentials only from the configured Twilio API,
kept byte for byte, sent back as signed links Twilio fetches; the typing indicator never in
the way of the reply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from connectors.whatsapp.emulator import TwilioEmulator
from tests.connectors.whatsapp.conftest import ConfigFactory
from tests.connectors.whatsapp.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CUSTOMER,
    SENDER,
    conversation,
    sender_for,
)
from tests.harness import PERSONAS_DIR, RunningGateway, eventually, running_gateway

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16


def config(make_config: ConfigFactory, tmp_path: Path, **media: Any) -> dict[str, Any]:
    data = make_config()
    data["media"] = {"dir": str(tmp_path / "media"), **media}
    return data


def metric(gw: RunningGateway, name: str, **labels: str) -> float:
    return gw.runtime.metrics.registry.get_sample_value(name, labels) or 0.0


async def kept(gw: RunningGateway) -> list[bytes]:
    media = gw.runtime.media
    assert media is not None
    infos = await media.blobs.list_conversation("acme", conversation().key)
    return [(await media.blobs.get(info.id))[1] for info in infos]


class Bystander:
    """Another server on loopback: a stranger's MediaUrl points here."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        return web.Response(body=PNG, content_type="image/png")


@pytest.fixture
async def bystander() -> AsyncIterator[Bystander]:
    found = Bystander()
    app = web.Application()
    app.router.add_get("/{tail:.*}", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    found.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"  # type: ignore[attr-defined]
    try:
        yield found
    finally:
        await runner.cleanup()


async def test_an_inbound_photo_is_kept_and_answered_with_a_card(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """The core persona gets the kept photo (fetched with Basic auth, through Twilio's
    redirect, the token never sent to the media host) and answers with a twilio/card."""
    data = config(make_config, tmp_path)
    data["personas_dir"] = str(PERSONAS_DIR)  # the example core persona: rules, cards
    media_url = emulator.rich.seed_media(ACCOUNT_SID, PNG, "image/png")
    async with running_gateway(data) as gw:
        await sender_for(gw, http).send(
            from_=CUSTOMER, to=SENDER, body="", media=[(media_url, "image/png")]
        )
        text, card = await emulator.wait_for(2)
        assert text.body == "Thanks for the photo, Alice!\n\n— FlowBiz Assistant"
        body = card.content["twilio/card"]
        assert body["title"].startswith("*Photo received*")
        assert [a["id"] for a in body["actions"]] == ["opening hours", "pricing"]
        assert await kept(gw) == [PNG]
        assert (
            metric(gw, "flowbiz_media_total", channel="whatsapp", direction="in", outcome="kept")
            == 1
        )
    assert len(emulator.rich.media_requests) == 1
    [at_host] = emulator.rich.media_host_requests
    assert at_host.authorization is None  # the redirect to another origin dropped it


async def test_the_echo_persona_sends_a_kept_photo_back_as_a_link_twilio_fetches(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Kept inbound, sent back as MediaUrl = a signed link to the gateway; the bytes Twilio
    fetched from it are the customer's."""
    emulator.fetch_media = True
    media_url = emulator.rich.seed_media(ACCOUNT_SID, PNG, "image/png")
    async with running_gateway(config(make_config, tmp_path)) as gw:
        await sender_for(gw, http).send(
            from_=CUSTOMER, to=SENDER, body="look", media=[(media_url, "image/png")]
        )
        text, photo = await emulator.wait_for(2)
        assert text.body == "look\n\n— Echo Desk"
        [link] = photo.media_urls
        assert link.startswith(f"{gw.url}/media/")
        assert emulator.rich.fetched[link] == (200, PNG)
        # Counted once Twilio accepted the create (just after the emulator recorded it).
        sent = await eventually(
            lambda: metric(
                gw, "flowbiz_media_total", channel="whatsapp", direction="out", outcome="sent"
            )
        )
        assert sent == 1


@pytest.mark.parametrize("where", ["other_server", "other_account", "api_not_media"])
async def test_a_media_url_off_the_twilio_api_is_never_fetched(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    bystander: Bystander,
    where: str,
) -> None:
    """A signed form naming another host (or another account's media, or an API resource
    that is not media) gets no request and never the auth token; the text is answered."""
    path = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/MM1/Media/ME1"
    url = {
        "other_server": bystander.url + path,
        "other_account": emulator.url + path.replace(ACCOUNT_SID, "AC" + "9" * 32),
        "api_not_media": emulator.url + "/v1/Content",
    }[where]
    async with running_gateway(config(make_config, tmp_path)) as gw:
        await sender_for(gw, http).send(
            from_=CUSTOMER, to=SENDER, body="see this", media=[(url, "image/png")]
        )
        [reply] = await emulator.wait_for(1)
        assert reply.body == "see this\n\n— Echo Desk"
        assert await kept(gw) == []
    assert bystander.requests == []
    assert emulator.rich.media_requests == []
    assert emulator.rich.media_host_requests == []
    assert emulator.rich.content_lists == 0


async def test_an_oversized_file_is_refused_and_the_text_answered(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Above the media limit: refused as too_large, nothing kept, the message answered."""
    media_url = emulator.rich.seed_media(ACCOUNT_SID, PNG, "image/png")
    async with running_gateway(config(make_config, tmp_path, max_bytes=1024)) as gw:
        await sender_for(gw, http).send(
            from_=CUSTOMER, to=SENDER, body="big one", media=[(media_url, "image/png")]
        )
        [reply] = await emulator.wait_for(1)
        assert reply.body == "big one\n\n— Echo Desk"
        assert await kept(gw) == []
        assert (
            metric(
                gw, "flowbiz_media_total", channel="whatsapp", direction="in", outcome="too_large"
            )
            == 1
        )


async def test_the_typing_indicator_names_the_customer_message(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """POST /v2/Indicators/Typing.json with the inbound MessageSid and channel whatsapp."""
    async with running_gateway(config(make_config, tmp_path)) as gw:
        _, params = await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hi")
        await emulator.wait_for(1)
        await eventually(
            lambda: metric(
                gw, "flowbiz_typing_indicators_total", channel="whatsapp", outcome="shown"
            )
        )
    [call] = emulator.rich.typing
    assert (call.account_sid, call.message_id, call.channel) == (
        ACCOUNT_SID,
        params["MessageSid"],
        "whatsapp",
    )


async def test_a_failing_typing_indicator_never_delays_the_reply(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """The indicator endpoint answers 500 after a second: the reply is out long before,
    and the failure is counted."""
    emulator.rich.typing_failure, emulator.rich.typing_delay = 500, 1.0
    async with running_gateway(config(make_config, tmp_path)) as gw:
        started = time.monotonic()
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="quick")
        [reply] = await emulator.wait_for(1)
        assert time.monotonic() - started < 0.9
        assert reply.body == "quick\n\n— Echo Desk"
        assert (
            metric(gw, "flowbiz_typing_indicators_total", channel="whatsapp", outcome="failed") == 0
        )
        await eventually(
            lambda: metric(
                gw, "flowbiz_typing_indicators_total", channel="whatsapp", outcome="failed"
            )
        )
        await asyncio.sleep(0)
    assert AUTH_TOKEN not in repr(emulator.rich.typing)
