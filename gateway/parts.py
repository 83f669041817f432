"""The parts of a rich message: attachments, choices, cards and option lists.

A message's text is always there; these parts travel with it. Every connector renders each
part in its platform's richest native form and, where the platform or the moment cannot show
it, falls back to :func:`plain_text` — the one text form every channel shares, so a customer
on any channel sees the same numbered choices and the same card titles.

Guarantees:

- every part is immutable and serialises to JSON for the store (the outbox holds them);
- an attachment that came in (``InboundMessage.attachments``) names where the platform keeps
  it (``url`` or ``extra``, read only by that platform's connector with its own credentials)
  and, once the worker kept its bytes, the blob (``blob``) — or why it did not (``refused``);
- an attachment going out carries either a ``blob`` kept by the gateway (served to platforms
  that fetch by URL through a short-lived signed link, given to the others as bytes) or a
  public ``https`` ``url`` given by the agent, which the gateway passes on and never fetches;
- :func:`numbered_choices` is the order :func:`plain_text` numbers choices in, so a bare
  number answered on a text-only channel maps back to the value it stood for.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Attachment",
    "AttachmentKind",
    "Button",
    "Card",
    "ContactCard",
    "Location",
    "Option",
    "OptionList",
    "numbered_choices",
    "plain_text",
]

AttachmentKind = Literal[
    "image", "video", "audio", "file", "sticker", "location", "contact", "other"
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Location(_Frozen):
    """A place on the map."""

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    title: str | None = Field(default=None, max_length=100)
    address: str | None = Field(default=None, max_length=200)

    def as_text(self) -> str:
        label = ", ".join(p for p in (self.title, self.address) if p)
        coordinates = f"{self.latitude:.6f},{self.longitude:.6f}"
        return f"{label} ({coordinates})" if label else coordinates


class ContactCard(_Frozen):
    """A person's card: a name and the ways to reach them."""

    name: str = Field(min_length=1, max_length=200)
    phones: tuple[str, ...] = Field(default=(), max_length=10)
    emails: tuple[str, ...] = Field(default=(), max_length=10)

    def as_text(self) -> str:
        return " · ".join((self.name, *self.phones, *self.emails))


class Attachment(_Frozen):
    """A file, a sticker, a place or a contact card, inbound or outbound."""

    kind: AttachmentKind = "file"
    name: str | None = None
    mime_type: str | None = None
    size: int | None = None
    # Inbound: where the platform keeps it (fetched only by its connector, with the
    # platform's credentials). Outbound: a public https URL given by the agent.
    url: str | None = None
    blob: str | None = None  # the id in the gateway's blob store, once kept
    sha256: str | None = None  # of the kept bytes
    refused: str | None = None  # why the bytes were not kept: too_large, type_not_allowed…
    location: Location | None = None
    contact: ContactCard | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        """A one-line text form: what a channel that cannot show the part says instead."""
        if self.location is not None:
            return f"📍 {self.location.as_text()}"
        if self.contact is not None:
            return f"👤 {self.contact.as_text()}"
        label = self.name or self.kind
        return f"[{label}] {self.url}" if self.url else f"[{label}]"


class Button(_Frozen):
    """A choice (``value`` comes back as an ACTION event) or a link (``url``).

    Channels without buttons render it as a numbered text line (:func:`plain_text`).
    """

    label: str = Field(min_length=1, max_length=80)
    value: str = Field(default="", max_length=300)
    url: str | None = Field(default=None, max_length=1000, pattern=r"^https://")

    @model_validator(mode="after")
    def _value_or_url(self) -> Button:
        if not self.value and self.url is None:
            raise ValueError("a button needs a value or a url")
        return self


class Card(_Frozen):
    """A title, a text, an optional image and up to three buttons; several make a carousel."""

    title: str = Field(min_length=1, max_length=80)
    text: str = Field(default="", max_length=400)
    image: Attachment | None = None  # kind image: a blob or a public https url
    buttons: tuple[Button, ...] = Field(default=(), max_length=3)


class Option(_Frozen):
    label: str = Field(min_length=1, max_length=75)
    value: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=72)


class OptionList(_Frozen):
    """A list to pick one from (a select menu, a list picker): up to ten options."""

    button: str = Field(min_length=1, max_length=20)  # what opens the list
    options: tuple[Option, ...] = Field(min_length=1, max_length=10)


def numbered_choices(
    *,
    buttons: tuple[Button, ...] = (),
    quick_replies: tuple[Button, ...] = (),
    cards: tuple[Card, ...] = (),
    options: OptionList | None = None,
) -> list[tuple[str, str]]:
    """Every choice a message offers, as ``(label, value)`` in the order they are numbered:
    the cards' buttons, the buttons, the options, then the quick replies. Links are left out
    (they are shown as links, not numbered)."""
    found: list[tuple[str, str]] = []
    for card in cards:
        found += [(b.label, b.value) for b in card.buttons if b.url is None]
    found += [(b.label, b.value) for b in buttons if b.url is None]
    if options is not None:
        found += [(o.label, o.value) for o in options.options]
    found += [(b.label, b.value) for b in quick_replies if b.url is None]
    return found


def plain_text(
    text: str,
    *,
    attachments: tuple[Attachment, ...] = (),
    buttons: tuple[Button, ...] = (),
    quick_replies: tuple[Button, ...] = (),
    cards: tuple[Card, ...] = (),
    options: OptionList | None = None,
    with_attachments: bool = False,
) -> str:
    """The message as text alone: cards as titled paragraphs, choices as numbered lines (in
    :func:`numbered_choices` order, so the numbers match), links as ``label: url``.

    Attachments are described only ``with_attachments`` (channels that send them as media
    of their own leave them out)."""
    blocks: list[str] = [text] if text else []
    if with_attachments:
        blocks += [a.describe() for a in attachments]
    number = 0

    def choice_lines(choices: tuple[Button, ...]) -> list[str]:
        nonlocal number
        lines = []
        for button in choices:
            if button.url is not None:
                lines.append(f"{button.label}: {button.url}")
            else:
                number += 1
                lines.append(f"{number}. {button.label}")
        return lines

    for card in cards:
        lines = [f"*{card.title}*"]
        if card.text:
            lines.append(card.text)
        if card.image is not None and card.image.url:
            lines.append(card.image.url)
        lines += choice_lines(card.buttons)
        blocks.append("\n".join(lines))
    if buttons:
        blocks.append("\n".join(choice_lines(buttons)))
    if options is not None:
        lines = []
        for option in options.options:
            number += 1
            detail = f" — {option.description}" if option.description else ""
            lines.append(f"{number}. {option.label}{detail}")
        blocks.append("\n".join(lines))
    if quick_replies:
        blocks.append("\n".join(choice_lines(quick_replies)))
    return "\n\n".join(blocks)
