"""Building the reply: headers per RFC 5322 §3.6.4 and RFC 3834, text + HTML.

Every header value that came from a stranger's mail (their display name, address, subject,
Message-ID and References) goes through :mod:`connectors.email.headers` first: text is
cleaned of CR, LF, NUL and encoded-word openers, addresses are re-parsed and refused
(:class:`AddressRefused`), ids that are not plain msg-ids are left out. The bytes are then
checked to hold exactly the headers written here (:class:`HeaderBlockRefused` otherwise),
so no input can add a header or end the header block of a message we sign.

The text and HTML parts are quoted-printable and the files base64, so the MIME boundaries
(``=_flowbiz_``, a digest and the container's letter) cannot occur in them. Files
(:class:`MailFile`) go in ``multipart/mixed`` beside the text, inline images (a card's
``cid:`` picture) in ``multipart/related`` with the HTML. A file's name is cleaned like any
header value taken from outside (no CR, LF or other control character, no path) and
written by the stdlib as a parameter (RFC 2231 for non-ASCII), and its content type is
used only when it is a plain ``type/subtype`` token: neither can add a header to a part.

The Message-ID of a reply is derived from the outbound message's idempotency
key, so a resend of the same reply (after an unknown outcome, or an operator's replay) carries the
same id and the recipient's mail client shows it once.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import charset, encoders
from email.message import Message
from email.utils import format_datetime, formataddr

from connectors.email.headers import (
    checked_address,
    checked_message_id,
    header_text,
    verify_header_block,
)
from connectors.email.policies import REPLY_WRITE
from gateway.models import utcnow

__all__ = ["MailFile", "Reply", "build_reply", "reply_message_id", "reply_subject", "safe_filename"]

_RE_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv|antw|ref)(?:\[\d+\]|\(\d+\))?\s*:\s*)+", re.IGNORECASE)
_MAX_REFERENCES = 20
# The reply is written with the stdlib's compat32 API: header values are the strings built
# here (addresses through formataddr, non-ASCII text as RFC 2047 words by email.header), so
# nothing parses them back. The modern API parsed every header we set into a tree and
# refolded it on output: ~940 of a reply's ~1,000 µs, for values we produced ourselves.
# verify_header_block checks the bytes either way.
_UTF8_QP = charset.Charset("utf-8")
_UTF8_QP.body_encoding = charset.QP
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
_PATH = re.compile(r"[/\\]+")


@dataclass(frozen=True, slots=True)
class MailFile:
    """A file a reply carries: attached, or inline (``content_id`` set: a card's picture)."""

    data: bytes
    content_type: str
    name: str | None = None
    content_id: str | None = None  # without brackets


def safe_filename(name: str | None, fallback: str = "file") -> str:
    """A name fit for a Content-Disposition parameter: one line, no path, bounded."""
    # Only the last path segment: "../../etc/passwd" is "passwd", as mail clients save it.
    cleaned = _PATH.split(header_text(name or "", limit=200))[-1].strip(" .")
    return cleaned or fallback


def reply_subject(subject: str) -> str:
    """``Re: `` plus the original subject with any reply prefixes removed (never stacked)."""
    stripped = _RE_PREFIX.sub("", header_text(subject)).strip()
    return f"Re: {stripped}" if stripped else "Re: your message"


def reply_message_id(idempotency_key: str, domain: str) -> str:
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"{digest}.flowbiz@{domain}"


@dataclass(frozen=True, slots=True)
class Reply:
    message: Message
    data: bytes  # the message as sent (before DKIM), its header block verified
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
    html_body: str | None = None,
    files: Sequence[MailFile] = (),
) -> Reply:
    """The reply as a message and as verified bytes.

    Raises AddressRefused when either address is not one we may write, HeaderBlockRefused
    when the generated header block is not exactly ours (neither should happen with input
    screened by the parser; both mean "do not send").
    """
    from_address, to_address = checked_address(from_address), checked_address(to_address)
    domain = from_address.rsplit("@", 1)[1]
    message_id = reply_message_id(idempotency_key, domain)
    parent = checked_message_id(parent_message_id) if parent_message_id else None
    references = [r for r in (*parent_references, parent) if r and checked_message_id(r)]
    references = list(dict.fromkeys(references))
    if len(references) > _MAX_REFERENCES:
        references = [references[0], *references[-(_MAX_REFERENCES - 1) :]]
    msg = Message(policy=REPLY_WRITE)
    msg["From"] = formataddr((header_text(from_name, limit=200), from_address), "utf-8")
    msg["To"] = formataddr((header_text(to_name or "", limit=200), to_address), "utf-8")
    msg["Subject"] = reply_subject(subject)
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = f"<{message_id}>"
    written = ["From", "To", "Subject", "Date", "Message-ID"]
    if parent is not None:
        msg["In-Reply-To"] = f"<{parent}>"
        written.append("In-Reply-To")
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
        written.append("References")
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834 §3.1.7
    msg["X-Auto-Response-Suppress"] = "All"  # stop Exchange out-of-office answers to us
    msg["MIME-Version"] = "1.0"
    # Our own boundaries, fixed per reply like its Message-ID: the generator would otherwise
    # draw random ones and compile a regular expression for each to check it is unused.
    # "=_" never occurs in quoted-printable text nor "-" in base64, so no line of any part
    # can match one.
    boundary = f"=_flowbiz_{message_id.split('.', 1)[0]}"
    body = text.rstrip()
    if signature:
        body = f"{body}\n\n-- \n{signature.strip()}"  # "-- " is the standard signature cut
    alternative = [
        _text_part("plain", body + "\n"),
        _text_part("html", html_body if html_body is not None else _html(text, signature)),
    ]
    inline = [f for f in files if f.content_id is not None]
    attached = [f for f in files if f.content_id is None]
    top: tuple[str, list[Message]] = ("alternative", alternative)
    if inline:
        related = _container("alternative", f"{boundary}_a", alternative)
        top = ("related", [related, *(_file_part(f) for f in inline)])
    if attached:
        inner = _container(top[0], f"{boundary}_{top[0][0]}", top[1])
        top = ("mixed", [inner, *(_file_part(f) for f in attached)])
    subtype, children = top
    extra = '; type="multipart/alternative"' if subtype == "related" else ""
    msg["Content-Type"] = f'multipart/{subtype}; boundary="{boundary}"{extra}'
    for child in children:
        msg.attach(child)
    data = msg.as_bytes(policy=REPLY_WRITE)
    written += ["Auto-Submitted", "X-Auto-Response-Suppress", "MIME-Version", "Content-Type"]
    verify_header_block(data, written)
    return Reply(
        message=msg, data=data, message_id=message_id, sender=from_address, recipient=to_address
    )


def _text_part(subtype: str, text: str) -> Message:
    """One UTF-8, quoted-printable ``text/<subtype>`` part."""
    part = Message(policy=REPLY_WRITE)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part.set_payload(text, _UTF8_QP)  # encodes it, and adds Content-Transfer-Encoding
    del part["MIME-Version"]  # set_payload adds one; it belongs on the message only
    return part


def _container(subtype: str, boundary: str, children: Sequence[Message]) -> Message:
    part = Message(policy=REPLY_WRITE)
    extra = '; type="multipart/alternative"' if subtype == "related" else ""
    part["Content-Type"] = f'multipart/{subtype}; boundary="{boundary}"{extra}'
    for child in children:
        part.attach(child)
    return part


def _file_part(file: MailFile) -> Message:
    """One base64 part; its name and type cannot write a header of their own."""
    part = Message(policy=REPLY_WRITE)
    content_type = file.content_type.strip().lower()
    part["Content-Type"] = (
        content_type if _MIME_TYPE.match(content_type) else "application/octet-stream"
    )
    part.set_payload(file.data)
    encoders.encode_base64(part)  # adds Content-Transfer-Encoding: base64
    name = safe_filename(file.name)
    # A tuple is written as an RFC 2231 parameter (filename*=utf-8''…): any script, one line.
    value: str | tuple[str, str, str] = name if name.isascii() else ("utf-8", "", name)
    if file.content_id is not None:
        part["Content-ID"] = f"<{file.content_id}>"
        part.add_header("Content-Disposition", "inline", filename=value)
    else:
        part.add_header("Content-Disposition", "attachment", filename=value)
    return part


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
