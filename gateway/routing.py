"""Choosing the persona that answers a message — only among those that may answer there.

Order: an explicit switch written in the message (``/persona docs``), then the persona the
conversation is stuck to, then the persona the channel names for where the message arrived
(``reply_context.persona_hint``, e.g. an email address's persona), then the first matching
rule, then the tenant's default, then the global default.

Every candidate, whatever put it forward, must be reachable from where the message arrived
(gateway/reach.py): one that is not is skipped — logged as ``routing.persona_unreachable``
and counted in ``flowbiz_routing_unreachable_total{step}`` — and the next step decides. A
sticky choice made on an internal channel therefore never answers on a customer channel.
When nothing is reachable the gateway answers ``routing.unreachable_reply`` itself, under a
neutral name (fail closed, ``routing.no_reachable_persona``); ``flowbiz check`` reports
configurations where that can happen.

A switch to a persona that does not exist and one to a persona not reachable here get the
same answer, byte for byte (``routing.switch_unknown_reply``, listing what may be chosen
here), from whoever would have answered otherwise: nothing tells the two apart. The switch
command can be turned off per tenant and per channel (``persona_switch: false``); the text
then goes to the routed persona like any other.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import datetime

from agents.persona import Persona, PersonaRegistry
from agents.rules import keyword_pattern
from gateway.config import GatewayConfig, RoutingRule
from gateway.metrics import Metrics
from gateway.models import InboundMessage
from gateway.observability import get_logger
from gateway.reach import Point, point_of, reachable, reachable_names
from gateway.state import ConversationState

__all__ = ["NO_PERSONA", "Route", "Router"]

log = get_logger(__name__)

# The name the conversation records when no persona may answer; never a valid persona name.
NO_PERSONA = "-none"


@dataclass(frozen=True, slots=True)
class Route:
    persona: str
    # switch | switch-unknown | sticky | channel-hint | rule:N | tenant-default | default |
    # unreachable
    reason: str
    remaining_text: str  # the text with a switch command removed
    reply: str | None = None  # the gateway answers this itself; the agent is not asked
    presenter: Persona | None = None  # who that answer comes from when no persona may answer


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
    def __init__(
        self, *, config: GatewayConfig, personas: PersonaRegistry, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.personas = personas
        self.metrics = metrics
        routing = config.routing
        # Any word after the command is a switch attempt, so every such message is answered
        # the same way whether or not that name exists.
        self._switch = re.compile(rf"^\s*{re.escape(routing.switch_command)}(?=\s|$)\s*(\S*)\s*")
        self._rules = [
            _CompiledRule(
                rule=r,
                keywords=keyword_pattern(r.keywords),
                regex=re.compile(r.regex) if r.regex else None,
            )
            for r in routing.rules
        ]

    def reachable(self, name: str, message: InboundMessage) -> bool:
        """Whether persona ``name`` exists and may answer where ``message`` arrived."""
        persona = self.personas.get(name)
        return persona is not None and reachable(persona, point_of(self.config, message))

    def route(self, message: InboundMessage, state: ConversationState, now: datetime) -> Route:
        point = point_of(self.config, message)
        text = message.text
        switch = self._switch.match(text) if point.switch else None
        if switch is None:
            return self._route(message, state, now, point, text)
        name = switch.group(1).rstrip(",.;:!?").lower()
        rest = text[switch.end() :]
        if self._may_answer(name, point, "switch"):
            return Route(name, "switch", rest)
        fallback = self._route(message, state, now, point, rest)
        offered = ", ".join(reachable_names(self.personas, point)) or "none"
        reply = string.Template(self.config.routing.switch_unknown_reply).safe_substitute(
            available=offered
        )
        return Route(fallback.persona, "switch-unknown", rest, reply, fallback.presenter)

    def _route(
        self,
        message: InboundMessage,
        state: ConversationState,
        now: datetime,
        point: Point,
        text: str,
    ) -> Route:
        sticky = state.sticky_persona(now)
        if sticky is not None and self._may_answer(sticky, point, "sticky"):
            return Route(sticky, "sticky", text)
        # A channel may name the persona for where the message arrived (an email address
        # configured with a persona); it outranks the keyword rules, not an explicit switch.
        hint = getattr(message.reply_context, "persona_hint", None)
        if isinstance(hint, str) and self._may_answer(hint, point, "channel-hint"):
            return Route(hint, "channel-hint", text)
        for n, compiled in enumerate(self._rules):
            if compiled.matches(message) and self._may_answer(compiled.rule.persona, point, "rule"):
                return Route(compiled.rule.persona, f"rule:{n}", text)
        tenant = self.config.tenant(message.conversation.tenant)
        default = tenant.default_persona if tenant is not None else None
        if default is not None and self._may_answer(default, point, "tenant-default"):
            return Route(default, "tenant-default", text)
        if self._may_answer(self.config.routing.default_persona, point, "default"):
            return Route(self.config.routing.default_persona, "default", text)
        log.warning("routing.no_reachable_persona", internal=point.internal)
        presenter = Persona.model_construct(
            name=NO_PERSONA,
            display_name=(tenant.name if tenant is not None else "") or message.conversation.tenant,
        )
        reply = self.config.routing.unreachable_reply or ""
        return Route(NO_PERSONA, "unreachable", text, reply, presenter)

    def _may_answer(self, name: str, point: Point, step: str) -> bool:
        """``name`` is a persona reachable from ``point``; an unreachable one is recorded."""
        persona = self.personas.get(name)
        if persona is None:
            return False
        if reachable(persona, point):
            return True
        # A customer's own attempt (a switch, a choice stuck from elsewhere) is routine; a rule
        # or default pointing where it may not answer is a configuration to look at.
        level = log.info if step in ("switch", "sticky") else log.warning
        level("routing.persona_unreachable", persona=name, step=step, internal=point.internal)
        if self.metrics is not None:
            self.metrics.routing_unreachable.labels(step).inc()
        return False
