"""The ``Agent`` protocol: what the worker asks of whoever answers for a persona.

An agent receives an :class:`AgentContext` (the message, recent history, the persona, the
channel's capabilities, the process's kept files, the template variables and the sender's
contact, if linked) and returns an :class:`AgentReply`. An agent that writes its answer
piece by piece may report the text so far through ``AgentContext.on_partial`` (a draft
the customer sees); the reply it returns is still the only answer committed. The worker
runs it under the persona's timeout and cancels it there, so an agent must be cancellation-safe.
"""

from __future__ import annotations

import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

from gateway.models import Attachment, Button, Card, InboundMessage, OptionList

if TYPE_CHECKING:
    from agents.persona import Persona
    from connectors.base import ChannelCapabilities
    from gateway.audit import AuditLog
    from gateway.media import MediaService

__all__ = [
    "Agent",
    "AgentContact",
    "AgentContext",
    "AgentReply",
    "HistoryTurn",
    "ReplyPart",
    "fill_template",
]


@dataclass(frozen=True, slots=True)
class HistoryTurn:
    role: Literal["user", "assistant"]
    text: str
    at: datetime
    persona: str | None = None


@dataclass(frozen=True, slots=True)
class AgentContact:
    """The person behind the message, as the tenant's contacts know them
    (gateway/contacts): their name and the channels they are linked on. Their ids and
    email addresses stay with the gateway."""

    id: str
    name: str | None
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AgentContext:
    message: InboundMessage
    persona: Persona
    history: tuple[HistoryTurn, ...]
    capabilities: ChannelCapabilities
    variables: Mapping[str, str] = field(default_factory=dict)
    audit: AuditLog | None = None  # where tools that act on the host record what they did
    # Kept files: signed links for bots over HTTP, bytes for models that see images. None
    # where the process keeps no files (unit tests of the bare pipeline).
    media: MediaService | None = None
    contact: AgentContact | None = None  # None: the sender is linked to no contact
    # Called with the answer's text so far while it is written (an agent that streams,
    # gateway/drafts.py); it returns at once and never raises. Others ignore it.
    on_partial: Callable[[str], Awaitable[None]] | None = None


@dataclass(frozen=True, slots=True)
class ReplyPart:
    """One message of a reply: its text and the rich parts that go with it
    (gateway/parts.py; each channel renders them or falls back to numbered text)."""

    text: str
    buttons: tuple[Button, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    quick_replies: tuple[Button, ...] = ()
    cards: tuple[Card, ...] = ()
    options: OptionList | None = None

    def is_empty(self) -> bool:
        return not (self.text or self.attachments or self.cards or self.options)


@dataclass(frozen=True, slots=True)
class AgentReply:
    parts: tuple[ReplyPart, ...] = ()
    switch_persona: str | None = None  # stick the conversation to another persona
    handoff: str | None = None  # hand the conversation to people; the reason (gateway/handoff.py)

    @classmethod
    def text(cls, text: str, *, buttons: tuple[Button, ...] = ()) -> AgentReply:
        return cls(parts=(ReplyPart(text=text, buttons=buttons),))


class Agent(Protocol):
    async def respond(self, context: AgentContext) -> AgentReply: ...


def fill_template(template: str, variables: Mapping[str, str]) -> str:
    """Replace ``$name`` placeholders; unknown names stay as written."""
    return string.Template(template).safe_substitute(variables)
