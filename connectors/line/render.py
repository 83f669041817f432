"""Outbound LINE message objects: what :meth:`LineConnector.send` sends and the console
previews (:func:`render`).

Guarantees, for one :class:`~gateway.models.OutboundMessage`, in this order:

- the text, split by UTF-16 units as LINE counts, link buttons as ``label: url`` lines;
- each attachment in its native form — image, video and audio messages fetched by LINE from
  ``link(attachment)`` (a kept file's signed link, an agent's https URL), a location message,
  a sticker — or as one text line: a file's link (LINE bots cannot send files), a contact
  card, or the attachment's text form when it has no link (``MediaUnavailable``, counted
  ``degraded``);
- the cards as one Flex Message (:mod:`connectors.line.flex`);
- the buttons, the option list and the quick replies as quick-reply postback items on the
  LAST object, their value as the postback ``data`` (it comes back as an ACTION).

When the choices or the cards go beyond what LINE takes (more than 13 quick-reply items,
more than 12 cards) the text, cards and choices are sent as
:meth:`~gateway.models.OutboundMessage.plain_text` instead — numbered as every channel numbers
them, so a bare number answered maps back (gateway/choices.py); attachments still go natively.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from linebot.v3.messaging import (
    AudioMessage,
    ImageMessage,
    LocationMessage,
    PostbackAction,
    QuickReply,
    QuickReplyItem,
    Sender,
    StickerMessage,
    TextMessage,
    VideoMessage,
)

from connectors.line.flex import Link, cards_fit, flex_message
from connectors.send_policy import utf16_fit, utf16_len
from gateway.media import MediaUnavailable
from gateway.models import OutboundMessage
from gateway.parts import Attachment

__all__ = [
    "DEFAULT_AUDIO_DURATION_MS",
    "MAX_MESSAGES_PER_CALL",
    "MAX_TEXT_UTF16",
    "batches",
    "line_messages",
    "public_link",
    "render",
    "split_text",
]

MAX_MESSAGES_PER_CALL = 5
MAX_TEXT_UTF16 = 5000
MAX_QUICK_REPLY_ITEMS = 13
MAX_ACTION_LABEL = 20
MAX_SENDER_NAME = 20
MAX_CONTENT_URL = 2000
MAX_LOCATION_TEXT = 100
# LINE needs an audio message's length; an attachment's extra["duration_ms"] gives it.
DEFAULT_AUDIO_DURATION_MS = 60_000
# What LINE shows as an image message; another kept type goes as a link.
_IMAGE_TYPES = ("image/jpeg", "image/png")
_MAX_BYTES = {"image": 10 * 1024 * 1024, "video": 200 * 1024 * 1024, "audio": 200 * 1024 * 1024}

MediaOutcome = Callable[[str], None]  # called with "sent" or "degraded" per file


def public_link(attachment: Attachment) -> str:
    """An agent's https URL as it is; a kept file has no link outside a running gateway
    (what the console's preview uses)."""
    if attachment.url is not None and attachment.url.startswith("https://"):
        return attachment.url
    raise MediaUnavailable("no public link")


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


def _choices(message: OutboundMessage) -> list[tuple[str, str]]:
    """The quick-reply items as ``(label, value)``: buttons, options, quick replies."""
    found = [(b.label, b.value) for b in message.buttons if b.url is None]
    if message.options is not None:
        found += [(o.label, o.value) for o in message.options.options]
    found += [(b.label, b.value) for b in message.quick_replies if b.url is None]
    return found


def _fits(message: OutboundMessage) -> bool:
    """Whether LINE can take the message's choices and cards natively."""
    if len(_choices(message)) > MAX_QUICK_REPLY_ITEMS:
        return False
    return not message.cards or cards_fit(message.cards)


def _quick_reply(choices: list[tuple[str, str]]) -> Any:
    return QuickReply(
        items=[
            QuickReplyItem(
                action=PostbackAction(
                    label=label[:MAX_ACTION_LABEL], data=value, display_text=label
                )
            )
            for label, value in choices
        ]
    )


def _link_text(attachment: Attachment, url: str) -> str:
    return f"📎 {attachment.name or attachment.kind}: {url}"


def _too_big(attachment: Attachment, url: str) -> bool:
    limit = _MAX_BYTES.get(attachment.kind, 0)
    return len(url) > MAX_CONTENT_URL or (attachment.size or 0) > limit


def _located(attachment: Attachment, sender: Any) -> Any:
    place = attachment.location
    assert place is not None
    where = f"{place.latitude:.6f}, {place.longitude:.6f}"
    return LocationMessage(
        title=(place.title or "Location")[:MAX_LOCATION_TEXT],
        address=(place.address or where)[:MAX_LOCATION_TEXT],
        latitude=place.latitude,
        longitude=place.longitude,
        sender=sender,
    )


def _sticker(attachment: Attachment, sender: Any) -> Any:
    extra = attachment.extra
    package = extra.get("packageId", extra.get("package_id"))
    sticker = extra.get("stickerId", extra.get("sticker_id"))
    if package is None or sticker is None:
        return None
    return StickerMessage(package_id=str(package), sticker_id=str(sticker), sender=sender)


def _attachment(attachment: Attachment, link: Link, on_media: MediaOutcome, sender: Any) -> Any:
    """The attachment's message object, or its text line (a str)."""
    if attachment.location is not None:
        return _located(attachment, sender)
    if attachment.contact is not None:
        return attachment.describe()
    if attachment.kind == "sticker":
        return _sticker(attachment, sender) or attachment.describe()
    try:
        url = link(attachment)
    except MediaUnavailable:
        on_media("degraded")
        return attachment.describe()
    on_media("sent")
    kind = attachment.kind
    if kind not in _MAX_BYTES or _too_big(attachment, url):
        return _link_text(attachment, url)
    if kind == "image":
        if attachment.mime_type is not None and attachment.mime_type not in _IMAGE_TYPES:
            return _link_text(attachment, url)
        return ImageMessage(original_content_url=url, preview_image_url=url, sender=sender)
    if kind == "video":
        preview = attachment.extra.get("preview_url")
        if not (isinstance(preview, str) and preview.startswith("https://")):
            preview = url  # the gateway makes no thumbnails
        return VideoMessage(original_content_url=url, preview_image_url=preview, sender=sender)
    duration = attachment.extra.get("duration_ms")
    if not isinstance(duration, int) or duration <= 0:
        duration = DEFAULT_AUDIO_DURATION_MS
    return AudioMessage(original_content_url=url, duration=duration, sender=sender)


def _ignore(outcome: str) -> None:
    del outcome


def line_messages(
    message: OutboundMessage, *, link: Link = public_link, on_media: MediaOutcome = _ignore
) -> list[Any]:
    """LINE message objects for one outbound message, in order (see the module's guarantees)."""
    sender = _sender(message)
    native = _fits(message)
    choices = _choices(message) if native else []
    if native:
        links = [
            f"{b.label}: {b.url}"
            for b in (*message.buttons, *message.quick_replies)
            if b.url is not None
        ]
        text = "\n\n".join(p for p in (message.text, "\n".join(links)) if p)
    else:
        text = message.plain_text()
    objects: list[Any] = [TextMessage(text=chunk, sender=sender) for chunk in split_text(text)]
    lines: list[str] = []

    def flush() -> None:
        objects.extend(TextMessage(text=c, sender=sender) for c in split_text("\n".join(lines)))
        lines.clear()

    for attachment in message.attachments:
        made = _attachment(attachment, link, on_media, sender)
        if isinstance(made, str):
            lines.append(made)
        else:
            flush()
            objects.append(made)
    flush()
    if native and message.cards:
        objects.append(flex_message(message.cards, link=link, on_media=on_media, sender=sender))
    if choices:
        if not objects:  # choices alone: they need a message to hang on
            objects = [TextMessage(text=c, sender=sender) for c in split_text(message.plain_text())]
        objects[-1].quick_reply = _quick_reply(choices)
    return objects


def render(message: OutboundMessage, *, link: Link = public_link) -> list[dict[str, Any]]:
    """The LINE message objects :meth:`LineConnector.send` sends for ``message``, as the
    JSON the Messaging API receives: what the console previews."""
    return [obj.to_dict() for obj in line_messages(message, link=link)]


def batches(objects: list[Any]) -> list[list[Any]]:
    size = MAX_MESSAGES_PER_CALL
    return [objects[i : i + size] for i in range(0, len(objects), size)]
