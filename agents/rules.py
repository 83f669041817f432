"""The rules agent: deterministic keyword / regex answers, the offline default.

Options::

    rules:
      - keywords: [price, pricing]        # any of them, whole words, case-insensitive
        regex: "(?i)refund"               # or a pattern; both given = both must match
        reply: "Hello $user_name, ..."    # $variables from the context
        buttons: [{label: Plans, value: plans}]
      - attachments: [image]              # a message carrying a file of these kinds
        reply: "Thanks for the photo!"
        cards: [{title: Photo received, text: "…", buttons: [{label: Track, value: track}]}]
        quick_replies: [{label: Talk to a person, value: agent}]
    fallback: "I did not catch that."

A rule matches when every condition it gives matches; its reply may carry any rich part
(gateway/parts.py): buttons, quick replies, cards, an option list.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents.base import AgentContext, AgentReply, ReplyPart, fill_template
from gateway.models import Button, Card, OptionList
from gateway.parts import AttachmentKind

__all__ = ["RulesAgent", "RulesOptions", "keyword_pattern"]


def keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    if not keywords:
        return None
    words = "|".join(re.escape(k) for k in keywords)
    return re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE)


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    keywords: tuple[str, ...] = ()
    regex: str | None = None
    attachments: tuple[AttachmentKind, ...] = ()
    reply: str
    buttons: tuple[Button, ...] = ()
    quick_replies: tuple[Button, ...] = ()
    cards: tuple[Card, ...] = ()
    options: OptionList | None = None


class RulesOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[_Rule, ...] = ()
    fallback: str = "I am not sure about that one yet."
    fallback_buttons: tuple[Button, ...] = Field(default=())


class RulesAgent:
    def __init__(self, options: RulesOptions) -> None:
        self.options = options
        self._compiled = [
            (keyword_pattern(rule.keywords), re.compile(rule.regex) if rule.regex else None, rule)
            for rule in options.rules
        ]

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RulesAgent:
        return cls(RulesOptions.model_validate(options))

    async def respond(self, context: AgentContext) -> AgentReply:
        text = context.message.text
        kinds = {a.kind for a in context.message.attachments}
        for keywords, regex, rule in self._compiled:
            if keywords is None and regex is None and not rule.attachments:
                continue
            if keywords is not None and not keywords.search(text):
                continue
            if regex is not None and not regex.search(text):
                continue
            if rule.attachments and kinds.isdisjoint(rule.attachments):
                continue
            part = ReplyPart(
                text=fill_template(rule.reply, context.variables),
                buttons=rule.buttons,
                quick_replies=rule.quick_replies,
                cards=rule.cards,
                options=rule.options,
            )
            return AgentReply(parts=(part,))
        return AgentReply.text(
            fill_template(self.options.fallback, context.variables),
            buttons=self.options.fallback_buttons,
        )
