"""The HTML part of a reply: the text, the cards, the choices as links, the files.

Rendered with Jinja2 from ``templates/reply.html`` with autoescaping on, so nothing an
agent or a customer wrote can become markup. Guarantees: the HTML offers the same choices
as the text part, numbered alike (:meth:`OutboundMessage.choices` order: cards' buttons,
buttons, options, quick replies; links are not numbered); a choice is a link only when
``choice_link`` gives one (a signed action link), else it is shown with its number; styles
are inline; the only remote resources are a card image the agent gave as an ``https`` URL
and the links themselves — a kept image is a ``cid:`` part of the same mail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from gateway.models import OutboundMessage
from gateway.parts import Button

__all__ = ["ChoiceLink", "FileLine", "render_html"]

ChoiceLink = Callable[[str, str], str | None]  # (value, label) → the link that chooses it


@dataclass(frozen=True, slots=True)
class FileLine:
    """A file the HTML names: a link to it, or its text form when it could not be sent."""

    label: str
    href: str | None = None


@dataclass(frozen=True, slots=True)
class _Choice:
    label: str
    href: str | None
    number: int | None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class _Card:
    title: str
    text: str
    image: str | None
    choices: tuple[_Choice, ...]


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(
    message: OutboundMessage,
    *,
    signature: str,
    choice_link: ChoiceLink | None = None,
    card_images: Mapping[int, str] | None = None,
    files: Sequence[FileLine] = (),
) -> str:
    """``message`` as the HTML alternative. ``card_images``: the ``src`` of each card's
    image by the card's index (``cid:…`` or the agent's https URL); others are left out."""
    number = 0
    linked = False

    def choices(buttons: Sequence[Button]) -> tuple[_Choice, ...]:
        nonlocal number, linked
        found = []
        for button in buttons:
            if button.url is not None:
                found.append(_Choice(button.label, button.url, None))
                continue
            number += 1
            href = None if choice_link is None else choice_link(button.value, button.label)
            linked = linked or href is not None
            found.append(_Choice(button.label, href, number))
        return tuple(found)

    images = card_images or {}
    cards = [
        _Card(card.title, card.text, images.get(index), choices(card.buttons))
        for index, card in enumerate(message.cards)
    ]
    buttons = choices(message.buttons)
    options: list[_Choice] = []
    if message.options is not None:
        for option in message.options.options:
            number += 1
            href = None if choice_link is None else choice_link(option.value, option.label)
            linked = linked or href is not None
            options.append(_Choice(option.label, href, number, option.description))
    quick_replies = choices(message.quick_replies)
    paragraphs = [
        p.split("\n") for p in message.text.strip().replace("\r\n", "\n").split("\n\n") if p.strip()
    ]
    lines = signature.strip().split("\n") if signature.strip() else []
    return _env.get_template("reply.html").render(
        paragraphs=paragraphs,
        files=list(files),
        cards=cards,
        buttons=buttons,
        options=options,
        quick_replies=quick_replies,
        numbered=number > 0,
        linked=linked,
        signature=lines,
    )
