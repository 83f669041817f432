"""What one reply becomes on WhatsApp: the Messages API creates, in order.

Inside the customer-service window a reply is rendered natively when every rich part fits
what Twilio's Content types take (:func:`native_plan`):

- choices (``buttons`` and ``quick_replies``, values only) → ``twilio/quick-reply`` (at most
  :data:`QUICK_REPLY_MAX` buttons of at most :data:`BUTTON_TITLE_MAX` characters), more of
  them → ``twilio/list-picker``; ``options`` (with any choices) → ``twilio/list-picker`` (at
  most :data:`LIST_MAX` items);
- one card → ``twilio/card`` (its image as media, its buttons as QUICK_REPLY / URL
  actions); several → ``twilio/carousel`` when every card has an image and the same buttons,
  else one ``twilio/card`` each;
- attachments → one ``MediaUrl`` message each (WhatsApp carries one media per message): a
  signed link to a kept file or the agent's https URL; a place → ``PersistentAction``
  ``geo:`` with its text as the body; a contact card → its text.

The text travels as the body of the choices' content (the buttons sit under the words they
answer), else as its own messages before everything else. Per-message text (bodies, card
titles, the media link's path) is a content *variable*, so one content serves every
message offering the same choices. When any part does not fit, the whole reply is
:meth:`OutboundMessage.plain_text` (:func:`plain_plan`): one numbering for the whole
message, the numbering a bare "2" is answered by (gateway/choices.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from connectors.send_policy import utf16_fit
from gateway.models import OutboundMessage
from gateway.parts import Attachment, Button, Card

__all__ = [
    "BODY_LIMIT",
    "BUTTON_TITLE_MAX",
    "LIST_MAX",
    "QUICK_REPLY_MAX",
    "ContentSpec",
    "Part",
    "native_plan",
    "plain_plan",
    "split_body",
]

BODY_LIMIT = 1600  # characters per Messages API Body
# Twilio's Content type limits for WhatsApp (docs/connectors/whatsapp.md lists them).
QUICK_REPLY_MAX = 3
BUTTON_TITLE_MAX = 20
LIST_MAX = 10
LIST_ITEM_MAX = 24
LIST_DESCRIPTION_MAX = 72
ACTION_ID_MAX = 200
CONTENT_BODY_MAX = 1024
CAROUSEL_CARD_BODY_MAX = 160
CAROUSEL_BUTTONS_MAX = 2
LIST_BUTTON = "Choose"  # what opens a list made of buttons (options name their own)

# A link to the media an attachment is sent from, or None: it cannot be (counted there).
MediaLink = Callable[[Attachment], str | None]


@dataclass(frozen=True, slots=True)
class ContentSpec:
    """One Content resource (its ``types``) and the variables of this message."""

    types: dict[str, Any]
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return next(iter(self.types))

    @property
    def media(self) -> int:
        """How many files Twilio fetches for it (a card's image, each carousel card's)."""
        body = self.types[self.kind]
        return len(body.get("media", ())) + sum(1 for c in body.get("cards", ()) if c.get("media"))

    def digest(self, account_sid: str) -> str:
        """The name of the definition: equal for every message it serves, per account."""
        canonical = json.dumps(
            {"account": account_sid, "types": self.types, "variables": sorted(self.variables)},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Part:
    """One Messages API create."""

    body: str | None = None
    media_url: str | None = None
    content: ContentSpec | None = None
    persistent_action: str | None = None


def split_body(text: str, limit: int = BODY_LIMIT) -> list[str]:
    """Cut ``text`` into ordered parts of at most ``limit`` characters, at a line break or
    space when one is near the limit.

    Characters are counted as UTF-16 code units, as Twilio counts them, so an emoji counts
    twice and a part never goes over the limit however the platform counts.
    """
    parts: list[str] = []
    rest = text
    while (fits := utf16_fit(rest, limit)) < len(rest):
        cut = max(rest.rfind("\n", 0, fits + 1), rest.rfind(" ", 0, fits + 1))
        if cut < fits // 2:
            parts.append(rest[:fits])  # no good break point: cut hard, not into tiny parts
            rest = rest[fits:]
        else:
            parts.append(rest[:cut].rstrip())
            rest = rest[cut + 1 :]
    parts.append(rest)
    return [part for part in parts if part.strip()] or [""]


def _signed(message: OutboundMessage, text: str) -> str:
    # WhatsApp has no per-message sender name: the persona signs its text.
    if message.persona.signature and text:
        return f"{text}\n\n{message.persona.signature}"
    return text


def _text_parts(text: str) -> list[Part]:
    return [Part(body=chunk) for chunk in split_body(text) if chunk] if text.strip() else []


def _attachment_parts(message: OutboundMessage, link: MediaLink) -> list[Part]:
    parts: list[Part] = []
    for attachment in message.attachments:
        place = attachment.location
        if place is not None:
            label = (place.title or place.address or "").replace("|", " ")
            action = f"geo:{place.latitude:.6f},{place.longitude:.6f}"
            parts.append(
                Part(body=attachment.describe(), persistent_action=f"{action}|{label}".rstrip("|"))
            )
        elif attachment.contact is not None:
            parts.append(Part(body=attachment.describe()))
        else:
            url = link(attachment)
            parts.append(Part(media_url=url) if url else Part(body=attachment.describe()))
    return parts


def plain_plan(message: OutboundMessage, link: MediaLink) -> list[Part]:
    """The reply as numbered text, then its attachments: the one fallback."""
    return _text_parts(_signed(message, message.plain_text())) + _attachment_parts(message, link)


def _media_variable(url: str) -> tuple[str, str]:
    """``(static part, variable part)`` of a media URL: Twilio takes a variable only after
    the host, and the path and query of a signed link change with every message."""
    parts = urlsplit(url)
    rest = url[len(f"{parts.scheme}://{parts.netloc}/") :]
    return f"{parts.scheme}://{parts.netloc}/", rest


def _card_action(button: Button) -> dict[str, str] | None:
    if button.url is not None:
        return {"type": "URL", "title": button.label, "url": button.url}
    if len(button.label) > BUTTON_TITLE_MAX or len(button.value) > ACTION_ID_MAX:
        return None
    return {"type": "QUICK_REPLY", "title": button.label, "id": button.value}


def _card_text(card: Card) -> str:
    return f"*{card.title}*\n{card.text}" if card.text else f"*{card.title}*"


def _card(card: Card, link: MediaLink) -> ContentSpec | None:
    actions = [_card_action(b) for b in card.buttons]
    if None in actions:
        return None
    body: dict[str, Any] = {"title": "{{1}}"}
    variables = {"1": _card_text(card)}
    url = link(card.image) if card.image is not None else None
    if url is not None:
        static, rest = _media_variable(url)
        body["media"] = [static + "{{2}}"]
        variables["2"] = rest
    if actions:
        body["actions"] = actions
    return ContentSpec({"twilio/card": body}, variables)


def _carousel(body: str, cards: tuple[Card, ...], link: MediaLink) -> ContentSpec | None:
    shapes = {tuple(b.url is None for b in card.buttons) for card in cards}
    if (
        len(cards) > LIST_MAX
        or len(shapes) != 1
        or not 1 <= len(cards[0].buttons) <= CAROUSEL_BUTTONS_MAX
        or any(len(card.text) > CAROUSEL_CARD_BODY_MAX for card in cards)
        or len(body) > CONTENT_BODY_MAX
    ):
        return None
    urls = [link(card.image) if card.image is not None else None for card in cards]
    if any(url is None for url in urls):
        return None
    variables = {"1": body}
    rendered = []
    for n, (card, url) in enumerate(zip(cards, urls, strict=True)):
        actions = [_card_action(b) for b in card.buttons]
        if None in actions:
            return None
        assert url is not None
        static, rest = _media_variable(url)
        first = 2 + 3 * n
        variables |= {str(first): card.title, str(first + 1): card.text, str(first + 2): rest}
        rendered.append(
            {
                "title": f"{{{{{first}}}}}",
                "body": f"{{{{{first + 1}}}}}",
                "media": f"{static}{{{{{first + 2}}}}}",
                "actions": actions,
            }
        )
    return ContentSpec({"twilio/carousel": {"body": "{{1}}", "cards": rendered}}, variables)


def _cards(message: OutboundMessage, body: str, link: MediaLink) -> list[ContentSpec] | None:
    cards = message.cards
    if not cards:
        return []
    if len(cards) > 1:
        carousel = _carousel(body or ", ".join(c.title for c in cards), cards, link)
        if carousel is not None:
            return [carousel]
    found = [_card(card, link) for card in cards]
    return None if None in found else [spec for spec in found if spec is not None]


def _choices(message: OutboundMessage, body: str) -> ContentSpec | bool | None:
    """The content of the message's choices; True when it has none; None when they do not
    fit a native form."""
    buttons = (*message.buttons, *message.quick_replies)
    if not buttons and message.options is None:
        return True
    if any(b.url is not None for b in buttons) or not body or len(body) > CONTENT_BODY_MAX:
        return None
    if any(len(b.value) > ACTION_ID_MAX for b in buttons):
        return None
    if message.options is None and len(buttons) <= QUICK_REPLY_MAX:
        if any(len(b.label) > BUTTON_TITLE_MAX for b in buttons):
            return None
        actions = [{"type": "QUICK_REPLY", "title": b.label, "id": b.value} for b in buttons]
        return ContentSpec(
            {"twilio/quick-reply": {"body": "{{1}}", "actions": actions}}, {"1": body}
        )
    options = message.options.options if message.options is not None else ()
    # Numbered in plain_text's order: the buttons, the options, then the quick replies.
    rows: list[tuple[str, str, str]] = [
        *((b.value, b.label, "") for b in message.buttons),
        *((o.value, o.label, o.description or "") for o in options),
        *((b.value, b.label, "") for b in message.quick_replies),
    ]
    if len(rows) > LIST_MAX or any(len(label) > LIST_ITEM_MAX for _, label, _ in rows):
        return None
    if any(len(description) > LIST_DESCRIPTION_MAX for _, _, description in rows):
        return None
    button = message.options.button if message.options is not None else LIST_BUTTON
    if len(button) > BUTTON_TITLE_MAX:
        return None
    items = [
        {"id": value, "item": label, **({"description": d} if d else {})}
        for value, label, d in rows
    ]
    return ContentSpec(
        {"twilio/list-picker": {"body": "{{1}}", "button": button, "items": items}}, {"1": body}
    )


def native_plan(message: OutboundMessage, link: MediaLink) -> list[Part] | None:
    """The reply with its rich parts as Content, or None when one does not fit (then the
    whole reply goes as :func:`plain_plan`)."""
    text = _signed(message, message.text)
    choices = _choices(message, text)
    if choices is None:
        return None
    cards = _cards(message, "" if isinstance(choices, ContentSpec) else text, link)
    if cards is None:
        return None
    carried = isinstance(choices, ContentSpec) or (
        len(cards) == 1 and cards[0].kind == "twilio/carousel"
    )
    parts = [] if carried else _text_parts(text)
    parts += _attachment_parts(message, link)
    parts += [Part(content=spec) for spec in cards]
    if isinstance(choices, ContentSpec):
        parts.append(Part(content=choices))
    return parts
