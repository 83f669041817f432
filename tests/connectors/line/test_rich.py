"""Rich replies on LINE, as the emulated LINE receives them from the running gateway: each
part's message object, the order kept across calls of five, postbacks coming back as
ACTIONs, and the shared numbered text when LINE's limits are passed."""

from __future__ import annotations

import pytest

from agents.base import ReplyPart
from gateway.parts import Attachment, Button, Card, ContactCard, Location, Option, OptionList
from tests.connectors.line.conftest import ALICE, PartsAgent, media_count

CDN = "https://cdn.example.com"
PHONE = "+66 2 123 4567"


def _card(n: int, *, image: bool = False) -> Card:
    return Card(
        title=f"Card {n}",
        text=f"About {n}",
        image=Attachment(kind="image", url=f"{CDN}/{n}.png") if image else None,
        buttons=(Button(label=f"Pick {n}", value=f"pick {n}"),),
    )


REPLIES = {
    "media": ReplyPart(
        text="Here you go",
        attachments=(
            Attachment(kind="image", url=f"{CDN}/p.jpg"),
            Attachment(kind="video", url=f"{CDN}/v.mp4", extra={"preview_url": f"{CDN}/v.jpg"}),
            Attachment(kind="audio", url=f"{CDN}/a.m4a", extra={"duration_ms": 4200}),
            Attachment(kind="audio", url=f"{CDN}/b.m4a"),
            Attachment(
                kind="location",
                location=Location(
                    latitude=13.7563, longitude=100.5018, title="Acme HQ", address="1 Main St"
                ),
            ),
            Attachment(kind="sticker", extra={"packageId": "446", "stickerId": "1988"}),
            Attachment(kind="contact", contact=ContactCard(name="Support", phones=(PHONE,))),
            Attachment(kind="file", name="terms.pdf", url=f"{CDN}/terms.pdf"),
            Attachment(kind="image", name="old.png", url="http://insecure.example.com/old.png"),
        ),
    ),
    "card": ReplyPart(
        text="One card",
        cards=(
            Card(
                title="Pro plan",
                text="29 a month",
                image=Attachment(kind="image", url=f"{CDN}/pro.png"),
                buttons=(
                    Button(label="Buy", value="buy pro"),
                    Button(label="Details", url="https://example.com/pro"),
                ),
            ),
        ),
    ),
    "carousel": ReplyPart(text="", cards=tuple(_card(n, image=n == 1) for n in (1, 2, 3))),
    "too many cards": ReplyPart(text="Thirteen", cards=tuple(_card(n) for n in range(1, 14))),
    "choices": ReplyPart(
        text="Choose",
        attachments=(Attachment(kind="image", url=f"{CDN}/menu.png"),),
        buttons=(
            Button(label="Yes", value="yes"),
            Button(label="Docs", url="https://example.com/docs"),
        ),
        options=OptionList(
            button="Plans",
            options=(
                Option(label="Free", value="free"),
                Option(label="Pro with every option there is", value="pro", description="29"),
            ),
        ),
        quick_replies=(Button(label="Talk to a person", value="agent"),),
    ),
    "too many choices": ReplyPart(
        text="Pick one",
        options=OptionList(
            button="Plans",
            options=tuple(Option(label=f"Plan {n}", value=f"plan {n}") for n in range(1, 11)),
        ),
        quick_replies=tuple(Button(label=f"Q{n}", value=f"q{n}") for n in range(1, 5)),
    ),
}


@pytest.fixture(autouse=True)
def replies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PartsAgent, "replies", REPLIES)


async def _answer(gw, sender, emulator, text: str, count: int = 1) -> list[dict]:
    line = sender(gw.url)
    before = len(emulator.deliveries)
    assert await line.post([line.text(text, user_id=ALICE)]) == 200
    deliveries = await emulator.wait_for(before + count)
    return [m for d in deliveries[before:] for m in d.messages]


async def test_every_attachment_kind_in_its_native_form_and_in_order(
    rich_gateway, sender, emulator
):
    """Nine attachments: eight objects (the text lines merged), five by reply, three pushed."""
    async with rich_gateway(persona="parts") as gw:
        messages = await _answer(gw, sender, emulator, "media", count=2)
        assert [d.via for d in emulator.deliveries] == ["reply", "push"]
        assert [len(d.messages) for d in emulator.deliveries] == [5, 3]
        assert [m["type"] for m in messages] == [
            "text", "image", "video", "audio", "audio", "location", "sticker", "text",
        ]  # fmt: skip
        text, image, video, audio, audio2, place, sticker, lines = messages
        assert text["text"] == "Here you go"
        assert (image["originalContentUrl"], image["previewImageUrl"]) == (
            f"{CDN}/p.jpg",
            f"{CDN}/p.jpg",
        )
        assert (video["originalContentUrl"], video["previewImageUrl"]) == (
            f"{CDN}/v.mp4",
            f"{CDN}/v.jpg",
        )
        assert (audio["originalContentUrl"], audio["duration"]) == (f"{CDN}/a.m4a", 4200)
        assert audio2["duration"] == 60_000  # no duration given: the documented default
        assert (place["title"], place["address"]) == ("Acme HQ", "1 Main St")
        assert (place["latitude"], place["longitude"]) == (13.7563, 100.5018)
        assert (sticker["packageId"], sticker["stickerId"]) == ("446", "1988")
        # No contact or file messages for bots on LINE; a URL that is not https: text form.
        assert lines["text"].splitlines() == [
            f"👤 Support · {PHONE}",
            f"📎 terms.pdf: {CDN}/terms.pdf",
            "[old.png] http://insecure.example.com/old.png",
        ]
        assert all(m["sender"] == {"name": "Parts"} for m in messages)
        assert media_count(gw, "out", "sent") == 5
        assert media_count(gw, "out", "degraded") == 1


async def test_a_card_is_a_flex_bubble_whose_buttons_post_back(rich_gateway, sender, emulator):
    async with rich_gateway(persona="parts") as gw:
        text, flex = await _answer(gw, sender, emulator, "card")
        assert text["text"] == "One card"
        assert flex["type"] == "flex"
        assert flex[
            "altText"
        ] == "*Pro plan*\n29 a month\nhttps://cdn.example.com/pro.png\n1. Buy\n" + (
            "Details: https://example.com/pro"
        )
        bubble = flex["contents"]
        assert bubble["hero"]["url"] == f"{CDN}/pro.png"
        assert [c["text"] for c in bubble["body"]["contents"]] == ["Pro plan", "29 a month"]
        buy, details = (b["action"] for b in bubble["footer"]["contents"])
        assert buy == {"type": "postback", "label": "Buy", "data": "buy pro", "displayText": "Buy"}
        assert details == {"type": "uri", "label": "Details", "uri": "https://example.com/pro"}

        line = sender(gw.url)
        assert await line.post([line.postback(buy["data"], user_id=ALICE)]) == 200
        await emulator.wait_for(2)
        assert emulator.texts_to(ALICE)[-1] == "picked: buy pro"


async def test_several_cards_are_a_carousel(rich_gateway, sender, emulator):
    async with rich_gateway(persona="parts") as gw:
        [flex] = await _answer(gw, sender, emulator, "carousel")
        carousel = flex["contents"]
        assert carousel["type"] == "carousel"
        bubbles = carousel["contents"]
        assert [b["body"]["contents"][0]["text"] for b in bubbles] == ["Card 1", "Card 2", "Card 3"]
        assert "hero" in bubbles[0]
        assert "hero" not in bubbles[1]
        assert [b["footer"]["contents"][0]["action"]["data"] for b in bubbles] == [
            "pick 1",
            "pick 2",
            "pick 3",
        ]


async def test_more_cards_than_a_carousel_holds_are_the_numbered_text(
    rich_gateway, sender, emulator
):
    async with rich_gateway(persona="parts") as gw:
        messages = await _answer(gw, sender, emulator, "too many cards")
        assert {m["type"] for m in messages} == {"text"}
        text = "\n".join(m["text"] for m in messages)
        assert text.startswith("Thirteen\n\n*Card 1*\nAbout 1\n1. Pick 1")
        assert "*Card 13*\nAbout 13\n13. Pick 13" in text
        assert not any("quickReply" in m for m in messages)

        # The numbers work both ways: "13" is the 13th card's button.
        await _answer(gw, sender, emulator, "13")
        assert emulator.texts_to(ALICE)[-1] == "picked: pick 13"


async def test_buttons_options_and_quick_replies_are_quick_replies_on_the_last_object(
    rich_gateway, sender, emulator
):
    async with rich_gateway(persona="parts") as gw:
        text, image = await _answer(gw, sender, emulator, "choices")
        assert text["text"] == "Choose\n\nDocs: https://example.com/docs"  # links stay links
        assert "quickReply" not in text
        items = [i["action"] for i in image["quickReply"]["items"]]
        assert [(a["type"], a["label"], a["data"]) for a in items] == [
            ("postback", "Yes", "yes"),
            ("postback", "Free", "free"),
            ("postback", "Pro with every optio", "pro"),  # LINE's 20-character labels
            ("postback", "Talk to a person", "agent"),
        ]
        assert items[2]["displayText"] == "Pro with every option there is"

        line = sender(gw.url)
        assert await line.post([line.postback(items[2]["data"], user_id=ALICE)]) == 200
        await emulator.wait_for(2)
        assert emulator.texts_to(ALICE)[-1] == "picked: pro"


async def test_more_choices_than_quick_replies_hold_are_the_numbered_text(
    rich_gateway, sender, emulator
):
    """Fourteen choices: LINE takes thirteen quick replies, so all are numbered lines."""
    async with rich_gateway(persona="parts") as gw:
        [message] = await _answer(gw, sender, emulator, "too many choices")
        assert "quickReply" not in message
        lines = message["text"].splitlines()
        assert lines[:3] == ["Pick one", "", "1. Plan 1"]
        assert lines[-1] == "14. Q4"
        await _answer(gw, sender, emulator, "12")
        assert emulator.texts_to(ALICE)[-1] == "picked: q2"
