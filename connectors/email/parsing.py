"""Raw RFC 5322 bytes to a :class:`ParsedEmail`, or :class:`HostileEmail` with a reason.

The stdlib ``email`` package (``policy.default``) does the parsing. Around it:

- cheap byte-level checks run *before* the parser, because the parser itself recurses once
  per nesting level and keeps every header: header sections over a size or count limit and
  messages with more nested containers than the limit are refused unparsed;
- the body is text/plain when there is one, otherwise HTML turned into text; charsets are
  decoded with a lenient fallback; quoted replies and signatures are stripped with
  ``mail-parser-reply``;
- attachments become metadata (name, type, size, their place in the mail) and their
  decoded bytes (``attachment_data``, for the media keeper); one over the channel's size
  limit is refused ``too_large``, one whose base64 is broken ``undecodable``, a
  forwarded mail ``nested_message`` and an empty part ``empty``, bytes dropped. Nothing
  is ever decompressed, so an archive "bomb" is just a file of its stored size;
- headers that mark mail as automatic (RFC 3834 and common practice) are collected as
  ``loop_reasons``; the connector decides what to do with them;
- :func:`read_head` reads only the header block, with the same helpers as
  :func:`parse_email`, so what the SMTP listener decides before its 250 (the sender, the
  dedupe id, the thread's ids, the automatic-mail screens) is what the full parse in the
  worker reads from the same bytes;
- each header is parsed once per message (:class:`_ReadOncePolicy`): ``policy.default``
  rebuilds a header object on every read, and a part's Content-Type is read up to five
  times (and :mod:`connectors.email.policies` makes each header class once);
- every header value kept is clean (:mod:`connectors.email.headers`): display names,
  subject and the few audit headers carry no CR, LF, NUL or encoded-word opener; the
  sender, Reply-To and every Message-ID/In-Reply-To/References id are re-checked and an
  unusable one is left out and named in ``header_refusals`` (a From with no usable
  address is refused as ``bad_sender_address``). What was cleaned is in ``header_cleaned``.
"""

from __future__ import annotations

import email
import email.errors
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import EmailPolicy
from email.utils import getaddresses, parseaddr
from typing import Any, Literal

from mailparser_reply import EmailReplyParser  # type: ignore[import-untyped]  # ships no py.typed

from connectors.email.headers import (
    AddressRefused,
    checked_address,
    checked_message_id,
    decode_words,
    header_text,
    is_unsafe,
)
from connectors.email.html_text import html_to_text
from connectors.email.policies import HeaderClasses
from gateway.models import Attachment

__all__ = [
    "HostileEmail",
    "Limits",
    "MailHead",
    "ParsedEmail",
    "automatic_reasons",
    "envelope_reasons",
    "html_to_text",
    "may_exceed_part_limits",
    "message_ids",
    "normalise_address",
    "parse_email",
    "read_head",
]

# What a broken message can make the stdlib parser raise. It is written defensively, but its
# header parser has had IndexError/AttributeError bugs on crafted input; any of these means
# "this message cannot be read", never "crash the listener".
_PARSER_FAILURES = (
    email.errors.MessageError,
    ValueError,
    LookupError,
    TypeError,
    AttributeError,
    UnicodeError,
    RecursionError,
    AssertionError,
)

_MSGID_STR = re.compile(r"<([^<>]{0,990})>")
_CONTAINER = re.compile(rb"(?im)^content-type:\s*(?:multipart|message)/")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_HEADER_LINE = re.compile(rb"(?m)^[!-9;-~]+:")
_AUTOMATIC_SENDERS = re.compile(
    r"^(mailer-daemon|listserv|majordomo|owner-.*|.*-request|.*-bounces?|noreply-dmarc-support)$",
    re.IGNORECASE,
)
_SUPPRESS_VALUES = frozenset({"all", "autoreply", "oof"})
_UNDECODABLE = (
    email.errors.InvalidBase64CharactersDefect,
    email.errors.InvalidBase64PaddingDefect,
    email.errors.InvalidBase64LengthDefect,
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one message may contain; beyond them it is refused with a reason."""

    max_header_bytes: int = 256 * 1024
    max_headers: int = 1000
    max_containers: int = 32  # multipart/* and message/* parts: bounds the parser's recursion
    max_parts: int = 200
    max_text_chars: int = 20_000
    max_attachments: int = 50
    max_attachment_bytes: int = 10 * 1024 * 1024
    reply_languages: tuple[str, ...] = ("en",)


class HostileEmail(Exception):
    """The message cannot or must not be processed; ``reason`` is a short, stable label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ParsedEmail:
    event_id: str  # the Message-ID without brackets, else a digest of the raw bytes
    message_id: str | None
    from_address: str
    from_name: str | None
    reply_to: str | None
    subject: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    date: str | None
    text: str  # the new part of the message: quotes and signature removed
    full_text_chars: int
    attachments: tuple[Attachment, ...]
    loop_reasons: tuple[str, ...]  # why a reply would be inappropriate, from the headers
    defects: int
    headers: dict[str, str] = field(default_factory=dict)  # a few, for audit
    # Headers whose value was unusable and left out (reply_to, message_id, references...),
    # and those whose text had control characters or encoded-word openers removed.
    header_refusals: tuple[str, ...] = ()
    header_cleaned: tuple[str, ...] = ()
    # The decoded bytes of each attachment, in order (None: refused at parse, or no bytes):
    # what the connector hands the media keeper, never stored with the message.
    attachment_data: tuple[bytes | None, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class MailHead:
    """What the header block alone says: all the SMTP listener needs before its 250."""

    event_id: str  # the Message-ID without brackets, else a digest of the raw bytes
    message_id: str | None
    from_address: str
    from_name: str  # as found (not yet cleaned): parse_email cleans it
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]  # In-Reply-To stands in when there are none
    loop_reasons: tuple[str, ...]
    refusals: tuple[str, ...]  # thread ids left out: message_id, in_reply_to, references

    def to_json(self) -> dict[str, Any]:
        """The head as the edge stores it with the mail, for :meth:`from_json` in the worker."""
        return {name: getattr(self, name) for name in _HEAD_FIELDS}

    @classmethod
    def from_json(cls, data: object) -> MailHead | None:
        """The head :meth:`to_json` stored; None for anything else (parse it again then)."""
        if not isinstance(data, dict) or set(data) != set(_HEAD_FIELDS):
            return None
        fields: dict[str, Any] = {}
        for name in _HEAD_FIELDS:
            value = data[name]
            if name in _HEAD_TUPLES:
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    return None
                value = tuple(value)
            elif not (isinstance(value, str) or (value is None and name == "message_id")):
                return None
            fields[name] = value
        return cls(**fields)


_HEAD_FIELDS = tuple(MailHead.__dataclass_fields__)
_HEAD_TUPLES = frozenset({"in_reply_to", "references", "loop_reasons", "refusals"})


class _ReadOncePolicy(EmailPolicy):
    """``policy.default``, with each header object built once per message.

    The stdlib builds a new header object (a full RFC 5322 parse of the value) on every
    ``msg.get``; the objects are immutable, so one built for a ``(name, value)`` pair is
    reused for the rest of the message. Each message gets its own cache
    (:func:`_message_policy`): nothing of one mail outlives its parse.
    """

    parsed: dict[tuple[str, str], Any] | None = None

    def header_fetch_parse(self, name: str, value: Any) -> Any:
        if self.parsed is None or hasattr(value, "name"):
            return super().header_fetch_parse(name, value)
        key = (name, value)
        found = self.parsed.get(key)
        if found is None:
            found = self.parsed[key] = super().header_fetch_parse(name, value)
        return found


_READ_ONCE = _ReadOncePolicy(header_factory=HeaderClasses())


def _message_policy() -> EmailPolicy:
    policy = _READ_ONCE.clone()
    object.__setattr__(policy, "parsed", {})  # policies are frozen; this copy is ours alone
    return policy


def normalise_address(address: str) -> str:
    """Lower-case, strip brackets and whitespace; sub-addresses (``+tag``) are kept."""
    return address.strip().strip("<>").strip().lower()


def message_ids(value: str | None, *, limit: int = 100) -> tuple[str, ...]:
    """The usable ids in a Message-ID/In-Reply-To/References value, without brackets."""
    return _message_ids(value, limit=limit)[0]


def _message_ids(value: str | None, *, limit: int) -> tuple[tuple[str, ...], bool]:
    """The usable ids, and whether anything in ``value`` was not one.

    Long chains keep their first id (the thread's root) and the most recent ones.
    """
    if not value or not value.strip():
        return (), False
    found = _MSGID_STR.findall(value)
    if not found and " " not in value.strip():
        found = [value.strip()]  # some clients omit the brackets
    usable = [i for i in found if checked_message_id(i) is not None]
    refused = len(usable) < len(found) or not found
    if len(usable) > limit:
        usable = [usable[0], *usable[-(limit - 1) :]]
    return tuple(usable), refused


def _precheck(raw: bytes, limits: Limits) -> int:
    """Refuse what must not reach the parser; the offset where the header block ends."""
    match = _HEADER_END.search(raw)
    header_bytes = match.start() if match else len(raw)
    if header_bytes > limits.max_header_bytes:
        raise HostileEmail("headers_too_large", f"{header_bytes} bytes of headers")
    if len(_HEADER_LINE.findall(raw, 0, header_bytes)) > limits.max_headers:
        raise HostileEmail("too_many_headers")
    containers = len(_CONTAINER.findall(raw))
    if containers > limits.max_containers:
        raise HostileEmail("too_deeply_nested", f"{containers} nested containers")
    return match.end() if match else len(raw)


def may_exceed_part_limits(raw: bytes, limits: Limits) -> bool:
    """Whether the MIME walk could refuse ``raw`` for its parts or attachments.

    Every part but the message itself starts after a boundary line (``--`` at the start of
    a line; the parser also ends lines at a bare CR), so their number bounds the parts,
    and the parts bound the attachments. Below both limits the walk cannot refuse the
    message, and the header block is all the listener has to read.
    """
    bound = 1 + raw.count(b"\n--") + raw.count(b"\r--") + raw.startswith(b"--")
    return bound > min(limits.max_parts, limits.max_attachments)


def _clean(text: str) -> str:
    """Undo the parser's surrogate escapes: raw 8-bit header bytes are decoded as UTF-8
    (RFC 6532) with replacement, so no lone surrogate reaches JSON serialisation."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return text.encode("utf-8", "replace").decode("utf-8")


def _header(msg: EmailMessage, name: str) -> str | None:
    """The decoded value (encoded-words decoded even when the stdlib parser gave up)."""
    try:
        value = msg.get(name)
    except _PARSER_FAILURES:
        # One unreadable header is not a reason to drop a message; fall back to the raw text.
        value = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
        value = None if value is None else decode_words(str(value))
    return None if value is None else _clean(str(value))


def _addresses(msg: EmailMessage, name: str) -> tuple[list[tuple[str, str]], int]:
    """Usable ``(display name, address)`` pairs, and how many addresses were refused.

    Encoded-words are decoded (also when the stdlib parser gave up and the raw text is
    read); display names are returned as found, addresses normalised and checked.
    """
    found: list[tuple[str, str]] = []
    try:
        for header in msg.get_all(name) or []:
            for address in getattr(header, "addresses", ()):
                if "@" in address.addr_spec:
                    found.append((_clean(address.display_name), _clean(address.addr_spec)))
    except _PARSER_FAILURES:
        # The stdlib refuses e.g. an encoded CR/LF in an address part: read the raw text.
        values = [_clean(str(v)) for k, v in msg.raw_items() if k.lower() == name.lower()]
        found = [(decode_words(n), a) for n, a in getaddresses(values) if "@" in a]
    usable: list[tuple[str, str]] = []
    for display_name, address in found:
        try:
            usable.append((display_name, checked_address(normalise_address(address))))
        except AddressRefused:
            continue
    return usable, len(found) - len(usable)


def read_head(raw: bytes, *, limits: Limits | None = None) -> MailHead:
    """The header block of one message, read as :func:`parse_email` reads it; raise
    :class:`HostileEmail` for what it would refuse from the headers (or the byte checks)."""
    head_end = _precheck(raw, limits or Limits())
    try:
        # The parser ends the header block at the first empty line, never after the blank
        # line found above: the same headers as a full parse, without reading the body.
        msg = BytesHeaderParser(policy=_message_policy()).parsebytes(raw[:head_end])
        assert isinstance(msg, EmailMessage)  # an EmailPolicy always builds EmailMessage
        return _head(msg, raw)
    except HostileEmail:
        raise
    except _PARSER_FAILURES as exc:
        raise HostileEmail("unparsable", type(exc).__name__) from exc


def parse_email(
    raw: bytes, *, limits: Limits | None = None, head: MailHead | None = None
) -> ParsedEmail:
    """Parse one message; raise :class:`HostileEmail` when it must be refused or quarantined.

    ``head``: what :func:`read_head` already said of this very message (the edge's reading,
    stored with it), so its header block is not read again.
    """
    limits = limits or Limits()
    _precheck(raw, limits)
    try:
        msg = email.message_from_bytes(raw, policy=_message_policy())
        assert isinstance(msg, EmailMessage)  # an EmailPolicy always builds EmailMessage
        return _extract(msg, raw, limits, head)
    except HostileEmail:
        raise
    except _PARSER_FAILURES as exc:
        raise HostileEmail("unparsable", type(exc).__name__) from exc


def _head(msg: EmailMessage, raw: bytes) -> MailHead:
    senders, refused = _addresses(msg, "from")
    if not senders and not refused:
        senders, refused = _addresses(msg, "sender")
    if not senders:
        if refused:
            raise HostileEmail("bad_sender_address", "no From address we could answer")
        raise HostileEmail("no_sender", "no usable From address")
    raw_name, from_address = senders[0]
    refusals: list[str] = []
    ids, refused = _message_ids(_header(msg, "message-id"), limit=1)
    if refused:
        refusals.append("message_id")
    message_id = ids[0] if ids else None
    in_reply_to, refused = _message_ids(_header(msg, "in-reply-to"), limit=10)
    if refused:
        refusals.append("in_reply_to")
    references, refused = _message_ids(_header(msg, "references"), limit=100)
    if refused:
        refusals.append("references")
    if not references and len(in_reply_to) == 1:
        references = in_reply_to  # RFC 5322 §3.6.4: In-Reply-To stands in for References
    return MailHead(
        event_id=message_id or "sha256:" + hashlib.sha256(raw).hexdigest(),
        message_id=message_id,
        from_address=from_address,
        from_name=raw_name,
        in_reply_to=in_reply_to,
        references=references,
        loop_reasons=automatic_reasons(msg, from_address),
        refusals=tuple(refusals),
    )


def _extract(
    msg: EmailMessage, raw: bytes, limits: Limits, head: MailHead | None = None
) -> ParsedEmail:
    head = head if head is not None else _head(msg, raw)
    refusals: list[str] = []
    cleaned: list[str] = []
    from_name = header_text(head.from_name, limit=200)
    if is_unsafe(head.from_name):
        cleaned.append("from_name")
    reply_to, refused = _addresses(msg, "reply-to")
    if refused and not reply_to:
        refusals.append("reply_to")
    refusals += head.refusals

    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    data: list[bytes | None] = []
    for part in _leaves(msg, limits):
        _take_part(part, plain, html, attachments, data, limits)
    if plain:
        full = "\n\n".join(plain)
    elif html:
        full = "\n\n".join(html_to_text(h) for h in html)
    else:
        full = ""
    full = full[: limits.max_text_chars * 5]  # bound the reply parser's work
    text = _strip_quotes(full, limits.reply_languages)[: limits.max_text_chars]

    raw_subject = _header(msg, "subject") or ""
    subject = header_text(raw_subject)
    if is_unsafe(raw_subject):
        cleaned.append("subject")
    headers = {
        name: header_text(value, limit=500)
        for name in ("date", "auto-submitted", "precedence", "list-id", "user-agent")
        if (value := _header(msg, name)) is not None
    }
    date = _header(msg, "date")
    return ParsedEmail(
        event_id=head.event_id,
        message_id=head.message_id,
        from_address=head.from_address,
        from_name=from_name or None,
        reply_to=reply_to[0][1] if reply_to else None,
        subject=subject,
        in_reply_to=head.in_reply_to,
        references=head.references,
        date=None if date is None else header_text(date, limit=200),
        text=text,
        full_text_chars=len(full),
        attachments=tuple(attachments),
        loop_reasons=head.loop_reasons,
        defects=len(msg.defects),
        headers=headers,
        header_refusals=tuple(refusals),
        header_cleaned=tuple(cleaned),
        attachment_data=tuple(data),
    )


def _leaves(msg: EmailMessage, limits: Limits) -> Iterator[EmailMessage]:
    """Every non-container part, depth first, iteratively (the count is bounded)."""
    stack: list[EmailMessage] = [msg]
    seen = 0
    while stack:
        part = stack.pop()
        seen += 1
        if seen > limits.max_parts:
            raise HostileEmail("too_many_parts", f"more than {limits.max_parts} MIME parts")
        if part.get_content_maintype() == "multipart":
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend(reversed([c for c in children if isinstance(c, EmailMessage)]))
            continue
        yield part


def _take_part(
    part: EmailMessage,
    plain: list[str],
    html: list[str],
    attachments: list[Attachment],
    data: list[bytes | None],
    limits: Limits,
) -> None:
    ctype = part.get_content_type()
    disposition = part.get_content_disposition()
    filename = part.get_filename()
    filename = None if filename is None else _clean(filename)
    if disposition != "attachment" and filename is None and ctype in ("text/plain", "text/html"):
        content = _text_content(part)
        (plain if ctype == "text/plain" else html).append(content)
        return
    if len(attachments) >= limits.max_attachments:
        raise HostileEmail("too_many_attachments", f"more than {limits.max_attachments}")
    payload = part.get_payload(decode=True)
    size = len(payload) if isinstance(payload, bytes) else 0
    # The attachment's place in the mail: how media_fetch names the bytes to keep.
    extra: dict[str, object] = {"part": len(attachments)}
    refused = None
    if size > limits.max_attachment_bytes:
        extra["over_limit"] = True  # metadata only, flagged for the agent and operator
        refused = "too_large"
    elif any(isinstance(d, _UNDECODABLE) for d in part.defects):
        # Broken base64 decodes to something, but not to the file that was sent.
        refused = "undecodable"
    elif not isinstance(payload, bytes):
        refused = "nested_message"  # a forwarded mail (message/*): its parts are not walked
    elif not size:
        refused = "empty"
    data.append(payload if refused is None and isinstance(payload, bytes) else None)
    maintype = part.get_content_maintype()
    kind: Literal["image", "video", "audio", "file"] = (
        maintype if maintype in ("image", "video", "audio") else "file"  # type: ignore[assignment]  # narrowed by the membership test
    )
    attachments.append(
        Attachment(
            kind=kind,
            name=(filename or "")[:255] or None,
            mime_type=ctype,
            size=size,
            refused=refused,
            extra=extra,
        )
    )


def _text_content(part: EmailMessage) -> str:
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return _clean(data.decode(charset, errors="replace"))
    except LookupError:  # an unknown charset name: UTF-8 is the most likely truth
        return data.decode("utf-8", errors="replace")


def _strip_quotes(text: str, languages: tuple[str, ...]) -> str:
    text = text.replace("\r\n", "\n").strip()
    if not text:
        return ""
    parsed = EmailReplyParser(languages=list(languages)).read(text)
    replies = parsed.replies
    latest = replies[0].body.strip() if replies else ""
    return latest or text


def automatic_reasons(msg: EmailMessage, from_address: str) -> tuple[str, ...]:
    """Why this message looks automatic (RFC 3834 §2 and common practice); empty if human."""
    reasons: list[str] = []
    auto = (_header(msg, "auto-submitted") or "").split(";")[0].strip().lower()
    if auto and auto != "no":
        reasons.append("auto_submitted")
    if any(k.lower().startswith("list-") for k in msg):
        reasons.append("mailing_list")
    precedence = (_header(msg, "precedence") or "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        reasons.append("precedence_" + precedence)
    suppress = {
        v.strip().lower() for v in (_header(msg, "x-auto-response-suppress") or "").split(",")
    }
    if suppress & _SUPPRESS_VALUES:
        reasons.append("auto_response_suppressed")
    return_path = _header(msg, "return-path")
    if return_path is not None and not normalise_address(parseaddr(return_path)[1]):
        reasons.append("null_return_path")
    if msg.get_content_type() == "multipart/report":
        reasons.append("delivery_report")
    if _AUTOMATIC_SENDERS.match(from_address.split("@", 1)[0]):
        reasons.append("automatic_sender")
    return tuple(reasons)


def envelope_reasons(mail_from: str | None) -> tuple[str, ...]:
    """The SMTP envelope sender's verdict: a null path or a daemon means no reply."""
    if mail_from is None:
        return ()
    address = normalise_address(mail_from)
    if not address:
        return ("null_return_path",)
    if _AUTOMATIC_SENDERS.match(address.split("@", 1)[0]):
        return ("automatic_sender",)
    return ()
