"""Numbered choices answered by number: the text fallback of buttons works both ways.

Where a channel (or the moment: WhatsApp outside its 24-hour window, an email client)
shows a message's choices as numbered lines (:func:`gateway.parts.plain_text`), a customer
answers "2". The worker keeps the values of the last reply that offered choices in the
conversation's facts (:func:`offered_fact`) and turns such an answer into the ACTION event
a button press would have been (:func:`answered_choice`).

Guarantees: only a message that is nothing but a number from 1 to the count offered, sent
as the very next message, becomes an ACTION; its value is one the gateway itself offered,
never text the sender chose. Any other message clears the offer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.models import EventKind, InboundMessage, OutboundMessage

__all__ = ["CHOICES_FACT", "answered_choice", "offered_fact"]

CHOICES_FACT = "choices"
_NUMBER = re.compile(r"^\s*(\d{1,2})\s*[.)]?\s*$")


def answered_choice(message: InboundMessage, facts: Mapping[str, Any]) -> InboundMessage:
    """``message`` as the ACTION of the choice it names by number, else unchanged."""
    offered = facts.get(CHOICES_FACT)
    if message.kind is not EventKind.MESSAGE or not isinstance(offered, list):
        return message
    match = _NUMBER.match(message.text)
    if match is None:
        return message
    number = int(match.group(1))
    if not 1 <= number <= len(offered) or not isinstance(offered[number - 1], str):
        return message
    return message.model_copy(update={"kind": EventKind.ACTION, "text": offered[number - 1]})


def offered_fact(facts: Mapping[str, Any], outbound: Sequence[OutboundMessage]) -> dict[str, Any]:
    """The facts with the choices of this turn's replies (the last reply offering any), or
    without an offer when they offer none."""
    kept = {k: v for k, v in facts.items() if k != CHOICES_FACT}
    for message in reversed(outbound):
        values = [value for _, value in message.choices()]
        if values:
            return {**kept, CHOICES_FACT: values}
    return kept
