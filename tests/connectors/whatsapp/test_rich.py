"""Rich replies through Twilio's Content API, as the emulator receives them: each part's
native form, one content per definition (across messages and processes), and the numbered
text fallback outside the window and when the Content API refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.whatsapp.connector import WhatsAppConnector
from connectors.whatsapp.emulator import EmulatedMessage, TwilioEmulator
from gateway.errors import TransientDeliveryError
from gateway.models import Channel, OutboundMessage
from gateway.parts import Attachment, Button, Card, ContactCard, Location, Option, OptionList
from tests.connectors.whatsapp.conftest import ConfigFactory
from tests.connectors.whatsapp.support import (
    CUSTOMER,
    SENDER,
    TEMPLATE_SID,
    age_last_inbound,
    conversation,
    enqueue,
    proactive,
    sender_for,
)
from tests.harness import RunningGateway, running_gateway

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
BUY, LATER = Button(label="Buy", value="buy"), Button(label="Later", value="later")


def connector(gw: RunningGateway) -> WhatsAppConnector:
    found = gw.runtime.connectors[Channel.WHATSAPP]
    assert isinstance(found, WhatsAppConnector)
    return found


def config(make_config: ConfigFactory, tmp_path: Path, **channel: Any) -> dict[str, Any]:
    data = make_config(**channel)
    data["media"] = {"dir": str(tmp_path / "media")}
    return data


async def open_window(
    gw: RunningGateway, http: aiohttp.ClientSession, emulator: TwilioEmulator
) -> None:
    before = len(emulator.messages)
    await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hi")
    await emulator.wait_for(before + 1)


async def kept_photo(gw: RunningGateway) -> Attachment:
    media = gw.runtime.media
    assert media is not None
    info = await media.blobs.put(
        tenant="acme",
        conversation_key=conversation().key,
        data=PNG,
        content_type="image/png",
        name="p.png",
    )
    return Attachment(kind="image", blob=info.id, mime_type="image/png")


async def send(gw: RunningGateway, emulator: TwilioEmulator, **parts: Any) -> list[EmulatedMessage]:
    before = len(emulator.messages)
    message: OutboundMessage = proactive(parts.pop("text", "Pick one")).model_copy(update=parts)
    receipt = await connector(gw).send(message)
    sent = emulator.messages[before:]
    assert receipt.detail["message_sids"] == [m.sid for m in sent]
    return sent


async def test_each_part_arrives_in_its_native_form(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Quick replies, an option list, a card, a carousel, a place and a contact card, as
    Twilio receives them; kept images go as signed links Twilio can fetch."""
    emulator.fetch_media = True
    async with running_gateway(config(make_config, tmp_path)) as gw:
        await open_window(gw, http, emulator)

        [quick] = await send(gw, emulator, quick_replies=(BUY, LATER))
        assert quick.body is None
        assert quick.content == {
            "twilio/quick-reply": {
                "body": "Pick one",
                "actions": [
                    {"type": "QUICK_REPLY", "title": "Buy", "id": "buy"},
                    {"type": "QUICK_REPLY", "title": "Later", "id": "later"},
                ],
            }
        }

        menu = OptionList(
            button="Sizes",
            options=(
                Option(label="Small", value="s", description="30 cm"),
                Option(label="Large", value="l"),
            ),
        )
        [listed] = await send(gw, emulator, options=menu)
        assert listed.content == {
            "twilio/list-picker": {
                "body": "Pick one",
                "button": "Sizes",
                "items": [
                    {"id": "s", "item": "Small", "description": "30 cm"},
                    {"id": "l", "item": "Large"},
                ],
            }
        }

        # Four buttons do not fit a quick reply: a list picker, in plain_text's order.
        four = tuple(Button(label=f"B{n}", value=f"v{n}") for n in range(4))
        [many] = await send(gw, emulator, buttons=four)
        assert [i["id"] for i in many.content["twilio/list-picker"]["items"]] == [
            "v0",
            "v1",
            "v2",
            "v3",
        ]

        photo = await kept_photo(gw)
        link = Button(label="Shop", url="https://shop.example.test/p")
        card = Card(title="Photo received", text="Kept.", image=photo, buttons=(BUY, link))
        text, carded = await send(gw, emulator, text="Thanks", cards=(card,))
        assert text.body == "Thanks"
        body = carded.content["twilio/card"]
        assert body["title"] == "*Photo received*\nKept."
        assert body["actions"] == [
            {"type": "QUICK_REPLY", "title": "Buy", "id": "buy"},
            {"type": "URL", "title": "Shop", "url": "https://shop.example.test/p"},
        ]
        [media_url] = body["media"]
        assert "/media/" in media_url
        assert emulator.rich.fetched[media_url] == (200, PNG)  # Twilio fetched our link

        second = Card(title="Other", text="Also.", image=photo, buttons=(LATER, link))
        [carousel] = await send(gw, emulator, text="Both", cards=(card, second))
        shown = carousel.content["twilio/carousel"]
        assert shown["body"] == "Both"
        assert [(c["title"], c["body"]) for c in shown["cards"]] == [
            ("Photo received", "Kept."),
            ("Other", "Also."),
        ]
        assert all(emulator.rich.fetched[c["media"]] == (200, PNG) for c in shown["cards"])

        place = Attachment(
            kind="location",
            location=Location(latitude=41.3851, longitude=2.1734, title="Shop", address="Rambla 1"),
        )
        person = Attachment(
            kind="contact", contact=ContactCard(name="Ana", phones=("+34600111222",))
        )
        words, where, who = await send(gw, emulator, text="Visit us", attachments=(place, person))
        assert words.body == "Visit us"
        assert where.persistent_action == ("geo:41.385100,2.173400|Shop",)
        assert where.body == "📍 Shop, Rambla 1 (41.385100,2.173400)"
        assert who.body == "👤 Ana · +34600111222"


async def test_a_kept_file_gone_degrades_to_its_text_and_is_counted(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """An attachment whose file is gone (no blob, no https URL) goes as its text form."""
    async with running_gateway(config(make_config, tmp_path)) as gw:
        await open_window(gw, http, emulator)
        lost = Attachment(kind="file", name="manual.pdf", url="http://insecure.example.test/m.pdf")
        _, degraded = await send(gw, emulator, text="Manual", attachments=(lost,))
        assert degraded.body == "[manual.pdf] http://insecure.example.test/m.pdf"
        assert degraded.media_urls == ()
        sample = gw.runtime.metrics.registry.get_sample_value(
            "flowbiz_media_total",
            {"channel": "whatsapp", "direction": "out", "outcome": "degraded"},
        )
        assert sample == 1


async def test_content_is_created_once_and_serves_many_messages(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Two replies offering the same choices share one content; their texts are variables."""
    async with running_gateway(config(make_config, tmp_path)) as gw:
        await open_window(gw, http, emulator)
        [first] = await send(gw, emulator, text="First", quick_replies=(BUY, LATER))
        [second] = await send(gw, emulator, text="Second", quick_replies=(BUY, LATER))
        assert len(emulator.rich.content_creates) == 1
        assert first.content_sid == second.content_sid
        assert first.content_variables == {"1": "First"}
        assert second.content_variables == {"1": "Second"}
        # The definition Twilio keeps holds sample values, never a customer's reply.
        [kept] = emulator.rich.contents.values()
        assert kept["variables"] == {"1": "-"}


async def test_content_is_reused_across_processes_and_found_by_name_when_the_store_is_new(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A second gateway on the same store reuses the SID (asking Twilio once whether it
    still holds it, never listing); a gateway on a new store finds the content by its name
    before creating one; a content deleted at Twilio is made again."""
    data = config(make_config, tmp_path)
    async with running_gateway(data) as gw:
        await open_window(gw, http, emulator)
        [first] = await send(gw, emulator, quick_replies=(BUY, LATER))
    lists_after_first = emulator.rich.content_lists
    async with running_gateway(data) as gw:
        [again] = await send(gw, emulator, quick_replies=(BUY, LATER))
    assert again.content_sid == first.content_sid
    assert emulator.rich.content_lists == lists_after_first  # the store answered
    other = config(make_config, tmp_path)
    other["store"] = {**other["store"], "url": f"sqlite:///{tmp_path}/other.db"}
    async with running_gateway(other) as gw:
        await open_window(gw, http, emulator)
        [found] = await send(gw, emulator, quick_replies=(BUY, LATER))
    assert found.content_sid == first.content_sid
    assert emulator.rich.content_lists == lists_after_first + 1
    assert len(emulator.rich.content_creates) == 1
    emulator.rich.contents.clear()  # deleted in Twilio's console
    async with running_gateway(data) as gw:
        [remade] = await send(gw, emulator, quick_replies=(BUY, LATER))
        [again] = await send(gw, emulator, quick_replies=(BUY, LATER))
    assert remade.content_sid != first.content_sid
    assert again.content_sid == remade.content_sid
    assert len(emulator.rich.content_creates) == 2


async def test_a_content_api_refusal_sends_the_numbered_text(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A 4xx from the Content API: the whole reply goes as plain_text, choices numbered."""
    async with running_gateway(config(make_config, tmp_path)) as gw:
        await open_window(gw, http, emulator)
        emulator.rich.fail_content(1, status=400, code=21656)
        [plain] = await send(gw, emulator, text="Pick one", quick_replies=(BUY, LATER))
        assert plain.content_sid is None
        assert plain.body == "Pick one\n\n1. Buy\n2. Later"


async def test_a_content_api_outage_is_retried_then_sent_as_content(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A 503 from the Content API is transient: the dispatcher retries, the reply goes out
    once, natively."""
    async with running_gateway(config(make_config, tmp_path)) as gw:
        await open_window(gw, http, emulator)
        emulator.rich.fail_content(1, status=503, code=20503)
        await enqueue(gw, proactive("Pick").model_copy(update={"quick_replies": (BUY, LATER)}))
        _, sent = await emulator.wait_for(2)
        assert sent.content is not None
        assert "twilio/quick-reply" in sent.content
        assert len(emulator.rich.content_creates) == 1


async def test_outside_the_window_the_template_carries_the_numbered_text(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """No session: the persona's template, its $text the numbered plain text; no content."""
    templates = {"core": {"content_sid": TEMPLATE_SID, "variables": {"1": "$text"}}}
    async with running_gateway(config(make_config, tmp_path, templates=templates)) as gw:
        await open_window(gw, http, emulator)
        await age_last_inbound(gw, hours=25)
        await enqueue(
            gw, proactive("Your order shipped").model_copy(update={"buttons": (BUY, LATER)})
        )
        _, template = await emulator.wait_for(2)
        assert template.content_sid == TEMPLATE_SID
        assert template.content_variables == {"1": "Your order shipped\n\n1. Buy\n2. Later"}
        assert emulator.rich.content_creates == []


async def test_button_and_list_replies_come_back_as_actions(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """A quick-reply press (ButtonPayload) and a list pick (ListId) reach the agent as
    ACTION events whose text is the value the reply offered."""
    async with running_gateway(config(make_config, tmp_path)) as gw:
        sender = sender_for(gw, http)
        await sender.send(from_=CUSTOMER, to=SENDER, button=("buy", "Buy"))
        await sender.send(from_=CUSTOMER, to=SENDER, list_pick=("s", "Small"))
        first, second = await emulator.wait_for(2)
        # The echo persona repeats the text it got: the values, not the labels.
        assert sorted([first.body or "", second.body or ""]) == [
            "buy\n\n— Echo Desk",
            "s\n\n— Echo Desk",
        ]
        events = gw.runtime.metrics.registry.get_sample_value
        assert (
            events("flowbiz_channel_events_total", {"channel": "whatsapp", "event": "list_reply"})
            == 1
        )


async def test_an_inbound_place_becomes_a_location_and_goes_back_as_one(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Latitude/Longitude/Address/Label → a location attachment; the echo persona returns it
    as a PersistentAction geo: message."""
    async with running_gateway(config(make_config, tmp_path)) as gw:
        await sender_for(gw, http).send(
            from_=CUSTOMER, to=SENDER, location=("41.3851", "2.1734", "Rambla 1", "Shop")
        )
        [place] = await emulator.wait_for(1)
        assert place.persistent_action == ("geo:41.385100,2.173400|Shop",)
        assert place.body == "📍 Shop, Rambla 1 (41.385100,2.173400)"


async def test_a_retry_after_a_partial_send_sends_each_media_once(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Text and two kept photos: the second photo hits a 429; the retry sends it alone."""
    async with running_gateway(config(make_config, tmp_path)) as gw:
        await open_window(gw, http, emulator)
        photo = await kept_photo(gw)
        message = proactive("Two photos").model_copy(update={"attachments": (photo, photo)})
        emulator.fail_next(1, status=429, code=20429, after=2)
        with pytest.raises(TransientDeliveryError):
            await connector(gw).send(message)
        assert [m.body for m in emulator.messages[1:]] == ["Two photos", None]
        receipt = await connector(gw).send(message)
        sent = emulator.messages[1:]
        assert [(m.body, len(m.media_urls)) for m in sent] == [
            ("Two photos", 0),
            (None, 1),
            (None, 1),
        ]
        assert receipt.detail["message_sids"] == [m.sid for m in sent]
        sample = gw.runtime.metrics.registry.get_sample_value(
            "flowbiz_media_total", {"channel": "whatsapp", "direction": "out", "outcome": "sent"}
        )
        assert sample == 2
