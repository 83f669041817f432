"""The console's LINE preview reads the same message objects the send path writes, the new
ones included: a Flex card shows as its text and buttons, media and places as placeholders,
and a kept file (no link outside a running gateway) as its text form."""

from __future__ import annotations

from gateway.console.previews import previews
from gateway.models import Channel, ConversationKey, OutboundMessage, PersonaPresentation
from gateway.parts import Attachment, Button, Card, Location

CDN_WEBP = "https://cdn.example.com/pro.webp"


def test_the_line_preview_shows_cards_media_and_places() -> None:
    message = OutboundMessage(
        conversation=ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="c1"),
        persona=PersonaPresentation(name="core", display_name="Acme Helper"),
        text="Here",
        idempotency_key="k1",
        attachments=(
            Attachment(kind="image", url="https://cdn.example.com/p.png"),
            Attachment(kind="image", name="kept.png", blob="acme.0123.abcd"),
            Attachment(kind="location", location=Location(latitude=1.5, longitude=2.5)),
            Attachment(kind="sticker", extra={"packageId": "446", "stickerId": "1988"}),
        ),
        cards=(
            Card(
                title="Pro",
                text="29 a month",
                # LINE shows JPEG and PNG only: this card goes without its picture.
                image=Attachment(kind="image", url=CDN_WEBP, mime_type="image/webp"),
                buttons=(Button(label="Buy", value="buy"),),
            ),
        ),
        quick_replies=(Button(label="Later", value="later"),),
    )
    [line] = [p for p in previews(message, None) if p.kind == "line"]
    assert [p["type"] for p in line.payloads] == [
        "text", "image", "text", "location", "sticker", "flex",
    ]  # fmt: skip
    views = line.views
    assert views[1] == {
        "sender": "Acme Helper",
        "text": "https://cdn.example.com/p.png",
        "image": True,
        "buttons": [],
    }
    assert views[2]["text"] == "[kept.png]"
    assert views[3]["text"] == "[location] Location, 1.500000, 2.500000"
    assert views[4]["text"] == "[sticker 446/1988]"
    assert views[5]["text"] == f"[card] *Pro*\n29 a month\n{CDN_WEBP}\n1. Buy"
    assert "hero" not in line.payloads[5]["contents"]
    assert views[5]["buttons"] == ["Buy", "Later"]
