"""Choosing the persona that answers a message.

Order: an explicit switch written in the message (``/persona docs``), then the persona the
conversation is stuck to, then the persona the channel names for where the message arrived
(``reply_context.persona_hint``, e.g. an email address's persona), then the first matching
rule, then the tenant's default, then the global default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from agents.persona import PersonaRegistry
from agents.rules import keyword_pattern
from gateway.config import GatewayConfig, RoutingRule
from gateway.models import InboundMessage
from gateway.state import ConversationState

__all__ = ["Route", "Router"]


@dataclass(frozen=True, slots=True)
class Route:
    persona: str
    reason: str  # switch | sticky | channel-hint | rule:N | tenant-default | default
    remaining_text: str  # the text with a switch command removed


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: RoutingRule
    keywords: re.Pattern[str] | None
    regex: re.Pattern[str] | None

    def matches(self, message: InboundMessage) -> bool:
        conv = message.conversation
        if self.rule.tenant is not None and self.rule.tenant != conv.tenant:
            return False
        if self.rule.channel is not None and self.rule.channel != conv.channel.value:
            return False
        if self.keywords is not None and not self.keywords.search(message.text):
            return False
        return self.regex is None or bool(self.regex.search(message.text))


class Router:
    def __init__(self, *, config: GatewayConfig, personas: PersonaRegistry) -> None:
        self.config = config
        self.personas = personas
        routing = config.routing
        self._switch = re.compile(rf"^\s*{re.escape(routing.switch_command)}\s+([a-z0-9_-]+)\b\s*")
        self._rules = [
            _CompiledRule(
                rule=r,
                keywords=keyword_pattern(r.keywords),
                regex=re.compile(r.regex) if r.regex else None,
            )
            for r in routing.rules
        ]

    def route(self, message: InboundMessage, state: ConversationState, now: datetime) -> Route:
        text = message.text
        switch = self._switch.match(text)
        if switch is not None and switch.group(1) in self.personas:
            return Route(switch.group(1), "switch", text[switch.end() :])
        sticky = state.sticky_persona(now)
        if sticky is not None and sticky in self.personas:
            return Route(sticky, "sticky", text)
        # A channel may name the persona for where the message arrived (an email address
        # configured with a persona); it outranks the keyword rules, not an explicit switch.
        hint = getattr(message.reply_context, "persona_hint", None)
        if isinstance(hint, str) and hint in self.personas:
            return Route(hint, "channel-hint", text)
        for n, compiled in enumerate(self._rules):
            if compiled.matches(message) and compiled.rule.persona in self.personas:
                return Route(compiled.rule.persona, f"rule:{n}", text)
        tenant = self.config.tenant(message.conversation.tenant)
        default = tenant.default_persona if tenant is not None else None
        if default is not None and default in self.personas:
            return Route(default, "tenant-default", text)
        return Route(self.config.routing.default_persona, "default", text)
