"""A stored mail → :class:`~gateway.models.InboundMessage`, in the worker.

The edge (:mod:`connectors.email.edge`) screened the header block, fixed the dedupe id and
the thread's root, and stored the raw RFC 5322 bytes. Here the whole message is read
(:func:`~connectors.email.parsing.parse_email`: MIME walk, text without quotes and
signature, attachment metadata, every kept header value cleaned).

A click on a choice link (:mod:`connectors.email.actions`) is stored as an event of its own
(``context.source == "action_link"``): :func:`action_message` makes it the ACTION of the
value its token sealed, answered in the same thread, to the address the reply went to.

Guarantees: the message keeps the id, trace id, arrival time and dedupe id the edge gave the
event, and its conversation is the thread root the edge partitioned it by; a mail the parser
refuses (too many parts, unreadable MIME) raises :class:`~gateway.errors.EventParseError`
with the parser's reason, so the worker dead-letters the envelope whole (kept, never
answered, replayable once the parser can read it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from connectors.email.parsing import HostileEmail, Limits, MailHead, ParsedEmail, parse_email
from gateway.envelope import RawEvent
from gateway.errors import EventParseError
from gateway.models import (
    Channel,
    ConversationKey,
    EmailReplyContext,
    EventKind,
    InboundMessage,
    Participant,
)

__all__ = ["action_message", "is_action", "mail_bytes", "mail_message", "parsed_mail"]

_IN_THREAD_PARSE_BYTES = 512 * 1024  # parse bigger messages in a thread: keep the loop free


def mail_bytes(event: RawEvent) -> bytes:
    """The raw bytes the edge stored (see :func:`connectors.email.edge.mail_event`)."""
    stored = event.event
    if isinstance(stored, str):
        return stored.encode("utf-8")
    if isinstance(stored, dict) and isinstance(stored.get("base64"), str):
        try:
            return base64.b64decode(stored["base64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EventParseError(
                "the stored mail is not base64", reason="malformed_event"
            ) from exc
    raise EventParseError("a stored mail is text or base64", reason="malformed_event")


async def parsed_mail(raw: bytes, limits: Limits, head: MailHead | None = None) -> ParsedEmail:
    """``parse_email``, off the event loop for big mails; a refusal is an EventParseError."""
    try:
        if len(raw) > _IN_THREAD_PARSE_BYTES:
            return await asyncio.to_thread(parse_email, raw, limits=limits, head=head)
        return parse_email(raw, limits=limits, head=head)
    except HostileEmail as exc:
        detail = exc.detail or exc.reason
        raise EventParseError(f"the parser refused the mail ({detail})", reason=exc.reason) from exc


def _context_text(context: dict[str, Any], name: str) -> str:
    value = context.get(name)
    if not isinstance(value, str) or not value:
        raise EventParseError(f"the envelope has no {name}", reason="malformed_event")
    return value


def mail_message(
    event: RawEvent, parsed: ParsedEmail, *, address: str, persona: str | None
) -> InboundMessage:
    """The message of one stored mail, as the mailbox ``address`` received it."""
    context = event.context
    root = _context_text(context, "thread_root")
    mail_from = context.get("mail_from")
    text = parsed.text or parsed.subject
    return InboundMessage(
        id=event.id,
        trace_id=event.trace_id,
        received_at=event.received_at,
        event_id=event.event_id,
        conversation=ConversationKey(
            tenant=event.tenant, channel=Channel.EMAIL, conversation_id=root
        ),
        sender=Participant(id=parsed.from_address, display_name=parsed.from_name),
        text=text,
        attachments=parsed.attachments,
        reply_context=EmailReplyContext(
            message_id=parsed.message_id or "",
            subject=parsed.subject,
            from_address=parsed.from_address,
            from_name=parsed.from_name,
            to_address=address,
            reply_to=parsed.reply_to,
            references=parsed.references,
            persona_hint=persona,
        ),
        raw={
            "source": context.get("source"),
            "mail_from": mail_from if isinstance(mail_from, str) else None,
            "size": context.get("size"),
            "headers": parsed.headers,
            "defects": parsed.defects,
            "thread_root": root,
            "text_chars": parsed.full_text_chars,
            "header_refusals": list(parsed.header_refusals),
            "header_cleaned": list(parsed.header_cleaned),
        },
    )


def is_action(event: RawEvent) -> bool:
    return event.context.get("source") == "action_link"


def action_message(event: RawEvent, *, address: str, persona: str | None) -> InboundMessage:
    """The ACTION of a choice link's click (the value its token sealed)."""
    action = event.event.get("action") if isinstance(event.event, dict) else None
    reply = event.context.get("reply")
    if not isinstance(action, dict) or not isinstance(reply, dict):
        raise EventParseError("a stored click has an action and a reply", reason="malformed_event")
    root = _context_text(event.context, "thread_root")
    value, label = _context_text(action, "value"), _context_text(action, "label")
    parent, customer = _context_text(reply, "parent"), _context_text(reply, "customer")
    subject = reply.get("subject")
    subject = subject if isinstance(subject, str) else ""
    name = reply.get("name")
    references = tuple(dict.fromkeys(r for r in (root, parent) if r))
    return InboundMessage(
        id=event.id,
        trace_id=event.trace_id,
        received_at=event.received_at,
        event_id=event.event_id,
        conversation=ConversationKey(
            tenant=event.tenant, channel=Channel.EMAIL, conversation_id=root
        ),
        sender=Participant(id=customer, display_name=name if isinstance(name, str) else None),
        kind=EventKind.ACTION,
        text=value,
        reply_context=EmailReplyContext(
            message_id=parent,
            subject=subject,
            from_address=customer,
            from_name=name if isinstance(name, str) else None,
            to_address=address,
            references=references,
            persona_hint=persona,
        ),
        raw={"source": "action_link", "label": label, "thread_root": root},
    )
