"""The reply's shape: the HTML alternative (escaped, cards, choices), inline card pictures
in multipart/related, files that cannot be had written as text, hostile names cleaned."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from connectors.email.compose import MailFile, build_reply
from connectors.email.emulator import Smarthost, dkim_verify
from gateway.models import (
    Channel,
    ConversationKey,
    EmailReplyContext,
    OutboundMessage,
    PersonaPresentation,
)
from gateway.parts import Attachment, Button, Card, Option, OptionList
from tests.connectors.email.conftest import SUPPORT, EmailWorld
from tests.connectors.email.rich_world import JANE, PNG, rich_world


@pytest.fixture
async def world(tmp_path: Path, smarthost: Smarthost, dkim_env: None) -> AsyncIterator[EmailWorld]:
    async with rich_world(tmp_path, smarthost) as w:
        yield w


def reply(**parts: object) -> OutboundMessage:
    return OutboundMessage(
        conversation=ConversationKey(
            tenant="acme", channel=Channel.EMAIL, conversation_id="root.1@customer.example"
        ),
        persona=PersonaPresentation(name="core", display_name="Acme", signature="— Acme"),
        idempotency_key=f"key-{sorted(parts)}",
        reply_context=EmailReplyContext(
            message_id="root.1@customer.example",
            subject="Hello",
            from_address=JANE,
            from_name="Jane",
            to_address=SUPPORT,
        ),
        **parts,  # type: ignore[arg-type]  # the test's own keyword parts
    )


async def test_a_card_with_a_kept_picture_is_inline_and_signed(
    world: EmailWorld, dkim_record: bytes
) -> None:
    service = world.gateway.runtime.media
    assert service is not None
    info = await service.blobs.put(
        tenant="acme", conversation_key="k", data=PNG, content_type="image/png", name="p.png"
    )
    image = Attachment(kind="image", blob=info.id, name="p.png")
    card = Card(
        title="Photo <b>received</b>",
        text="Kept & safe",
        image=image,
        buttons=(Button(label="Pricing", value="pricing"),),
    )
    options = OptionList(
        button="Pick", options=(Option(label="Hours", value="hours", description="when"),)
    )
    message = reply(
        text="Hi <script>alert(1)</script>",
        cards=(card,),
        options=options,
        quick_replies=(Button(label="Docs", url="https://docs.acme.example/"),),
    )
    await world.connector.send(message)
    [sent] = await world.smarthost.wait_for(1)
    assert dkim_verify(sent.data, dns_record=dkim_record)
    assert sent.message.get_content_type() == "multipart/related"
    html = sent.html()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "Photo &lt;b&gt;received&lt;/b&gt;" in html
    assert "Kept &amp; safe" in html
    [inline] = [p for p in sent.message.walk() if p.get("Content-ID")]
    content_id = str(inline["Content-ID"]).strip("<>")
    assert f'src="cid:{content_id}"' in html
    assert inline.get_payload(decode=True) == PNG
    assert 'href="https://docs.acme.example/"' in html
    # The same numbers as the text part: the card's button, then the option.
    text = sent.text()
    assert "1. Pricing" in text
    assert "2. Hours" in text
    assert "2. Hours" in html
    assert "/email/actions/" in html


async def test_a_file_that_cannot_be_had_is_written_as_text(world: EmailWorld) -> None:
    gone = Attachment(kind="file", blob="0" * 32, name="report.pdf")
    place = Attachment(kind="location", location={"latitude": 1.5, "longitude": 2.5})
    await world.connector.send(reply(text="see", attachments=(gone, place)))
    [sent] = await world.smarthost.wait_for(1)
    assert sent.attachments() == []
    assert "[report.pdf]" in sent.text()
    assert "1.500000,2.500000" in sent.text()
    assert "[report.pdf]" in sent.html()
    assert (
        world.metric("flowbiz_media_total", channel="email", direction="out", outcome="degraded")
        == 1
    )


def test_hostile_file_names_and_types_stay_inside_their_part() -> None:
    built = build_reply(
        from_address=SUPPORT,
        from_name="Acme",
        to_address=JANE,
        to_name="Jane",
        subject="x",
        parent_message_id="m@customer.example",
        parent_references=(),
        text="t",
        signature="",
        idempotency_key="k",
        files=(
            MailFile(PNG, "image/png", "a\r\nBcc: x@evil.example"),
            MailFile(b"x", "text/html\r\nBcc: y@evil.example", "../../etc/passwd"),
            MailFile(b"y", "application/pdf", "résumé\u2028.pdf"),
        ),
    )
    parsed = message_from_bytes(built.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    for part in parsed.walk():
        assert "Bcc" not in part
    names = [(p.get_filename(), p.get_content_type()) for p in parsed.iter_attachments()]
    assert names == [
        ("a Bcc: x@evil.example", "image/png"),
        ("passwd", "application/octet-stream"),
        ("résumé .pdf", "application/pdf"),
    ]
