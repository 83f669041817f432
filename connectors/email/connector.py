"""The email channel: an SMTP listener and IMAP mailboxes in, DKIM-signed SMTP replies out.

Inbound, both ways end in :meth:`EmailConnector.accept`, which parses the raw message,
applies loop protection, finds the thread's root and makes the message durable through
``context.ingest.submit`` *before* the SMTP listener answers 250 or the IMAP poller flags
the message. Verification is the SMTP recipient check (only configured addresses are
accepted; the rest get 550 at RCPT) and, for IMAP, the mailbox login.

Outcomes of one inbound message:

- ``ingested`` / ``duplicate`` (same Message-ID seen before: the core's dedupe);
- ``suppressed``: automatic mail (RFC 3834 and friends) or our own mail coming back. It
  is recorded in a bounded audit stream and counted, never ingested, so no agent answers it;
- ``quarantined``: hostile or unreadable MIME, kept with its reason (and the raw bytes) in
  a bounded quarantine stream for an operator.

Outbound: one reply per outbound message, threaded (In-Reply-To/References), marked
``Auto-Submitted: auto-replied``, limited per thread by a token bucket, DKIM-signed, sent
through the configured smarthost with aiosmtplib. SMTP 4xx is transient, 5xx permanent.
No header of a reply comes unchecked from the customer's mail (see ``headers.py``): an
address we cannot write is a dead letter (``bad_address``), never a sent message.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any, ClassVar, Literal

import aiosmtplib
from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import Envelope, Session

from connectors.base import ChannelCapabilities, ConnectorContext, Pacing, Route
from connectors.email.compose import Reply, build_reply
from connectors.email.config import (
    EmailAddressConfig,
    EmailChannelConfig,
    ImapConfig,
    OutboundSmtpConfig,
    ReplyRateConfig,
    SmtpListenerConfig,
)
from connectors.email.dkim_sign import DkimConfig, DkimSigner
from connectors.email.headers import AddressRefused, HeaderBlockRefused, checked_address
from connectors.email.intake import InboundOutcome
from connectors.email.parsing import (
    HostileEmail,
    ParsedEmail,
    envelope_reasons,
    normalise_address,
    parse_email,
)
from connectors.send_policy import DeliveryFailure, map_delivery_errors
from connectors.send_policy.smtp import read_smtp
from gateway.config import ChannelConfig, TenantConfig
from gateway.envelope import RawEvent
from gateway.errors import (
    EventParseError,
    IngestUnavailableError,
    PermanentDeliveryError,
    StoreError,
)
from gateway.models import (
    Channel,
    ConversationKey,
    DeliveryReceipt,
    EmailReplyContext,
    InboundMessage,
    OutboundMessage,
    Participant,
    utcnow,
)
from gateway.observability import get_logger

__all__ = [
    "DkimConfig",
    "EmailAddressConfig",
    "EmailChannelConfig",
    "EmailConnector",
    "ImapConfig",
    "InboundOutcome",
    "OutboundSmtpConfig",
    "ReplyRateConfig",
    "SmtpListenerConfig",
    "render",
]

log = get_logger(__name__)

_OWN_MESSAGE_ID = re.compile(r"^[0-9a-f]{32}\.flowbiz@(?P<domain>.+)$")
_IN_THREAD_PARSE_BYTES = 512 * 1024  # parse bigger messages in a thread: keep the loop free
_AUDIT_RETENTION = 1000
_QUARANTINE_RAW_BYTES = 1024 * 1024
_MAX_RECIPIENTS = 100


# -- inbound ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Mailbox:
    """One configured address: which tenant and channel it belongs to."""

    tenant: str
    channel: EmailChannelConfig
    address: str
    persona: str | None
    signer: DkimSigner | None  # one per channel, shared by its addresses


class EmailConnector:
    channel: ClassVar[Channel] = Channel.EMAIL
    capabilities: ClassVar[ChannelCapabilities] = ChannelCapabilities(
        buttons=False, threads=True, max_text_length=100_000, markdown=False, attachments=False
    )
    config_model: ClassVar[type[ChannelConfig]] = EmailChannelConfig

    def __init__(
        self,
        *,
        context: ConnectorContext,
        channels: Sequence[tuple[TenantConfig, ChannelConfig]],
    ) -> None:
        self.context = context
        self._mailboxes: dict[str, Mailbox] = {}
        self._channels: list[tuple[str, EmailChannelConfig]] = []
        for tenant, channel in channels:
            if not isinstance(channel, EmailChannelConfig):
                continue
            self._channels.append((tenant.id, channel))
            signer = channel.dkim.signer() if channel.dkim is not None else None
            for entry in channel.addresses:
                self._mailboxes.setdefault(
                    entry.address,
                    Mailbox(tenant.id, channel, entry.address, entry.persona, signer),
                )
        self._domains = {a.rsplit("@", 1)[1] for a in self._mailboxes}
        self._servers: list[asyncio.Server] = []
        self._bound: dict[tuple[str, int], tuple[str, int]] = {}
        self._pollers: list[Any] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def routes(self) -> Sequence[Route]:
        return []

    async def start(self) -> None:
        from connectors.email.imap import ImapPoller  # the IMAP client is only needed with IMAP

        endpoints: dict[tuple[str, int], list[SmtpListenerConfig]] = {}
        for _, channel in self._channels:
            if channel.listener is not None:
                key = (channel.listener.host, channel.listener.port)
                endpoints.setdefault(key, []).append(channel.listener)
        loop = asyncio.get_running_loop()
        for (host, port), listeners in endpoints.items():
            factory = self._smtp_factory(listeners, loop)
            server = await loop.create_server(factory, host, port)
            bound = server.sockets[0].getsockname()
            self._servers.append(server)
            self._bound[(host, port)] = (bound[0], bound[1])
            self.context.metrics.listener_up.labels(f"email-smtp:{host}:{port}").set(1)
            log.info("email.smtp_listening", host=bound[0], port=bound[1])
        for tenant, channel in self._channels:
            if channel.imap is not None:
                poller = ImapPoller(connector=self, tenant=tenant, channel=channel)
                poller.start()
                self._pollers.append(poller)

    def _smtp_factory(
        self, listeners: Sequence[SmtpListenerConfig], loop: asyncio.AbstractEventLoop
    ) -> Callable[[], SMTPServerProtocol]:
        """One aiosmtpd protocol per connection, in this loop (no Controller thread)."""
        handler = _SmtpHandler(self)
        size = max(item.max_message_bytes for item in listeners)
        first = listeners[0]
        tls = _server_tls(listeners)
        require_starttls = tls is not None and any(i.require_starttls for i in listeners)

        def factory() -> SMTPServerProtocol:
            return SMTPServerProtocol(
                handler,
                data_size_limit=size,
                enable_SMTPUTF8=True,
                hostname=first.hostname,
                ident="FlowBiz Gateway ESMTP",
                tls_context=tls,
                require_starttls=require_starttls,
                timeout=first.timeout_seconds,
                loop=loop,
            )

        return factory

    async def stop(self) -> None:
        for poller in self._pollers:
            await poller.stop()
        self._pollers.clear()
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        for host, port in self._bound:
            self.context.metrics.listener_up.labels(f"email-smtp:{host}:{port}").set(0)
        self._servers.clear()

    def listener_address(self, tenant: str) -> tuple[str, int]:
        """Where the SMTP listener serving ``tenant`` is bound (useful with port 0)."""
        for owner, channel in self._channels:
            if owner == tenant and channel.listener is not None:
                return self._bound[(channel.listener.host, channel.listener.port)]
        raise KeyError(f"no SMTP listener for tenant {tenant!r}")

    async def parse(self, event: RawEvent) -> InboundMessage | None:
        raise EventParseError("this connector stores parsed messages", reason="not_raw")

    def pacing(self, message: OutboundMessage) -> Pacing | None:
        mailbox = self._mailbox_for_reply(message)
        if mailbox is None or mailbox.channel.outbound.max_per_second is None:
            return None
        host, port = mailbox.channel.smarthost()
        rate = mailbox.channel.outbound.max_per_second
        return Pacing(key=f"email:smarthost:{host}:{port}", rate=rate, burst=max(1.0, rate))

    # -- inbound ---------------------------------------------------------------------------------
    def mailbox(self, address: str) -> Mailbox | None:
        """The configured mailbox for ``address``; ``name+tag@`` falls back to ``name@``."""
        address = normalise_address(address)
        found = self._mailboxes.get(address)
        if found is None and "+" in address:
            local, _, domain = address.partition("@")
            found = self._mailboxes.get(f"{local.split('+', 1)[0]}@{domain}")
        return found

    def _event(self, event: str) -> None:
        self.context.metrics.channel_events.labels(Channel.EMAIL.value, event).inc()

    async def accept(
        self,
        raw: bytes,
        *,
        recipients: Sequence[str],
        mail_from: str | None,
        source: Literal["smtp", "imap"],
    ) -> InboundOutcome:
        """Parse, screen and ingest one message for the configured ``recipients``.

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
                    parsed = await asyncio.to_thread(parse_email, raw, limits=limits)
                else:
                    parsed = parse_email(raw, limits=limits)
            except HostileEmail as exc:
                await self._quarantine(targets, raw, exc, source=source, mail_from=mail_from)
                return InboundOutcome("quarantined", exc.reason)
            for name in parsed.header_refusals:
                self._event(f"header_refused_{name}")
            for name in parsed.header_cleaned:
                self._event(f"header_cleaned_{name}")
            reasons = self._loop_reasons(parsed, mail_from)
            if reasons:
                await self._suppress(targets, parsed, reasons, source=source)
                return InboundOutcome("suppressed", ",".join(reasons))
            messages = [
                await self._inbound_message(m, parsed, raw, source, mail_from) for m in targets
            ]
        except StoreError as exc:
            raise IngestUnavailableError("the store could not record the message") from exc
        flags = await self.context.ingest.submit(messages)
        return InboundOutcome("ingested" if any(flags) else "duplicate")

    def _loop_reasons(self, parsed: ParsedEmail, mail_from: str | None) -> tuple[str, ...]:
        reasons = list(parsed.loop_reasons)
        reasons += [r for r in envelope_reasons(mail_from) if r not in reasons]
        own = _OWN_MESSAGE_ID.match(parsed.message_id or "")
        if own is not None and own.group("domain").lower() in self._domains:
            reasons.append("own_message")
        senders = {parsed.from_address, normalise_address(parseaddr(mail_from or "")[1])}
        if any(self.mailbox(s) is not None for s in senders if s):
            reasons.append("own_address")
        return tuple(reasons)

    async def _thread_root(self, tenant: str, parsed: ParsedEmail) -> str:
        candidates = list(dict.fromkeys([*parsed.in_reply_to, *reversed(parsed.references)]))
        for message_id in candidates[:20]:
            root = await self.context.store.get_record(
                self.context.keyspace.email_thread(tenant, message_id)
            )
            if root is not None:
                return root.decode()
        if parsed.references:
            return parsed.references[0]
        return parsed.message_id or parsed.event_id

    async def _remember_thread(
        self, tenant: str, message_id: str, root: str, channel: EmailChannelConfig
    ) -> None:
        await self.context.store.put_record(
            self.context.keyspace.email_thread(tenant, message_id),
            root.encode(),
            ttl=channel.thread_ttl_seconds,
        )

    async def _inbound_message(
        self,
        mailbox: Mailbox,
        parsed: ParsedEmail,
        raw: bytes,
        source: str,
        mail_from: str | None,
    ) -> InboundMessage:
        root = await self._thread_root(mailbox.tenant, parsed)
        if parsed.message_id is not None:
            await self._remember_thread(mailbox.tenant, parsed.message_id, root, mailbox.channel)
        text = parsed.text or parsed.subject
        return InboundMessage(
            event_id=parsed.event_id,
            conversation=ConversationKey(
                tenant=mailbox.tenant, channel=Channel.EMAIL, conversation_id=root
            ),
            sender=Participant(id=parsed.from_address, display_name=parsed.from_name),
            text=text,
            attachments=parsed.attachments,
            reply_context=EmailReplyContext(
                message_id=parsed.message_id or "",
                subject=parsed.subject,
                from_address=parsed.from_address,
                from_name=parsed.from_name,
                to_address=mailbox.address,
                reply_to=parsed.reply_to,
                references=parsed.references,
                persona_hint=mailbox.persona,
            ),
            raw={
                "source": source,
                "mail_from": mail_from,
                "size": len(raw),
                "headers": parsed.headers,
                "defects": parsed.defects,
                "thread_root": root,
                "text_chars": parsed.full_text_chars,
                "header_refusals": list(parsed.header_refusals),
                "header_cleaned": list(parsed.header_cleaned),
            },
        )

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
        self._event(f"quarantined_{exc.reason}")
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

    async def _quarantine_unfetched(
        self, tenant: str, address: str, *, size: int, reason: str, source: str
    ) -> None:
        """Quarantine a message left on the server unread (too large to fetch)."""
        self._event(f"quarantined_{reason}")
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
        parsed: ParsedEmail,
        reasons: Sequence[str],
        *,
        source: str,
    ) -> None:
        for reason in reasons:
            self._event(f"suppressed_{reason}")
        for mailbox in targets:
            await self._audit(
                self.context.keyspace.email_suppressed(mailbox.tenant),
                {
                    "at": utcnow().isoformat(),
                    "reasons": list(reasons),
                    "source": source,
                    "message_id": parsed.message_id,
                    "from": parsed.from_address,
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

    # -- outbound --------------------------------------------------------------------------------
    def _mailbox_for_reply(self, message: OutboundMessage) -> Mailbox | None:
        context = message.reply_context
        if not isinstance(context, EmailReplyContext):
            return None
        mailbox = self.mailbox(context.to_address)
        if mailbox is None or mailbox.tenant != message.conversation.tenant:
            return None
        return mailbox

    async def send(self, message: OutboundMessage) -> DeliveryReceipt:
        context = message.reply_context
        if not isinstance(context, EmailReplyContext):
            raise PermanentDeliveryError(
                "an email reply needs the inbound message's email context",
                code=DeliveryFailure.BAD_REPLY_CONTEXT,
            )
        mailbox = self._mailbox_for_reply(message)
        if mailbox is None:
            raise PermanentDeliveryError(
                f"no email channel of tenant {message.conversation.tenant!r} owns the address",
                code=DeliveryFailure.NO_CHANNEL,
            )
        channel = mailbox.channel
        recipient = _usable_recipient(context)
        if recipient is None:
            # Only a context stored before the inbound checks existed can get here.
            self._event("reply_refused_bad_address")
            raise PermanentDeliveryError(
                "the customer's address is not one we may write; not sent",
                code=DeliveryFailure.BAD_ADDRESS,
            )
        if self.mailbox(recipient) is not None:
            raise PermanentDeliveryError(
                "refusing to mail our own address", code=DeliveryFailure.LOOP
            )
        await self._check_reply_rate(message, channel)
        try:
            reply = render(message, context, from_address=mailbox.address, recipient=recipient)
        except AddressRefused as exc:
            self._event("reply_refused_bad_address")
            raise PermanentDeliveryError(
                f"cannot build the reply: {exc}", code=DeliveryFailure.BAD_ADDRESS
            ) from exc
        except HeaderBlockRefused as exc:
            self._event("reply_refused_header_block")
            log.error("email.reply_header_block_refused", problem=str(exc))
            raise PermanentDeliveryError(
                f"cannot build the reply: {exc}", code=DeliveryFailure.HEADER_BLOCK
            ) from exc
        data = reply.data if mailbox.signer is None else mailbox.signer.sign(reply.data)
        answer = await self._deliver(channel, reply.sender, reply.recipient, data)
        await self._remember_thread(
            mailbox.tenant, reply.message_id, message.conversation.conversation_id, channel
        )
        self._event("reply_sent")
        return DeliveryReceipt(
            outbound_id=message.id,
            idempotency_key=message.idempotency_key,
            channel=Channel.EMAIL,
            status="sent",
            platform_message_id=reply.message_id,
            detail={"smtp": answer, "dkim": mailbox.signer is not None},
        )

    async def _check_reply_rate(
        self, message: OutboundMessage, channel: EmailChannelConfig
    ) -> None:
        """Stop two auto-responders ping-ponging: a token bucket per thread.

        Only a message's first attempt takes a token, so the core's retries of one reply are
        not counted as several replies, and an operator's replay of a capped reply goes out.
        """
        store = self.context.store
        first = await store.claim(
            self.context.keyspace.email_attempt(message.idempotency_key),
            ttl=self.context.config.store.dedupe_ttl_seconds,
        )
        if not first:
            return
        cap = channel.reply_rate
        bucket = await store.take_tokens(
            self.context.keyspace.email_reply_rate(message.conversation.key),
            rate=cap.max_replies / cap.per_seconds,
            burst=cap.max_replies,
        )
        if not bucket.allowed:
            self._event("reply_rate_capped")
            raise PermanentDeliveryError(
                f"reply rate cap reached for this thread ({cap.max_replies} per "
                f"{cap.per_seconds:g}s); not sent",
                code=DeliveryFailure.REPLY_RATE_CAPPED,
            )

    async def _deliver(
        self, channel: EmailChannelConfig, sender: str, recipient: str, data: bytes
    ) -> str:
        host, port = channel.smarthost()
        out = channel.outbound
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            use_tls=out.security == "tls",
            start_tls=out.security == "starttls",
            validate_certs=out.validate_certs,
            timeout=out.timeout_seconds,
            local_hostname=sender.rsplit("@", 1)[1],
        )
        # Before DATA nothing can have been delivered, so a broken connection is retried;
        # during DATA the server may have taken the message: never resent blindly (see
        # gateway.dispatcher), an operator decides.
        async with map_delivery_errors("smarthost", idempotent=True, read=[read_smtp]), client:
            if out.username is not None and out.password is not None:
                await client.login(out.username, out.password.get_secret_value())
            await client.mail(sender)
            await client.rcpt(recipient)
            async with map_delivery_errors("smarthost", idempotent=False, read=[read_smtp]):
                response = await client.data(data)
        return f"{response.code} {response.message}"


def render(
    message: OutboundMessage, context: EmailReplyContext, *, from_address: str, recipient: str
) -> Reply:
    """The reply :meth:`EmailConnector.send` mails for ``message`` from ``from_address`` to
    ``recipient`` (before DKIM): what the console previews.

    Raises AddressRefused or HeaderBlockRefused as :func:`build_reply` does.
    """
    return build_reply(
        from_address=from_address,
        from_name=message.persona.display_name,
        to_address=recipient,
        to_name=context.from_name if recipient == context.from_address else None,
        subject=context.subject,
        parent_message_id=context.message_id,
        parent_references=context.references,
        text=message.text_with_buttons(),
        signature=message.persona.signature,
        idempotency_key=message.idempotency_key,
    )


def _usable_recipient(context: EmailReplyContext) -> str | None:
    """Reply-To if it is a usable address, else From (as the inbound side decides too)."""
    for candidate in (context.reply_to, context.from_address):
        if candidate:
            try:
                return checked_address(normalise_address(candidate))
            except AddressRefused:
                continue
    return None


def _server_tls(listeners: Sequence[SmtpListenerConfig]) -> ssl.SSLContext | None:
    for item in listeners:
        if item.tls_cert_file is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(item.tls_cert_file, item.tls_key_file)
            return context
    return None


class _SmtpHandler:
    """aiosmtpd hooks: check recipients at RCPT, ingest at DATA, answer only after that."""

    def __init__(self, connector: EmailConnector) -> None:
        self.connector = connector

    async def handle_RCPT(
        self,
        server: SMTPServerProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= _MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        if self.connector.mailbox(address) is None:
            self.connector._event("rcpt_unknown")
            return "550 5.1.1 Recipient address rejected: no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: SMTPServerProtocol, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or envelope.content
        if not isinstance(raw, bytes):
            raw = str(raw or "").encode("utf-8", errors="surrogateescape")
        for recipient in envelope.rcpt_tos:
            mailbox = self.connector.mailbox(recipient)
            listener = mailbox.channel.listener if mailbox is not None else None
            if listener is not None and len(raw) > listener.max_message_bytes:
                self.connector._event("too_large")
                return "552 5.3.4 Message size exceeds the limit for this recipient"
        try:
            result = await self.connector.accept(
                raw, recipients=envelope.rcpt_tos, mail_from=envelope.mail_from, source="smtp"
            )
        except IngestUnavailableError:
            self.connector._event("smtp_deferred")
            return "451 4.3.0 Temporary failure storing the message; try again later"
        except Exception:  # an unexpected failure must defer (451), never bounce: nothing lost
            self.connector._event("smtp_error")
            log.error("email.smtp_failed", exc_info=True)
            return "451 4.3.0 Temporary failure processing the message; try again later"
        self.connector._event(f"smtp_{result.outcome}")
        if result.outcome == "quarantined":
            return "250 2.6.0 Message accepted for review"
        return "250 2.0.0 Message accepted"
