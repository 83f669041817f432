"""The pure render of rich replies (what the console previews is what is sent): every
part within Slack's limits, the block count bounded, kept files left to the upload."""

from __future__ import annotations

from connectors.slack.blocks import MAX_BLOCKS, uploads
from connectors.slack.connector import render
from gateway.console.previews import previews
from gateway.models import (
    Attachment,
    Button,
    Card,
    Channel,
    ConversationKey,
    Option,
    OptionList,
    OutboundMessage,
    PersonaPresentation,
)

PERSONA = PersonaPresentation(name="core", display_name="Acme Helper", signature="Acme support")


def _reply(**extra: object) -> OutboundMessage:
    fields: dict[str, object] = {
        "conversation": ConversationKey(tenant="acme", channel=Channel.SLACK, conversation_id="D1"),
        "persona": PERSONA,
        "text": "Pick one.",
        "idempotency_key": "k1",
    }
    return OutboundMessage.model_validate(fields | extra)


MENU = OptionList(button="Plans", options=(Option(label="Pro", value="pro"),))


def test_the_console_preview_shows_a_select_menu_by_its_placeholder() -> None:
    [slack] = [p for p in previews(_reply(options=MENU), None) if p.kind == "slack"]
    assert slack.error is None
    assert slack.views[0]["buttons"] == ["Plans"]


def test_a_reply_of_files_alone_has_no_post_and_its_files_are_uploads() -> None:
    photo = Attachment(kind="image", blob="acme.x.y", name="p.png")
    reply = _reply(
        text="", attachments=(photo,), persona=PERSONA.model_copy(update={"signature": ""})
    )
    assert render(reply) == []
    assert [u.attachment for u in uploads(reply)] == [photo]


def test_the_block_count_never_passes_slacks_limit() -> None:
    for n in range(1, 30):
        cards = tuple(
            Card(title=f"C{i}", buttons=(Button(label="Go", value=f"go {i}"),)) for i in range(n)
        )
        [post] = render(_reply(cards=cards, text="x " * 3000), limit=40_000)
        assert len(post["blocks"]) <= MAX_BLOCKS
