"""Block Kit for a reply's rich parts: cards, places, contact cards, images, choices.

Guarantees: each part becomes the Block Kit form Slack shows natively (cards as sections
with their image as accessory and an actions block of their buttons, dividers between the
cards of a carousel; a place as a section with a map link; a contact card as a section; an
image given by a public ``https`` URL as an image block; buttons and quick replies as
actions blocks, link buttons as ``url`` buttons; an option list as a ``static_select``) —
or, when the native form would break one of Slack's limits (50 blocks in a message, 25
elements in an actions block, 150-character option values, 3,000-character texts),
:class:`TooRich` is raised and the caller sends :meth:`OutboundMessage.plain_text` instead,
so nothing is ever cut off or refused by Slack. Values come back unchanged in
``block_actions`` (a button's ``value``, a select's ``selected_option.value``).
Nothing here talks to Slack.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    DividerBlock,
    ImageBlock,
    ImageElement,
    MarkdownTextObject,
    Option,
    SectionBlock,
    StaticSelectElement,
)

from gateway.models import Attachment, Button, Card, OptionList, OutboundMessage

__all__ = [
    "BUTTON_ACTION_PREFIX",
    "MAX_BLOCKS",
    "SELECT_ACTION_ID",
    "SLACK_SECTION_MAX",
    "TooRich",
    "Upload",
    "attachment_blocks",
    "card_blocks",
    "choice_blocks",
    "escape",
    "link_line",
    "map_url",
    "text_lines",
    "uploads",
]

SLACK_SECTION_MAX = 3_000  # a section block's text; above it Slack answers invalid_blocks
MAX_BLOCKS = 50  # blocks in one message
MAX_ACTIONS = 25  # elements in one actions block
BUTTON_ACTION_PREFIX = "flowbiz_button_"
SELECT_ACTION_ID = "flowbiz_select"
_LABEL_MAX = 75  # a button's or an option's text
_OPTION_VALUE_MAX = 150
_URL_MAX = 3_000  # image_url, a button's url
_ALT_MAX = 2_000
_MAP = "https://www.openstreetmap.org/"


class TooRich(ValueError):
    """The native form of the message would break one of Slack's limits."""


@dataclass(frozen=True, slots=True)
class Upload:
    """A kept file to upload after the posts: an attachment, or a card's image."""

    attachment: Attachment
    title: str


def escape(text: str) -> str:
    """Slack's required escaping of the three control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _public(url: str | None) -> bool:
    return url is not None and url.startswith("https://") and len(url) <= _URL_MAX


def uploads(message: OutboundMessage) -> list[Upload]:
    """The kept files the reply carries, in order: its attachments, then its cards' images."""
    found = [
        Upload(a, a.name or a.kind)
        for a in message.attachments
        if a.blob is not None and a.location is None and a.contact is None
    ]
    found += [
        Upload(card.image, card.title)
        for card in message.cards
        if card.image is not None and card.image.blob is not None
    ]
    return found


def link_line(attachment: Attachment) -> str:
    url = attachment.url or ""
    name = attachment.name or url
    if any(c in url for c in "<>| "):
        return escape(url)
    return f"<{url}|{escape(name)}>"


def text_lines(message: OutboundMessage, *, native: bool) -> list[str]:
    """The attachments that travel as lines of the text (escaped): links to files given by
    URL, and whatever has no form of its own. ``native``: images, places and contact cards
    are blocks (else they are lines too). Kept files are uploaded, never lines."""
    lines = []
    for a in message.attachments:
        if a.blob is not None and a.location is None and a.contact is None:
            continue
        if native and (a.location is not None or a.contact is not None):
            continue
        if native and a.kind == "image" and _public(a.url):
            continue
        if a.url is not None and a.url.startswith("https://"):
            lines.append(link_line(a))
        else:
            lines.append(escape(a.describe()))
    return lines


def map_url(latitude: float, longitude: float) -> str:
    return f"{_MAP}?{urlencode({'mlat': f'{latitude:.6f}', 'mlon': f'{longitude:.6f}'})}"


def attachment_blocks(message: OutboundMessage) -> list[Block]:
    """Places, contact cards and images given by a public URL, as blocks."""
    blocks: list[Block] = []
    for a in message.attachments:
        if a.location is not None:
            place = a.location
            lines = [f"📍 *{escape(place.title)}*" if place.title else "📍"]
            if place.address:
                lines.append(escape(place.address))
            url = escape(map_url(place.latitude, place.longitude))  # Slack reads &amp; as &
            lines.append(f"<{url}|{place.latitude:.6f}, {place.longitude:.6f} (map)>")
            blocks.append(SectionBlock(text=MarkdownTextObject(text="\n".join(lines))))
        elif a.contact is not None:
            card = a.contact
            lines = [f"👤 *{escape(card.name)}*", *map(escape, card.phones + card.emails)]
            blocks.append(SectionBlock(text=MarkdownTextObject(text="\n".join(lines))))
        elif a.blob is None and a.kind == "image" and _public(a.url):
            assert a.url is not None  # _public checked it
            blocks.append(ImageBlock(image_url=a.url, alt_text=(a.name or "image")[:_ALT_MAX]))
    return blocks


def _buttons(buttons: tuple[Button, ...], prefix: str) -> list[ButtonElement]:
    if len(buttons) > MAX_ACTIONS:
        raise TooRich(f"{len(buttons)} buttons in one actions block")
    elements = []
    for n, button in enumerate(buttons):
        label = button.label[:_LABEL_MAX]  # the value, not the label, comes back
        if button.url is not None:
            if not _public(button.url):
                raise TooRich("a link button's url is too long")
            elements.append(ButtonElement(text=label, action_id=f"{prefix}{n}", url=button.url))
        else:
            elements.append(ButtonElement(text=label, action_id=f"{prefix}{n}", value=button.value))
    return elements


def card_blocks(cards: tuple[Card, ...]) -> list[Block]:
    """Each card a section (its image as accessory when public), its buttons below; a
    divider between cards."""
    blocks: list[Block] = []
    for i, card in enumerate(cards):
        if i:
            blocks.append(DividerBlock())
        text = f"*{escape(card.title)}*"
        if card.text:
            text += f"\n{escape(card.text)}"
        image = card.image
        accessory = None
        if image is not None and image.blob is None and _public(image.url):
            assert image.url is not None  # _public checked it
            accessory = ImageElement(
                image_url=image.url, alt_text=(image.name or card.title)[:_ALT_MAX]
            )
        blocks.append(
            SectionBlock(
                block_id=f"flowbiz_card_{i}",
                text=MarkdownTextObject(text=text),
                accessory=accessory,
            )
        )
        if card.buttons:
            blocks.append(
                ActionsBlock(
                    block_id=f"flowbiz_card_{i}_buttons",
                    elements=_buttons(card.buttons, f"{BUTTON_ACTION_PREFIX}card{i}_"),
                )
            )
    return blocks


def _select(options: OptionList) -> StaticSelectElement:
    if any(len(o.value) > _OPTION_VALUE_MAX for o in options.options):
        raise TooRich("an option's value is longer than Slack takes")
    return StaticSelectElement(
        placeholder=options.button,
        action_id=SELECT_ACTION_ID,
        options=[
            Option(text=o.label[:_LABEL_MAX], value=o.value, description=o.description)
            for o in options.options
        ],
    )


def choice_blocks(message: OutboundMessage) -> list[Block]:
    """The option list, the buttons and the quick replies, each an actions block."""
    blocks: list[Block] = []
    if message.options is not None:
        blocks.append(ActionsBlock(block_id="flowbiz_options", elements=[_select(message.options)]))
    if message.buttons:
        blocks.append(
            ActionsBlock(
                block_id="flowbiz_buttons",
                elements=_buttons(message.buttons, BUTTON_ACTION_PREFIX),
            )
        )
    if message.quick_replies:
        blocks.append(
            ActionsBlock(
                block_id="flowbiz_quick_replies",
                elements=_buttons(message.quick_replies, f"{BUTTON_ACTION_PREFIX}quick_"),
            )
        )
    return blocks
