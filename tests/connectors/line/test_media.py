"""Files on LINE, both ways, through the running gateway: a photo someone sends is fetched
from the (emulated) content API by message id, kept byte for byte and answered; a kept file
goes back out as a message LINE fetches from the gateway's signed link; content the sender's
side keeps (``contentProvider: external``) is never fetched; limits refuse the file, not the
message."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from connectors.line.emulator import tiny_png
from tests.connectors.line.conftest import ALICE, TOKEN, conversation_of, media_count
from tests.harness import eventually

PHOTO = tiny_png(3, 2)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


async def _kept(gw, chat_id: str) -> list[tuple[object, bytes]]:
    media = gw.runtime.media
    infos = await media.blobs.list_conversation("acme", conversation_of(chat_id))
    return [await media.blobs.get(info.id) for info in infos]


async def test_a_photo_is_kept_byte_identical_and_answered_with_a_flex_card(
    rich_gateway, sender, emulator
):
    """The core persona answers a photo with a card: a Flex bubble whose buttons post back."""
    async with rich_gateway(persona="core") as gw:
        line = sender(gw.url)
        assert await line.post([line.image(PHOTO, user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.via == "reply"
        assert delivery.texts == ["Thanks for the photo, Alice!"]
        [flex] = delivery.of_type("flex")
        bubble = flex["contents"]
        assert bubble["type"] == "bubble"
        assert bubble["body"]["contents"][0]["text"] == "Photo received"
        actions = [b["action"] for b in bubble["footer"]["contents"]]
        assert [(a["type"], a["label"], a["data"]) for a in actions] == [
            ("postback", "Opening hours", "opening hours"),
            ("postback", "Pricing", "pricing"),
        ]
        assert flex["altText"].startswith("*Photo received*\nIt is kept")
        # Fetched once from the content API, with the channel's token, and kept as sent.
        assert [c.status for c in emulator.calls_to("content")] == [200]
        [(info, data)] = await _kept(gw, ALICE)
        assert data == PHOTO
        assert info.sha256 == hashlib.sha256(PHOTO).hexdigest()
        assert info.content_type == "image/png"
        assert media_count(gw, "in", "kept") == 1

        # Tapping a card's button posts its value back: an ACTION the persona answers.
        assert await line.post([line.postback(actions[1]["data"], user_id=ALICE)]) == 200
        await emulator.wait_for(2)
        assert emulator.texts_to(ALICE)[-1].startswith("Our plans: Free, Pro")


async def test_echo_sends_a_kept_photo_back_and_line_fetches_it_from_the_gateway(
    rich_gateway, sender, emulator
):
    """A real round trip: the image message's URL is the gateway's signed link, and the
    bytes LINE fetches from it are the bytes the customer sent."""
    async with rich_gateway(persona="echo") as gw:
        line = sender(gw.url)
        assert await line.post([line.image(PHOTO, user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.texts == ["You said: [image]"]
        [image] = delivery.of_type("image")
        url = image["originalContentUrl"]
        assert url.startswith(f"{gw.url}/media/")
        assert "sig=" in url
        assert image["previewImageUrl"] == url
        assert await emulator.fetch_media(url) == (200, PHOTO)
        assert media_count(gw, "out", "sent") == 1
        # The link is ours alone: the signature does not open another address.
        forged = url.replace("sig=", "sig=0")
        status, _ = await emulator.fetch_media(forged)
        assert status == 403


async def test_a_file_goes_back_as_a_signed_link_in_a_text(rich_gateway, sender, emulator):
    """LINE bots cannot send files: a kept PDF goes out as its link, which LINE can open."""
    async with rich_gateway(persona="echo") as gw:
        line = sender(gw.url)
        event = line.content(
            "file",
            PDF,
            user_id=ALICE,
            content_type="application/pdf",
            fileName="plan.pdf",
            fileSize=len(PDF),
        )
        assert await line.post([event]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.texts[0] == "You said: [file: plan.pdf]"
        [link_line] = delivery.texts[1:]
        assert link_line.startswith("📎 plan.pdf: http://")
        url = link_line.split(": ", 1)[1]
        assert await emulator.fetch_media(url) == (200, PDF)


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[str, list[str]]]:
    """A server on loopback a stranger would like the gateway to call; records requests."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(body=PHOTO, content_type="image/png")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.mark.parametrize("case", ["external", "forged-message-id"])
async def test_content_a_stranger_points_at_is_never_fetched(
    rich_gateway, sender, emulator, hostile, case
):
    """``contentProvider: external`` names a URL on the sender's side, and a message id that
    is not digits could steer the built URL to another file: neither is fetched; the text
    is still answered."""
    hostile_url, seen = hostile
    async with rich_gateway(persona="echo") as gw:
        line = sender(gw.url)
        if case == "external":
            provider = {
                "type": "external",
                "originalContentUrl": f"{hostile_url}/steal.png",
                "previewImageUrl": f"{hostile_url}/preview.png",
            }
            event = line.media(
                {"type": "image", "quoteToken": "q", "contentProvider": provider}, user_id=ALICE
            )
        else:
            # Another chat's photo, reachable by a path that climbs out of this message's.
            emulator.add_content("555", PHOTO)
            event = line.image(PHOTO, user_id=ALICE)
            event["message"]["id"] = "1/../555"
        assert await line.post([event]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.texts == ["You said: [image]"]  # answered, with nothing to send back
        assert delivery.of_type("image") == []
        await asyncio.sleep(0.2)
        assert seen == []
        assert emulator.calls_to("content") == []
        assert await _kept(gw, ALICE) == []


async def test_an_oversized_photo_is_refused_and_its_text_still_answered(
    rich_gateway, sender, emulator
):
    """Over the tenant's limit: not kept (refused too_large), the message goes on."""
    big = PHOTO + os.urandom(4096)
    async with rich_gateway(persona="echo", media={"max_bytes": 1024}) as gw:
        line = sender(gw.url)
        assert await line.post([line.image(big, user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.texts == ["You said: [image]"]
        assert delivery.of_type("image") == []
        assert media_count(gw, "in", "too_large") == 1
        assert await _kept(gw, ALICE) == []


async def test_a_file_line_says_is_too_big_is_not_even_fetched(rich_gateway, sender, emulator):
    async with rich_gateway(persona="echo", media={"max_bytes": 1024}) as gw:
        line = sender(gw.url)
        event = line.content(
            "file", PDF, user_id=ALICE, fileName="huge.pdf", fileSize=50 * 1024 * 1024
        )
        assert await line.post([event]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.texts == ["You said: [file: huge.pdf]"]
        assert emulator.calls_to("content") == []
        assert media_count(gw, "in", "too_large") == 1


async def test_the_content_api_serves_a_channel_its_own_token_only(emulator):
    """The emulated data API checks the access token as LINE's does."""
    emulator.add_content("4242", PHOTO)
    url = f"{emulator.url}/v2/bot/message/4242/content"
    async with aiohttp.ClientSession() as session:
        for token, expected in (("not-a-token", 401), (TOKEN, 200)):
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(url, headers=headers) as response:
                assert response.status == expected
                if expected == 200:
                    assert await response.read() == PHOTO
    await eventually(lambda: len(emulator.calls_to("content")) == 2)
