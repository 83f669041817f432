"""Building the reply: headers per RFC 5322 §3.6.4 and RFC 3834, text + HTML, DKIM.

The Message-ID of a reply is derived from the outbound message's idempotency key, so a
resend of the same reply (after an unknown outcome, or an operator's replay) carries the
same id and the recipient's mail client shows it once.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import dkim

from gateway.models import utcnow

__all__ = ["DKIM_HEADERS", "Reply", "build_reply", "dkim_sign", "reply_subject"]

_RE_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv|antw|ref)(?:\[\d+\]|\(\d+\))?\s*:\s*)+", re.IGNORECASE)
_MAX_REFERENCES = 20

# Signed headers: the ones a reader trusts and a forger would want to change.
DKIM_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"auto-submitted",
    b"mime-version",
    b"content-type",
)


def reply_subject(subject: str) -> str:
    """``Re: `` plus the original subject with any reply prefixes removed (never stacked)."""
    stripped = _RE_PREFIX.sub("", subject).strip()
    return f"Re: {stripped}" if stripped else "Re: your message"


def reply_message_id(idempotency_key: str, domain: str) -> str:
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"{digest}.flowbiz@{domain}"


@dataclass(frozen=True, slots=True)
class Reply:
    message: EmailMessage
    message_id: str  # without brackets
    sender: str
    recipient: str


def build_reply(
    *,
    from_address: str,
    from_name: str,
    to_address: str,
    to_name: str | None,
    subject: str,
    parent_message_id: str,
    parent_references: Sequence[str],
    text: str,
    signature: str,
    idempotency_key: str,
) -> Reply:
    domain = from_address.rsplit("@", 1)[-1]
    message_id = reply_message_id(idempotency_key, domain)
    references = [*parent_references, parent_message_id]
    if len(references) > _MAX_REFERENCES:
        references = [references[0], *references[-(_MAX_REFERENCES - 1) :]]
    msg = EmailMessage(policy=policy.SMTP)
    from_local, _, from_domain = from_address.partition("@")
    msg["From"] = Address(display_name=from_name, username=from_local, domain=from_domain)
    to_local, _, to_domain = to_address.partition("@")
    msg["To"] = Address(display_name=to_name or "", username=to_local, domain=to_domain)
    msg["Subject"] = reply_subject(subject)
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = f"<{message_id}>"
    msg["In-Reply-To"] = f"<{parent_message_id}>"
    msg["References"] = " ".join(f"<{r}>" for r in references)
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834 §3.1.7
    msg["X-Auto-Response-Suppress"] = "All"  # stop Exchange out-of-office answers to us
    body = text.rstrip()
    if signature:
        body = f"{body}\n\n-- \n{signature.strip()}"  # "-- " is the standard signature cut
    msg.set_content(body + "\n", subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(
        _html(text, signature), subtype="html", charset="utf-8", cte="quoted-printable"
    )
    return Reply(message=msg, message_id=message_id, sender=from_address, recipient=to_address)


def _html(text: str, signature: str) -> str:
    paragraphs = [p for p in text.strip().split("\n\n") if p.strip()]
    body = "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in p.split("\n")) + "</p>"
        for p in paragraphs
    )
    sig = ""
    if signature.strip():
        lines = "<br>\n".join(html.escape(line) for line in signature.strip().split("\n"))
        sig = f'\n<div class="signature" style="color:#666">-- <br>\n{lines}</div>'
    return f"<!DOCTYPE html>\n<html><body>\n{body}{sig}\n</body></html>\n"


def dkim_sign(message: bytes, *, selector: str, domain: str, private_key: bytes) -> bytes:
    """The message with a ``DKIM-Signature`` header prepended (relaxed/relaxed)."""
    signature: bytes = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=list(DKIM_HEADERS),
    )
    return signature + message
