"""Cards as LINE Flex Messages: one card a bubble, several a carousel.

Guarantees: a bubble holds the card's title and text, its image as the hero when the image
has a link LINE can fetch (a kept file's signed link, an agent's https URL), and its buttons
in the footer — a choice as a postback action whose ``data`` is the button's value (it comes
back as a ``postback`` event, an ACTION with that value), a link as a URI action. The
``altText`` (what notifications and the chat list show) is the cards' shared text form.
:func:`cards_fit` says whether LINE can take the cards at all; when it cannot the caller
sends the whole message as :meth:`~gateway.models.OutboundMessage.plain_text` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from linebot.v3.messaging import (
    FlexBox,
    FlexBubble,
    FlexButton,
    FlexCarousel,
    FlexImage,
    FlexMessage,
    FlexText,
    PostbackAction,
    URIAction,
)

from connectors.send_policy import utf16_fit, utf16_len
from gateway.media import MediaUnavailable
from gateway.parts import Attachment, Button, Card, plain_text

__all__ = ["MAX_BUBBLES", "cards_fit", "flex_message"]

MAX_BUBBLES = 12  # a carousel's limit
MAX_ALT_TEXT = 1500
MAX_BUTTON_LABEL = 40
MAX_URL = 2000  # an image URL; LINE's URI actions take up to 1,000 characters
MAX_URI = 1000
_HERO_TYPES = ("image/jpeg", "image/png")

Link = Callable[[Attachment], str]


def cards_fit(cards: tuple[Card, ...]) -> bool:
    """Whether LINE can show these cards natively (a carousel holds at most 12)."""
    return 0 < len(cards) <= MAX_BUBBLES and all(
        b.url is None or len(b.url) <= MAX_URI for card in cards for b in card.buttons
    )


def _action(button: Button) -> Any:
    label = button.label[:MAX_BUTTON_LABEL]
    if button.url is not None:
        return URIAction(label=label, uri=button.url)
    return PostbackAction(label=label, data=button.value, display_text=button.label)


def _hero(card: Card, link: Link, on_media: Callable[[str], None]) -> Any:
    if card.image is None:
        return None
    try:
        url = link(card.image)
    except MediaUnavailable:
        on_media("degraded")  # the card goes without its picture
        return None
    mime = card.image.mime_type
    if len(url) > MAX_URL or (mime is not None and mime not in _HERO_TYPES):
        on_media("degraded")  # LINE shows only JPEG and PNG heroes
        return None
    on_media("sent")
    return FlexImage(url=url, size="full", aspect_ratio="20:13", aspect_mode="cover")


def _bubble(card: Card, link: Link, on_media: Callable[[str], None]) -> Any:
    body: list[Any] = [FlexText(text=card.title, weight="bold", size="lg", wrap=True)]
    if card.text:
        body.append(FlexText(text=card.text, size="sm", wrap=True, margin="md"))
    footer = None
    if card.buttons:
        footer = FlexBox(
            layout="vertical",
            spacing="sm",
            contents=[
                FlexButton(action=_action(b), style="primary" if n == 0 else "secondary")
                for n, b in enumerate(card.buttons)
            ],
        )
    return FlexBubble(
        hero=_hero(card, link, on_media),
        body=FlexBox(layout="vertical", contents=body),
        footer=footer,
    )


def alt_text(cards: tuple[Card, ...]) -> str:
    """The cards as text, numbered as the message's plain text numbers them (cards first)."""
    text = plain_text("", cards=cards)
    if utf16_len(text) > MAX_ALT_TEXT:
        text = text[: utf16_fit(text, MAX_ALT_TEXT - 1)] + "…"
    return text


def flex_message(
    cards: tuple[Card, ...], *, link: Link, on_media: Callable[[str], None], sender: Any
) -> Any:
    """One Flex Message for the cards: a bubble, or a carousel of bubbles."""
    bubbles = [_bubble(card, link, on_media) for card in cards]
    contents = bubbles[0] if len(bubbles) == 1 else FlexCarousel(contents=bubbles)
    return FlexMessage(alt_text=alt_text(cards), contents=contents, sender=sender)
