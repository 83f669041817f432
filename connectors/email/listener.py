"""The SMTP listener: aiosmtpd in the gateway's event loop, answering only after the append.

Guarantees, per SMTP transaction:

- RCPT: an address no tenant owns gets 550 (nothing is stored); more than 100 recipients
  get 452;
- DATA: a mail over a recipient's ``max_message_bytes`` gets 552; otherwise
  :meth:`~connectors.email.edge.MailEdge.accept` screens and appends it, and only then
  does the client hear 250 (``accepted for review`` when it was quarantined). A store that
  cannot take the mail, or any unexpected failure, answers 451: the sending MTA retries,
  nothing is bounced and nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence

from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import Envelope, Session

from connectors.email.config import SmtpListenerConfig
from connectors.email.edge import MailEdge
from gateway.errors import IngestUnavailableError
from gateway.observability import get_logger

__all__ = ["smtp_factory"]

log = get_logger(__name__)

_MAX_RECIPIENTS = 100


def smtp_factory(
    edge: MailEdge, listeners: Sequence[SmtpListenerConfig], loop: asyncio.AbstractEventLoop
) -> Callable[[], SMTPServerProtocol]:
    """One aiosmtpd protocol per connection, in this loop (no Controller thread)."""
    handler = _SmtpHandler(edge)
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


def _server_tls(listeners: Sequence[SmtpListenerConfig]) -> ssl.SSLContext | None:
    for item in listeners:
        if item.tls_cert_file is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(item.tls_cert_file, item.tls_key_file)
            return context
    return None


class _SmtpHandler:
    """aiosmtpd hooks: check recipients at RCPT, append at DATA, answer only after that."""

    def __init__(self, edge: MailEdge) -> None:
        self.edge = edge

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
        if self.edge.mailbox(address) is None:
            self.edge.event("rcpt_unknown")
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
            mailbox = self.edge.mailbox(recipient)
            listener = mailbox.channel.listener if mailbox is not None else None
            if listener is not None and len(raw) > listener.max_message_bytes:
                self.edge.event("too_large")
                return "552 5.3.4 Message size exceeds the limit for this recipient"
        try:
            result = await self.edge.accept(
                raw, recipients=envelope.rcpt_tos, mail_from=envelope.mail_from, source="smtp"
            )
        except IngestUnavailableError:
            self.edge.event("smtp_deferred")
            return "451 4.3.0 Temporary failure storing the message; try again later"
        except Exception:  # an unexpected failure must defer (451), never bounce: nothing lost
            self.edge.event("smtp_error")
            log.error("email.smtp_failed", exc_info=True)
            return "451 4.3.0 Temporary failure processing the message; try again later"
        self.edge.event(f"smtp_{result.outcome}")
        if result.outcome == "quarantined":
            return "250 2.6.0 Message accepted for review"
        return "250 2.0.0 Message accepted"
