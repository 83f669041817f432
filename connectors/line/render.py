"""Outbound LINE message objects: what :meth:`LineConnector.send` sends and the console
previews (:func:`render`). Text is split by UTF-16 units, as LINE counts; buttons become
quick replies when they fit LINE's limits, else numbered lines."""

from __future__ import annotations

from typing import Any

from linebot.v3.messaging import (
    ImageMessage,
    PostbackAction,
    QuickReply,
    QuickReplyItem,
    Sender,
    TextMessage,
)

from connectors.send_policy import utf16_fit, utf16_len
from gateway.models import OutboundMessage

__all__ = [
    "MAX_MESSAGES_PER_CALL",
    "MAX_TEXT_UTF16",
    "batches",
    "line_messages",
    "render",
    "split_text",
]

MAX_MESSAGES_PER_CALL = 5
MAX_TEXT_UTF16 = 5000
MAX_QUICK_REPLY_ITEMS = 13
MAX_ACTION_LABEL = 20
MAX_POSTBACK_DATA = 300
MAX_SENDER_NAME = 20


def split_text(text: str, limit: int = MAX_TEXT_UTF16) -> list[str]:
    """Split ``text`` in order into chunks of at most ``limit`` UTF-16 units.

    Cuts at the last newline (else space) in the second half of a chunk when there is one,
    never inside a surrogate pair.
    """
    chunks: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        cut = utf16_fit(rest, limit)
        window = rest[:cut]
        soft = window.rfind("\n")
        if soft < cut // 2:
            soft = window.rfind(" ")
        if soft >= cut // 2:
            cut = soft + 1
        chunk = rest[:cut].rstrip()
        if chunk:
            chunks.append(chunk)
        rest = rest[cut:].lstrip("\n")
    if rest.strip():
        chunks.append(rest)
    return chunks


def _sender(message: OutboundMessage) -> Any:
    persona = message.persona
    name: str | None = persona.display_name[:MAX_SENDER_NAME]
    if name is not None and "line" in name.lower():
        name = None  # LINE refuses sender names containing its own name
    icon = persona.icon_url
    if icon is not None and not icon.startswith("https://"):
        icon = None  # LINE shows only https icons
    if name is None and icon is None:
        return None
    return Sender(name=name, icon_url=icon)


def _quick_reply(message: OutboundMessage) -> Any:
    items = [
        QuickReplyItem(
            action=PostbackAction(
                label=button.label[:MAX_ACTION_LABEL],
                data=button.value,
                display_text=button.label,
            )
        )
        for button in message.buttons
    ]
    return QuickReply(items=items)


def _buttons_fit(message: OutboundMessage) -> bool:
    return len(message.buttons) <= MAX_QUICK_REPLY_ITEMS and all(
        0 < len(b.value) <= MAX_POSTBACK_DATA for b in message.buttons
    )


def line_messages(message: OutboundMessage) -> list[Any]:
    """LINE message objects for one outbound message, in order; buttons as quick replies."""
    quick = bool(message.buttons) and _buttons_fit(message)
    text = message.text if quick or not message.buttons else message.plain_text()
    sender = _sender(message)
    objects: list[Any] = [TextMessage(text=chunk, sender=sender) for chunk in split_text(text)]
    for attachment in message.attachments:
        url = attachment.url
        if attachment.kind == "image" and url and url.startswith("https://"):
            objects.append(
                ImageMessage(original_content_url=url, preview_image_url=url, sender=sender)
            )
        elif url:
            label = attachment.name or attachment.kind
            objects.append(TextMessage(text=f"{label}: {url}", sender=sender))
    if quick and objects:
        objects[-1].quick_reply = _quick_reply(message)
    return objects


def render(message: OutboundMessage) -> list[dict[str, Any]]:
    """The LINE message objects :meth:`LineConnector.send` sends for ``message``, as the
    JSON the Messaging API receives: what the console previews."""
    return [obj.to_dict() for obj in line_messages(message)]


def batches(objects: list[Any]) -> list[list[Any]]:
    size = MAX_MESSAGES_PER_CALL
    return [objects[i : i + size] for i in range(0, len(objects), size)]
