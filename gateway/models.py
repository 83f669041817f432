"""The normalised message model every connector speaks.

Inbound requests from any platform become :class:`InboundMessage`; agents' answers become
:class:`OutboundMessage`; what the platform says about a delivery becomes a
:class:`DeliveryReceipt`. All models are immutable and serialise to JSON for the store.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json

from gateway.parts import (
    Attachment,
    Button,
    Card,
    ContactCard,
    Location,
    Option,
    OptionList,
    numbered_choices,
    plain_text,
)

__all__ = [
    "Attachment",
    "Button",
    "Card",
    "Channel",
    "ContactCard",
    "ConversationKey",
    "DeliveryReceipt",
    "EmailReplyContext",
    "EncodedInbound",
    "EventKind",
    "HttpReplyContext",
    "InboundMessage",
    "LineReplyContext",
    "Location",
    "Option",
    "OptionList",
    "OutboundMessage",
    "Participant",
    "PersonaPresentation",
    "ReplyContext",
    "SlackReplyContext",
    "WhatsAppReplyContext",
    "conversation_key_of",
    "encode_inbound",
    "new_id",
    "stored_json",
    "trace_id_of",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def stored_json(model: BaseModel) -> bytes:
    """A model as kept per conversation (state, index entry, receipts): ``None`` fields left
    out, since each reads back as its default ``None`` (tests/gateway/test_models.py holds every
    stored model to that). Dict values keep their nulls. An idle conversation then costs less.
    """
    return model.model_dump_json(exclude_none=True).encode()


# The UUID variant nibble ("10xx") for each random hex digit: keeps two of its four bits.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


# Random hex for ids, drawn from os.urandom 256 ids at a time: a syscall per id is a
# noticeable share of an ingest request's CPU. Emptied in a forked child, so parent and
# child never hand out the same bytes.
_ENTROPY_IDS = 256
_entropy: list[str] = []
os.register_at_fork(after_in_child=_entropy.clear)


def _random_hex() -> str:
    """20 random hex digits (80 bits)."""
    while True:
        try:
            return _entropy.pop()
        except IndexError:
            block = os.urandom(10 * _ENTROPY_IDS).hex()
            _entropy.extend(block[i : i + 20] for i in range(0, len(block), 20))


def new_id() -> str:
    """A time-ordered unique id (UUIDv7 layout): sortable, so logs and stores read in order.

    Formatted from hex strings directly rather than through ``uuid.UUID`` (a fifth of the
    cost): ingest mints one or two per message.
    """
    ms = f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}"
    rand = _random_hex()  # 74 of its 80 bits are used, as in uuid7
    return f"{ms[:8]}-{ms[8:]}-7{rand[:3]}-{_VARIANT[rand[3]]}{rand[4:7]}-{rand[7:19]}"


def trace_id_of(message_id: str) -> str:
    """The trace id a message gets by default: its own id, as 32 hex digits."""
    return message_id.replace("-", "")


@lru_cache(maxsize=8192)
def conversation_key_of(tenant: str, channel: str, conversation_id: str, thread: str | None) -> str:
    """``ConversationKey(...).key`` without building the model (edges run this per event)."""
    parts = [tenant, channel, conversation_id]
    if thread is not None:
        parts.append(thread)
    return "/".join(quote(part, safe="") for part in parts)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Channel(StrEnum):
    """The ways a conversation reaches the gateway."""

    HTTP = "http"
    SLACK = "slack"
    LINE = "line"
    WHATSAPP = "whatsapp"
    EMAIL = "email"


class EventKind(StrEnum):
    """What happened; most events are plain messages."""

    MESSAGE = "message"
    COMMAND = "command"  # a slash command or similar explicit invocation
    ACTION = "action"  # a button press / postback carrying a button's value
    FOLLOW = "follow"  # the user added the bot (LINE follow, Slack app_home_opened…)
    UNFOLLOW = "unfollow"
    JOIN = "join"
    LEAVE = "leave"


class ConversationKey(_Frozen):
    """Identifies one conversation: tenant + channel + the platform's id (+ thread)."""

    tenant: str
    channel: Channel
    conversation_id: str
    thread: str | None = None

    @property
    def key(self) -> str:
        """A stable string form, safe to embed in store keys."""
        # Cached by value (not on the instance, which model_copy would carry over stale): a
        # message's key is read several times on the hot path, and quoting costs microseconds.
        return conversation_key_of(
            self.tenant, self.channel.value, self.conversation_id, self.thread
        )


class Participant(_Frozen):
    id: str
    display_name: str | None = None
    is_bot: bool = False
    # An email address the platform vouches for (a Slack profile's); never one the sender
    # merely wrote. What links identities into contacts (gateway/contacts).
    verified_email: str | None = None


class HttpReplyContext(_Frozen):
    kind: Literal["http"] = "http"


class SlackReplyContext(_Frozen):
    kind: Literal["slack"] = "slack"
    team_id: str
    channel_id: str
    enterprise_id: str | None = None
    message_ts: str | None = None
    thread_ts: str | None = None
    channel_type: str | None = None
    response_url: str | None = None
    command: str | None = None
    ephemeral_user: str | None = None
    # Set for slash commands and clicks on ephemeral messages: how the answer is shown.
    response_type: Literal["in_channel", "ephemeral"] | None = None


class LineReplyContext(_Frozen):
    kind: Literal["line"] = "line"
    destination: str
    reply_token: str | None = None
    source_type: Literal["user", "group", "room"] = "user"
    source_id: str
    user_id: str | None = None
    is_redelivery: bool = False


class WhatsAppReplyContext(_Frozen):
    kind: Literal["whatsapp"] = "whatsapp"
    from_address: str  # whatsapp:+15551234567 — the customer
    to_address: str  # whatsapp:+15557654321 — the tenant's sender
    messaging_service_sid: str | None = None
    wa_id: str | None = None
    profile_name: str | None = None  # the customer's WhatsApp profile name, for templates


class EmailReplyContext(_Frozen):
    kind: Literal["email"] = "email"
    message_id: str  # the inbound Message-ID without brackets ("" when it had none)
    subject: str = ""
    from_address: str
    from_name: str | None = None
    to_address: str  # our address that received it: the reply comes from there
    reply_to: str | None = None
    references: tuple[str, ...] = ()  # the inbound References, root first
    persona_hint: str | None = None  # the persona configured for to_address, if any


ReplyContext = Annotated[
    HttpReplyContext
    | SlackReplyContext
    | LineReplyContext
    | WhatsAppReplyContext
    | EmailReplyContext,
    Field(discriminator="kind"),
]


class InboundMessage(_Frozen):
    """One thing a person (or platform) said or did, normalised."""

    id: str = Field(default_factory=new_id)
    event_id: str  # the platform's id for this event; the dedupe key
    conversation: ConversationKey
    sender: Participant
    kind: EventKind = EventKind.MESSAGE
    received_at: datetime = Field(default_factory=utcnow)
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    reply_context: ReplyContext = Field(default_factory=HttpReplyContext)
    trace_id: str = Field(default_factory=lambda data: trace_id_of(data["id"]))
    raw: dict[str, Any] = Field(default_factory=dict)  # the platform payload, kept for audit


class EncodedInbound(NamedTuple):
    """An :class:`InboundMessage` already serialised for the inbox, with what ingest needs.

    The ingest path takes these as well as models: a connector on a hot path (the HTTP API
    channel) writes the message's JSON directly with :func:`encode_inbound` instead of
    building and validating the model from inputs it has just validated. The worker reads
    the payload back as an ``InboundMessage``, whichever way it was written. (A named tuple:
    built once per request, and a frozen dataclass's ``__init__`` costs several times more.)
    """

    id: str
    event_id: str
    tenant: str
    channel: Channel
    conversation_key: str  # ConversationKey.key
    trace_id: str
    payload: bytes  # exactly what InboundMessage.model_dump_json() writes

    @classmethod
    def of(cls, message: InboundMessage) -> EncodedInbound:
        conv = message.conversation
        return cls(
            id=message.id,
            event_id=message.event_id,
            tenant=conv.tenant,
            channel=conv.channel,
            conversation_key=conv.key,
            trace_id=message.trace_id,
            payload=message.model_dump_json().encode(),
        )


_HTTP_REPLY_CONTEXT: dict[str, Any] = {"kind": "http"}


def encode_inbound(
    *,
    event_id: str,
    tenant: str,
    channel: Channel,
    conversation_id: str,
    thread: str | None,
    sender_id: str,
    sender_name: str | None,
    kind: EventKind,
    text: str,
    raw: dict[str, Any],
    reply_context: dict[str, Any] | None = None,
) -> EncodedInbound:
    """The inbox form of a message without attachments, written without the model.

    The caller vouches for the types (validated strings, a JSON-compatible ``raw``);
    ``reply_context`` is the context's ``model_dump(mode="json")`` (HTTP's by default). The
    bytes equal ``InboundMessage(...).model_dump_json()`` for the same values, keys in
    field order (tests/gateway/test_hot_path.py holds the two together).
    """
    message_id = new_id()
    trace_id = trace_id_of(message_id)
    payload = to_json(
        {
            "id": message_id,
            "event_id": event_id,
            "conversation": {
                "tenant": tenant,
                "channel": channel.value,
                "conversation_id": conversation_id,
                "thread": thread,
            },
            "sender": {
                "id": sender_id,
                "display_name": sender_name,
                "is_bot": False,
                "verified_email": None,
            },
            "kind": kind.value,
            "received_at": utcnow(),
            "text": text,
            "attachments": [],
            "reply_context": _HTTP_REPLY_CONTEXT if reply_context is None else reply_context,
            "trace_id": trace_id,
            "raw": raw,
        }
    )
    return EncodedInbound(
        id=message_id,
        event_id=event_id,
        tenant=tenant,
        channel=channel,
        conversation_key=conversation_key_of(tenant, channel.value, conversation_id, thread),
        trace_id=trace_id,
        payload=payload,
    )


class PersonaPresentation(_Frozen):
    """How the persona shows itself on a channel."""

    name: str
    display_name: str
    signature: str = ""
    icon_url: str | None = None


class OutboundMessage(_Frozen):
    """One reply (or proactive message) to deliver on a conversation's channel."""

    id: str = Field(default_factory=new_id)
    conversation: ConversationKey
    persona: PersonaPresentation
    text: str
    attachments: tuple[Attachment, ...] = ()
    buttons: tuple[Button, ...] = ()
    quick_replies: tuple[Button, ...] = ()  # offered until the next message, where shown
    cards: tuple[Card, ...] = ()  # one card, or a carousel of several
    options: OptionList | None = None
    idempotency_key: str
    in_reply_to: str | None = None  # InboundMessage.id
    inbound_received_at: datetime | None = None  # for end-to-end latency
    reply_context: ReplyContext = Field(default_factory=HttpReplyContext)
    created_at: datetime = Field(default_factory=utcnow)
    trace_id: str = Field(default_factory=lambda data: trace_id_of(data["id"]))
    # Put back by an operator's replay of its dead letter: a send whose outcome was unknown
    # goes out again, the operator having accepted that it may show twice.
    replayed: bool = False

    def plain_text(self, *, with_attachments: bool = False) -> str:
        """The message as text alone, choices numbered (:func:`gateway.parts.plain_text`)."""
        return plain_text(
            self.text,
            attachments=self.attachments,
            buttons=self.buttons,
            quick_replies=self.quick_replies,
            cards=self.cards,
            options=self.options,
            with_attachments=with_attachments,
        )

    def choices(self) -> list[tuple[str, str]]:
        """``(label, value)`` of every choice, numbered as :meth:`plain_text` numbers them."""
        return numbered_choices(
            buttons=self.buttons,
            quick_replies=self.quick_replies,
            cards=self.cards,
            options=self.options,
        )


class DeliveryReceipt(_Frozen):
    """What a platform said about one outbound message."""

    outbound_id: str
    idempotency_key: str
    channel: Channel
    status: Literal["sent", "queued", "delivered", "read", "failed", "undelivered"] = "sent"
    platform_message_id: str | None = None
    at: datetime = Field(default_factory=utcnow)
    detail: dict[str, Any] = Field(default_factory=dict)
