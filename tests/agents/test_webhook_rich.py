"""Webhook bots and rich messages through the real gateway: the files a customer sent reach
the bot as signed links the gateway really serves; a bot's cards, quick replies, option
lists and files reach the channel; a bot cannot send another conversation's file, nor a
URL that is not https."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agents.examples.faq_bot import verify_signature
from connectors.base import ChannelCapabilities
from connectors.collecting import CollectingConnector
from connectors.http_api.emulator import HttpChannelClient
from connectors.http_api.schemas import HttpReply
from gateway.media import MediaFetch
from gateway.media.blobs import blob_id
from gateway.models import (
    Attachment,
    Channel,
    ConversationKey,
    InboundMessage,
    OutboundMessage,
    Participant,
)
from tests.agents.conftest import BOT_SECRET
from tests.harness import SECRETS, base_config, eventually, http_tenant, running_gateway
from tests.media.conftest import ELF, PDF, PNG

FAILURE = "The bot is out to lunch."
CUSTOMER = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="c1")
OTHER = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="c2")
ELSEWHERE = ConversationKey(tenant="beta", channel=Channel.HTTP, conversation_id="c1")

Answer = Callable[[dict[str, Any]], dict[str, Any]]


class Bot:
    """A bot on loopback that verifies every request's signature and answers with
    ``answer(payload)``; it records what it was sent."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.answer: Answer = lambda payload: {"text": "ok"}
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(request.headers.get("X-FlowBiz-Signature", ""), body, [BOT_SECRET]):
            return web.Response(status=401)
        payload = json.loads(body)
        self.payloads.append(payload)
        return web.json_response(self.answer(payload))


@pytest.fixture
async def bot() -> AsyncIterator[Bot]:
    found = Bot()
    app = web.Application()
    app.router.add_post("/bot", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}/bot"
    yield found
    await runner.cleanup()


class PhotoChannel(CollectingConnector):
    """The collecting channel, whose platform hands over each file's bytes at once (an
    executable for a file named ``.exe``: the gateway refuses to keep it)."""

    async def media_fetch(self, message: InboundMessage, attachment: Attachment) -> MediaFetch:
        return MediaFetch(data=ELF if (attachment.name or "").endswith(".exe") else PNG)


def gateway_config(
    tmp_path: Path, bot: Any, callback_url: str | None = None, **options: Any
) -> dict[str, Any]:
    folder = tmp_path / "personas"
    folder.mkdir()
    persona = {
        "name": "faq",
        "display_name": "FAQ",
        "failure_reply": FAILURE,
        "agent": {
            "kind": "webhook",
            "options": {
                "url": bot.url,
                "secrets_env": ["BOT_SECRET"],
                "allow_private": True,
                **options,
            },
        },
    }
    (folder / "faq.yaml").write_text(json.dumps(persona))
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db",
        tenants=[http_tenant(callback_url)],
        media={"dir": str(tmp_path / "media")},
    )
    data["personas_dir"] = str(folder)
    data["routing"] = {"default_persona": "faq"}
    return data


def photo(event_id: str, conversation: ConversationKey = CUSTOMER) -> InboundMessage:
    return InboundMessage(
        event_id=event_id,
        conversation=conversation,
        sender=Participant(id="u1", display_name="Ann"),
        text="here it is",
        attachments=(
            Attachment(
                kind="image",
                name="cat.png",
                # Where the platform keeps it: never handed to a bot.
                url="https://files.platform.example/secret-path/cat.png",
                extra={"file_id": "F123"},
            ),
        ),
    )


def said(text: str, event_id: str) -> InboundMessage:
    return InboundMessage(
        event_id=event_id,
        conversation=CUSTOMER,
        sender=Participant(id="u1", display_name="Ann"),
        text=text,
    )


def rich_answer(blob: str) -> dict[str, Any]:
    return {
        "parts": [
            {
                "text": "Thanks!",
                "cards": [
                    {
                        "title": "Photo received",
                        "image": {"kind": "image", "blob": blob},
                        "buttons": [{"label": "Track", "value": "track"}],
                    }
                ],
                "quick_replies": [{"label": "Talk to a person", "value": "human"}],
                "options": {
                    "button": "Plans",
                    "options": [
                        {"label": "Free", "value": "free"},
                        {"label": "Pro", "value": "pro"},
                    ],
                },
                "attachments": [
                    {"kind": "image", "url": "https://cdn.example.com/map.png", "name": "map"},
                    {"kind": "image", "blob": blob, "name": "yours.png"},
                ],
            }
        ]
    }


async def test_a_photo_reaches_the_bot_as_a_signed_link_and_its_rich_answer_the_channel(
    tmp_path: Path, bot: Bot
) -> None:
    """The kept photo's signed link serves its bytes; the bot's card, quick replies, options,
    https image and blob of the same conversation all reach the channel."""
    bot.answer = lambda payload: rich_answer(payload["message"]["attachments"][0]["blob"])
    async with running_gateway(gateway_config(tmp_path, bot)) as gw:
        channel = PhotoChannel()
        gw.runtime.connectors[Channel.HTTP] = channel
        assert gw.runtime.ingestor is not None
        await gw.runtime.ingestor.submit([photo("ev-1")])
        [sent] = await channel.wait_for(1, timeout=10)

        [received] = bot.payloads[0]["message"]["attachments"]
        assert received["blob"].startswith("acme.")
        assert received["mime_type"] == "image/png"
        assert "extra" not in received
        assert "platform.example" not in json.dumps(bot.payloads[0])
        assert received["url"].startswith(gw.url + "/media/")
        async with aiohttp.ClientSession() as session, session.get(received["url"]) as response:
            assert response.status == 200
            assert await response.read() == PNG
        caps = bot.payloads[0]["capabilities"]
        assert (caps["cards"], caps["quick_replies"], caps["options"]) == (True, True, True)
        assert "image" in caps["media_out"]

    assert isinstance(sent, OutboundMessage)
    assert sent.text == "Thanks!"
    [card] = sent.cards
    assert card.image is not None
    assert card.image.blob == received["blob"]
    assert [b.value for b in sent.quick_replies] == ["human"]
    assert sent.options is not None
    assert [o.value for o in sent.options.options] == ["free", "pro"]
    link, kept = sent.attachments
    assert link.url == "https://cdn.example.com/map.png"
    assert link.blob is None
    # The kept file, described by what the gateway judged its bytes to be.
    assert (kept.blob, kept.mime_type, kept.size) == (received["blob"], "image/png", len(PNG))
    assert kept.url is None


@pytest.mark.parametrize(
    ("target", "reason"),
    [(OTHER, "another conversation"), (ELSEWHERE, "another tenant")],
)
async def test_attack_a_bot_cannot_send_a_file_of_another_conversation(
    tmp_path: Path, bot: Bot, target: ConversationKey, reason: str
) -> None:
    """A blob id of another conversation or tenant — kept, real, and even given to the bot
    once — is refused whole: the customer gets the failure reply and no file goes out."""
    async with running_gateway(gateway_config(tmp_path, bot)) as gw:
        media = gw.runtime.media
        assert media is not None
        foreign = await media.blobs.put(
            tenant=target.tenant,
            conversation_key=target.key,
            data=PDF,
            content_type="application/pdf",
            name="invoice.pdf",
        )
        channel = PhotoChannel()
        gw.runtime.connectors[Channel.HTTP] = channel
        assert gw.runtime.ingestor is not None
        # In a card's image, and as an attachment: both are checked.
        answers = [
            {"attachments": [{"kind": "file", "blob": foreign.id}]},
            {"cards": [{"title": "x", "image": {"kind": "image", "blob": foreign.id}}]},
        ]
        bot.answer = lambda payload: answers[len(bot.payloads) - 1]
        await gw.runtime.ingestor.submit([said("send me the invoice", "ev-1")])
        await gw.runtime.ingestor.submit([said("the card then", "ev-2")])
        sent = await channel.wait_for(2, timeout=10)
        served = gw.runtime.metrics.media_links.labels("served")._value.get()
    assert [m.text for m in sent] == [FAILURE, FAILURE]
    assert all(not m.attachments and not m.cards for m in sent)
    assert served == 0


@pytest.mark.parametrize(
    "attachment",
    [
        {"kind": "image", "url": "http://cdn.example.com/a.png"},
        {"kind": "image", "url": "https://user:pw@cdn.example.com/a.png"},
        {"kind": "image", "url": "https://cdn.example.com/" + "a" * 2100},
        {"kind": "image", "url": "https://cdn.example.com/a.png", "blob": "x"},
        {"kind": "image", "url": "https://cdn.example.com/a.png", "extra": {"x": 1}},
        {"kind": "file", "blob": "../../etc/passwd"},
        # Of this conversation, well formed, but never kept (or erased): nothing to send.
        {"kind": "file", "blob": blob_id("acme", CUSTOMER.key)},
    ],
    ids=["http", "credentials", "too_long", "two_sources", "extra", "not_a_blob", "unknown"],
)
async def test_attack_a_file_that_is_not_a_public_https_url_or_our_blob_is_refused(
    tmp_path: Path, bot: Bot, attachment: dict[str, Any]
) -> None:
    bot.answer = lambda payload: {"text": "look", "attachments": [attachment]}
    async with running_gateway(gateway_config(tmp_path, bot)) as gw:
        channel = PhotoChannel()
        gw.runtime.connectors[Channel.HTTP] = channel
        assert gw.runtime.ingestor is not None
        await gw.runtime.ingestor.submit([said("show me", "ev-1")])
        [sent] = await channel.wait_for(1, timeout=10)
        failed = gw.runtime.metrics.registry.get_sample_value(
            "flowbiz_agent_seconds_count", {"persona": "faq", "outcome": "error"}
        )
    assert sent.text == FAILURE
    assert sent.attachments == ()
    assert failed == 1


async def test_the_http_channel_posts_every_part_and_a_signed_link_to_the_kept_file(
    tmp_path: Path, bot: Bot, receiver: Any
) -> None:
    """The signed reply webhook carries the card, quick replies, options and a link that
    serves the kept file to the tenant's site."""
    async with running_gateway(gateway_config(tmp_path, bot, receiver.url)) as gw:
        media = gw.runtime.media
        assert media is not None
        kept = await media.blobs.put(
            tenant="acme",
            conversation_key=CUSTOMER.key,
            data=PNG,
            content_type="image/png",
            name="cat.png",
        )
        bot.answer = lambda payload: rich_answer(kept.id)
        async with aiohttp.ClientSession() as session:
            client = HttpChannelClient(
                session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
            )
            await client.send(conversation_id="c1", text="hello", event_id="e1")
            [callback] = await receiver.wait_for(1)
            assert callback.signature_valid
            reply = HttpReply.model_validate(callback.payload)  # the documented shape
            assert [b.value for b in reply.quick_replies] == ["human"]
            assert reply.options is not None
            assert [o.label for o in reply.options.options] == ["Free", "Pro"]
            [card] = reply.cards
            assert card.title == "Photo received"
            assert card.image is not None
            assert card.image.url is not None
            link, file = reply.attachments
            assert link.url == "https://cdn.example.com/map.png"
            assert file.url is not None
            assert file.url.startswith(gw.url + "/media/")
            for url in (file.url, card.image.url):
                async with session.get(url) as response:
                    assert response.status == 200
                    assert await response.read() == PNG
            # The replies log (long-poll) holds the same body.
            polled = await eventually(lambda: client.replies(conversation_id="c1"), timeout=5)
            assert polled["replies"][0]["cards"][0]["title"] == "Photo received"
        sent = gw.runtime.metrics.registry.get_sample_value(
            "flowbiz_media_total", {"channel": "http", "direction": "out", "outcome": "sent"}
        )
    assert sent == 2


async def test_the_example_bot_puts_a_kept_photo_on_a_card(tmp_path: Path, faq_bot: Any) -> None:
    """agents/examples/faq_bot.py: a photo comes back on a "Photo received" card by its blob
    id, with a quick reply, on a channel that shows cards."""
    data = gateway_config(tmp_path, faq_bot, secrets_env=["BOT_SECRET", "BOT_SECRET_OLD"])
    async with running_gateway(data) as gw:
        channel = PhotoChannel()
        gw.runtime.connectors[Channel.HTTP] = channel
        assert gw.runtime.ingestor is not None
        await gw.runtime.ingestor.submit([photo("ev-1")])
        [sent] = await channel.wait_for(1, timeout=10)
    [received] = faq_bot.bot.calls[0]["payload"]["message"]["attachments"]
    assert sent.text == "Thanks for the photo, Ann!"
    [card] = sent.cards
    assert card.title == "Photo received"
    assert card.image is not None
    assert card.image.blob == received["blob"]
    assert card.image.mime_type == "image/png"
    assert [b.value for b in card.buttons] == ["hours", "pricing"]
    assert [b.value for b in sent.quick_replies] == ["human"]


def test_a_channel_that_says_nothing_is_described_as_text_only() -> None:
    """The capabilities' defaults claim nothing: a channel whose values are not set tells
    the bot it shows no cards, quick replies, option lists or files."""
    from agents.persona import Persona
    from agents.webhook import context_payload
    from tests.agents.conftest import make_context

    persona = Persona.model_validate(
        {"name": "faq", "display_name": "FAQ", "agent": {"kind": "echo"}}
    )
    context = make_context(persona, "hi")
    context = dataclasses.replace(context, capabilities=ChannelCapabilities())
    caps = context_payload(context, history=0)["capabilities"]
    assert caps["cards"] is caps["quick_replies"] is caps["options"] is caps["attachments"] is False
    assert caps["media_out"] == []


async def test_attack_a_file_the_gateway_did_not_keep_reaches_the_bot_without_any_url(
    tmp_path: Path, bot: Bot
) -> None:
    """A refused file is described with why, never with the platform's (https) URL, which
    would need the platform's credentials — or hand them out."""
    async with running_gateway(gateway_config(tmp_path, bot)) as gw:
        channel = PhotoChannel()
        gw.runtime.connectors[Channel.HTTP] = channel
        assert gw.runtime.ingestor is not None
        message = photo("ev-1")
        setup = Attachment(
            kind="file",
            name="setup.exe",
            url="https://files.platform.example/secret-path/setup.exe?token=abc",
            extra={"download": "https://files.platform.example/x"},
        )
        await gw.runtime.ingestor.submit([message.model_copy(update={"attachments": (setup,)})])
        await channel.wait_for(1, timeout=10)
    [received] = bot.payloads[0]["message"]["attachments"]
    assert received == {"kind": "file", "name": "setup.exe", "refused": "type_not_allowed"}
    assert "platform.example" not in json.dumps(bot.payloads[0])
