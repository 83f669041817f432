"""Each connector's pure render function: the payloads its send path writes for a reply,
which the console's playground shows as previews. The send paths call these same
functions, so what is previewed is what is sent."""

from __future__ import annotations

from email import message_from_bytes, policy

from connectors.email.connector import render as render_email
from connectors.line.connector import render as render_line
from connectors.slack.connector import render as render_slack
from connectors.whatsapp.connector import render as render_whatsapp
from gateway.models import (
    Attachment,
    Button,
    Channel,
    ConversationKey,
    EmailReplyContext,
    OutboundMessage,
    PersonaPresentation,
)

PERSONA = PersonaPresentation(name="core", display_name="Acme Helper", signature="Acme support")


def _reply(**extra: object) -> OutboundMessage:
    fields: dict[str, object] = {
        "conversation": ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="c1"),
        "persona": PERSONA,
        "text": "Pro costs 29 <a month> & more.",
        "idempotency_key": "k1",
    }
    return OutboundMessage.model_validate(fields | extra)


BUTTONS = (Button(label="Buy", value="buy"), Button(label="Later", value="later"))


def test_slack_render_escapes_text_and_puts_buttons_and_signature_in_blocks() -> None:
    (post,) = render_slack(_reply(buttons=BUTTONS))
    assert post["text"] == "Pro costs 29 &lt;a month&gt; &amp; more."
    assert post["username"] == "Acme Helper"
    kinds = [b["type"] for b in post["blocks"]]
    assert kinds == ["section", "context", "actions"]
    assert [e["text"]["text"] for e in post["blocks"][2]["elements"]] == ["Buy", "Later"]


def test_slack_render_splits_long_text_at_the_limit() -> None:
    posts = render_slack(_reply(text="word " * 100), limit=200)
    assert len(posts) == 3
    assert all(len(p["text"]) <= 200 for p in posts)


def test_line_render_sends_buttons_as_quick_replies_with_the_sender() -> None:
    (text,) = render_line(_reply(buttons=BUTTONS))
    assert text["type"] == "text"
    assert text["text"].startswith("Pro costs 29")
    assert text["sender"] == {"name": "Acme Helper"}
    labels = [i["action"]["label"] for i in text["quickReply"]["items"]]
    assert labels == ["Buy", "Later"]


def test_line_render_adds_an_image_message_for_an_https_image() -> None:
    image = Attachment(kind="image", url="https://cdn.example.com/a.png")
    objects = render_line(_reply(attachments=(image,)))
    assert [o["type"] for o in objects] == ["text", "image"]


def test_whatsapp_render_sends_buttons_as_quick_replies_and_signs() -> None:
    (part,) = render_whatsapp(_reply(buttons=BUTTONS))
    assert part["content"] == "twilio/quick-reply"
    assert part["body"] == "Pro costs 29 <a month> & more.\n\nAcme support"
    assert part["buttons"] == ["Buy", "Later"]
    assert part["media_url"] is None


def test_email_render_is_a_threaded_reply_with_the_persona_as_sender() -> None:
    context = EmailReplyContext(
        message_id="m1@customer.example",
        subject="Prices",
        from_address="ann@customer.example",
        from_name="Ann",
        to_address="help@acme.example",
    )
    reply = render_email(
        _reply(buttons=BUTTONS),
        context,
        from_address="help@acme.example",
        recipient="ann@customer.example",
    )
    parsed = message_from_bytes(reply.data, policy=policy.default)
    assert parsed["From"] == "Acme Helper <help@acme.example>"
    assert parsed["Subject"] == "Re: Prices"
    assert parsed["In-Reply-To"] == "<m1@customer.example>"
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content().replace("\r\n", "\n")
    assert "1. Buy" in text
    assert "-- \nAcme support" in text
