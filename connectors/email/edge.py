"""The email channel's edge: what is decided about a mail before the SMTP 250 or the IMAP flag.

:meth:`MailEdge.accept` is where the SMTP listener and the IMAP poller hand over a mail. It
reads the header block only (:func:`~connectors.email.parsing.read_head`) and decides:

- which configured mailboxes (tenant and channel) the recipients name;
- whether the mail is refused before any parse (header block too large, too many headers,
  too deeply nested) or has no From address we could answer: *quarantined*, kept with its
  reason and the raw bytes in a bounded stream for an operator, never answered. The sender
  is an edge screen because the loop screens below need it anyway, and a mail nobody can be
  answered at must not occupy a turn;
- whether it is automatic or our own mail coming back (RFC 3834 headers, list headers, a
  null or daemon envelope sender, one of our Message-IDs or addresses): *suppressed*,
  recorded in a bounded audit stream and counted, never ingested;
- its dedupe id (the Message-ID, else a SHA-256 of the raw bytes) and its conversation: the
  root of the thread its In-Reply-To/References point at, found in the store where we have
  seen the thread before (``thread:{tenant}:{message_id}`` records), else the first
  reference, else the mail's own id. The mail's own Message-ID is recorded for the next
  reply in the thread, so the conversation key is fixed here, before the append.

Then it appends the raw RFC 5322 bytes in one envelope per mailbox
(:func:`gateway.envelope.encode_raw_event`) and returns ``ingested`` or ``duplicate``. The
MIME walk, text, attachments and header cleaning happen in the worker
(:mod:`connectors.email.parse`). One exception keeps the quarantine outcome exact: a mail
whose boundary lines could exceed the part or attachment limits is walked here too
(:func:`~connectors.email.parsing.may_exceed_part_limits`), as before this split.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any, Literal

from connectors.base import ConnectorContext
from connectors.email.config import EmailChannelConfig
from connectors.email.dkim_sign import DkimSigner
from connectors.email.intake import InboundOutcome
from connectors.email.parsing import (
    HostileEmail,
    Limits,
    MailHead,
    envelope_reasons,
    may_exceed_part_limits,
    normalise_address,
    parse_email,
    read_head,
)
from gateway.envelope import encode_raw_event
from gateway.errors import IngestUnavailableError, StoreError
from gateway.models import Channel, EncodedInbound, conversation_key_of, utcnow
from gateway.observability import get_logger

__all__ = ["MailEdge", "Mailbox", "mail_event"]

log = get_logger(__name__)

_OWN_MESSAGE_ID = re.compile(r"^[0-9a-f]{32}\.flowbiz@(?P<domain>.+)$")
_IN_THREAD_PARSE_BYTES = 512 * 1024  # parse bigger messages in a thread: keep the loop free
_AUDIT_RETENTION = 1000
_QUARANTINE_RAW_BYTES = 1024 * 1024
_THREAD_LOOKUPS = 20


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One configured address: which tenant and channel it belongs to."""

    tenant: str
    channel: EmailChannelConfig
    address: str
    persona: str | None
    signer: DkimSigner | None  # one per channel, shared by its addresses


def mail_event(raw: bytes) -> str | dict[str, str]:
    """The envelope's ``event`` for a mail: its text when the bytes are UTF-8 (nearly all
    mail: 7-bit, or 8-bit UTF-8), else ``{"base64": ...}`` so no byte is lost."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii")}


def _screened_head(raw: bytes, limits: Limits) -> MailHead:
    if may_exceed_part_limits(raw, limits):
        parse_email(raw, limits=limits)  # raises HostileEmail for too many parts/attachments
    return read_head(raw, limits=limits)


class MailEdge:
    """The inbound half of the email connector: screens, threads, appends."""

    def __init__(self, context: ConnectorContext, mailboxes: dict[str, Mailbox]) -> None:
        self.context = context
        self._mailboxes = mailboxes
        self._domains = {a.rsplit("@", 1)[1] for a in mailboxes}

    def mailbox(self, address: str) -> Mailbox | None:
        """The configured mailbox for ``address``; ``name+tag@`` falls back to ``name@``."""
        address = normalise_address(address)
        found = self._mailboxes.get(address)
        if found is None and "+" in address:
            local, _, domain = address.partition("@")
            found = self._mailboxes.get(f"{local.split('+', 1)[0]}@{domain}")
        return found

    def event(self, event: str) -> None:
        self.context.metrics.channel_events.labels(Channel.EMAIL.value, event).inc()

    async def accept(
        self,
        raw: bytes,
        *,
        recipients: Sequence[str],
        mail_from: str | None,
        source: Literal["smtp", "imap"],
    ) -> InboundOutcome:
        """Screen and append one message for the configured ``recipients``.

        Raises IngestUnavailableError when the store cannot take it; the caller must then not
        acknowledge (SMTP 451, IMAP: leave unflagged) so that it is delivered again.
        """
        mailboxes: dict[tuple[str, str], Mailbox] = {}
        for recipient in recipients:
            found = self.mailbox(recipient)
            if found is not None:
                mailboxes.setdefault((found.tenant, found.channel.name), found)
        if not mailboxes:
            return InboundOutcome("suppressed", "no_configured_recipient")
        targets = list(mailboxes.values())
        limits = targets[0].channel.limits
        try:
            try:
                if len(raw) > _IN_THREAD_PARSE_BYTES:
                    head = await asyncio.to_thread(_screened_head, raw, limits)
                else:
                    head = _screened_head(raw, limits)
            except HostileEmail as exc:
                await self._quarantine(targets, raw, exc, source=source, mail_from=mail_from)
                return InboundOutcome("quarantined", exc.reason)
            reasons = self._loop_reasons(head, mail_from)
            if reasons:
                await self._suppress(targets, head, reasons, source=source)
                return InboundOutcome("suppressed", ",".join(reasons))
            event = mail_event(raw)
            envelopes = [
                await self._envelope(m, head, event, raw, source, mail_from) for m in targets
            ]
        except StoreError as exc:
            raise IngestUnavailableError("the store could not record the message") from exc
        flags = await self.context.ingest.submit(envelopes)
        return InboundOutcome("ingested" if any(flags) else "duplicate")

    def _loop_reasons(self, head: MailHead, mail_from: str | None) -> tuple[str, ...]:
        reasons = list(head.loop_reasons)
        reasons += [r for r in envelope_reasons(mail_from) if r not in reasons]
        own = _OWN_MESSAGE_ID.match(head.message_id or "")
        if own is not None and own.group("domain").lower() in self._domains:
            reasons.append("own_message")
        senders = {head.from_address, normalise_address(parseaddr(mail_from or "")[1])}
        if any(self.mailbox(s) is not None for s in senders if s):
            reasons.append("own_address")
        return tuple(reasons)

    async def _thread_root(self, tenant: str, head: MailHead) -> str:
        candidates = list(dict.fromkeys([*head.in_reply_to, *reversed(head.references)]))
        for message_id in candidates[:_THREAD_LOOKUPS]:
            root = await self.context.store.get_record(
                self.context.keyspace.email_thread(tenant, message_id)
            )
            if root is not None:
                return root.decode()
        if head.references:
            return head.references[0]
        return head.message_id or head.event_id

    async def remember_thread(
        self, tenant: str, message_id: str, root: str, channel: EmailChannelConfig
    ) -> None:
        await self.context.store.put_record(
            self.context.keyspace.email_thread(tenant, message_id),
            root.encode(),
            ttl=channel.thread_ttl_seconds,
        )

    async def _envelope(
        self,
        mailbox: Mailbox,
        head: MailHead,
        event: str | dict[str, str],
        raw: bytes,
        source: str,
        mail_from: str | None,
    ) -> EncodedInbound:
        root = await self._thread_root(mailbox.tenant, head)
        if head.message_id is not None:
            await self.remember_thread(mailbox.tenant, head.message_id, root, mailbox.channel)
        return encode_raw_event(
            event_id=head.event_id,
            tenant=mailbox.tenant,
            channel=Channel.EMAIL,
            source=mailbox.channel.name,
            conversation_key=conversation_key_of(mailbox.tenant, Channel.EMAIL.value, root, None),
            event=event,
            context={
                "source": source,
                "mail_from": mail_from,
                "to": mailbox.address,
                "thread_root": root,
                "size": len(raw),
                "head": head.to_json(),
            },
        )

    # -- the operator's streams ------------------------------------------------------------------
    async def _audit(self, stream: str, entry: dict[str, Any]) -> None:
        await self.context.store.append(stream, json.dumps(entry).encode(), maxlen=_AUDIT_RETENTION)

    async def _quarantine(
        self,
        targets: Sequence[Mailbox],
        raw: bytes,
        exc: HostileEmail,
        *,
        source: str,
        mail_from: str | None,
    ) -> None:
        self.event(f"quarantined_{exc.reason}")
        for mailbox in targets:
            await self._audit(
                self.context.keyspace.email_quarantine(mailbox.tenant),
                {
                    "at": utcnow().isoformat(),
                    "reason": exc.reason,
                    "detail": exc.detail,
                    "source": source,
                    "mail_from": mail_from,
                    "to": mailbox.address,
                    "size": len(raw),
                    # Kept so an operator can inspect or re-inject it (bounded in size).
                    "raw_truncated": len(raw) > _QUARANTINE_RAW_BYTES,
                    "raw": raw[:_QUARANTINE_RAW_BYTES]
                    .decode("utf-8", errors="surrogateescape")
                    .encode("utf-8", errors="backslashreplace")
                    .decode("utf-8"),
                },
            )
        log.warning("email.quarantined", reason=exc.reason, source=source, size=len(raw))

    async def quarantine_unfetched(
        self, tenant: str, address: str, *, size: int, reason: str, source: str
    ) -> None:
        """Quarantine a message left on the server unread (too large to fetch)."""
        self.event(f"quarantined_{reason}")
        await self._audit(
            self.context.keyspace.email_quarantine(tenant),
            {
                "at": utcnow().isoformat(),
                "reason": reason,
                "source": source,
                "to": address,
                "size": size,
                "raw": None,
            },
        )
        log.warning("email.quarantined", reason=reason, source=source, size=size)

    async def _suppress(
        self,
        targets: Sequence[Mailbox],
        head: MailHead,
        reasons: Sequence[str],
        *,
        source: str,
    ) -> None:
        for reason in reasons:
            self.event(f"suppressed_{reason}")
        for mailbox in targets:
            await self._audit(
                self.context.keyspace.email_suppressed(mailbox.tenant),
                {
                    "at": utcnow().isoformat(),
                    "reasons": list(reasons),
                    "source": source,
                    "message_id": head.message_id,
                    "from": head.from_address,
                    "to": mailbox.address,
                },
            )
        log.info("email.suppressed", reasons=",".join(reasons), source=source)

    async def quarantined(self, tenant: str, *, count: int = 100) -> list[dict[str, Any]]:
        """The tenant's quarantined messages, oldest first (operators and tests)."""
        entries = await self.context.store.range(
            self.context.keyspace.email_quarantine(tenant), count=count
        )
        return [json.loads(e.payload) for e in entries]

    async def suppressed(self, tenant: str, *, count: int = 100) -> list[dict[str, Any]]:
        """The tenant's suppressed (automatic or looping) messages, oldest first."""
        entries = await self.context.store.range(
            self.context.keyspace.email_suppressed(tenant), count=count
        )
        return [json.loads(e.payload) for e in entries]
