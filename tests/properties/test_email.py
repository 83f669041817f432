"""The email parser and the SMTP listener against garbage and mutated real mail.

``parse_email`` returns a ParsedEmail or raises HostileEmail with a reason — nothing else.
Through the real SMTP listener, any message is answered 250 (accepted, suppressed or
quarantined for review) and never with the listener's "unexpected failure" deferral; each
quarantine is counted as ``flowbiz_channel_events_total{event="quarantined_<reason>"}``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from email.errors import HeaderParseError
from email.header import Header
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.util import parse_tag_value
from hypothesis import event, given, settings
from hypothesis import strategies as st

from connectors.email.actions import ActionRefused, ActionSeal, ActionTicket, derive_action_keys
from connectors.email.compose import MailFile, build_reply
from connectors.email.connector import EmailConnector
from connectors.email.dkim_sign import DKIM_HEADERS, Canonicalization, DkimSigner
from connectors.email.emulator import (
    MailSender,
    Smarthost,
    dkim_dns_record,
    dkim_verify,
    generate_dkim_key,
)
from connectors.email.headers import is_unsafe
from connectors.email.parsing import (
    HostileEmail,
    Limits,
    ParsedEmail,
    _extract,
    may_exceed_part_limits,
    parse_email,
    read_head,
)
from connectors.email.policies import REPLY_WRITE
from gateway.models import Channel
from tests.harness import RunningGateway, base_config, running_gateway
from tests.properties.conftest import PROFILE, SUPPORT, WRITER_PROFILE

VALID = (
    b"From: Jane Doe <jane@customer.example>\r\n"
    b"To: support@acme.example\r\n"
    b"Subject: =?utf-8?q?Invoice_=E2=82=AC?=\r\n"
    b"Message-ID: <m1@customer.example>\r\n"
    b"In-Reply-To: <r0@acme.example>\r\n"
    b"References: <root@acme.example> <r0@acme.example>\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n'
    b"--inner\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Hello caf=E9\r\n\r\nOn Mon, Jane wrote:\r\n> old\r\n"
    b"--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello <b>caf\xc3\xa9</b></p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\nContent-Type: application/pdf; name=a.pdf\r\n"
    b"Content-Disposition: attachment; filename=a.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
    b"--outer--\r\n"
)
# Pieces that stress the parser: broken encodings, headers, boundaries, nesting.
FRAGMENTS = [
    b"\r\n",
    b"\r\n\r\n",
    b"--outer",
    b"--inner--",
    b"Content-Type: multipart/mixed; boundary=",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"=?utf-8?b?////?=",
    b"=?x-unknown?q?=FF?=",
    b"charset=utf-99",
    b"From: <>\r\n",
    b"From: =?utf-8?q?=00?= <@>\r\n",
    b"Message-ID: <<>>\r\n",
    b"\x00\xff\xfe",
    b":\r\n",
    b" folded\r\n",
]


@st.composite
def mutated_mail(draw: st.DrawFn) -> bytes:
    raw = VALID
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["insert", "delete", "truncate", "replace"]))
        if action == "insert":
            piece = draw(st.sampled_from(FRAGMENTS) | st.binary(max_size=40))
            raw = raw[:at] + piece + raw[at:]
        elif action == "delete":
            raw = raw[:at] + raw[at + draw(st.integers(1, 80)) :]
        elif action == "truncate":
            raw = raw[:at]
        else:
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at + 8 :]
    return raw


mail_bytes = mutated_mail() | st.binary(max_size=3000)


@PROFILE
@given(raw=mail_bytes)
def test_parser_returns_a_parse_or_a_named_refusal(raw: bytes) -> None:
    """Any bytes: a ParsedEmail, or HostileEmail with a non-empty reason; nothing else."""
    try:
        parsed: ParsedEmail | None = parse_email(raw)
        reason = ""
    except HostileEmail as exc:
        parsed, reason = None, exc.reason
    if parsed is None:
        assert reason, "a refusal without a reason"
        event(f"hostile {reason}")
        return
    assert isinstance(parsed, ParsedEmail)
    fields = [parsed.subject, parsed.text, parsed.from_name, parsed.headers, parsed.attachments]
    # Encodable as UTF-8 (no lone surrogates), so the message can be stored as JSON.
    json.dumps(fields, ensure_ascii=False, default=repr).encode("utf-8")
    assert parsed.event_id
    assert "@" in parsed.from_address
    # Every attachment either has its bytes for the keeper (as many as its size says) or a
    # reason it has none; the bytes are named by the place recorded in the attachment.
    assert len(parsed.attachment_data) == len(parsed.attachments)
    for place, (attachment, data) in enumerate(
        zip(parsed.attachments, parsed.attachment_data, strict=True)
    ):
        assert attachment.extra["part"] == place
        assert (data is None) == (attachment.refused is not None)
        assert data is None or len(data) == attachment.size
    event("parsed")


# What only the MIME walk can refuse; everything else is decided by the header block.
_BODY_REASONS = frozenset({"too_many_parts", "too_many_attachments", "unparsable"})


@PROFILE
@given(raw=mail_bytes)
def test_the_header_block_alone_decides_what_the_edge_decides(raw: bytes) -> None:
    """``read_head`` (the SMTP listener, before its 250) and ``parse_email`` (the worker)
    agree on the sender, the dedupe id, the thread's ids and the automatic-mail screens;
    a refusal of the header block is the parser's refusal; a refusal for parts or
    attachments is only possible where the listener's byte count says it walks the parts."""
    try:
        full: ParsedEmail | None = parse_email(raw)
        full_reason = ""
    except HostileEmail as exc:
        full, full_reason = None, exc.reason
    try:
        head = read_head(raw)
        head_reason = ""
    except HostileEmail as exc:
        head_reason = exc.reason
    if head_reason:
        event(f"head refused {head_reason}")
        # The full parse may stop earlier, in the body, before it reads the sender.
        assert full_reason in (head_reason, "unparsable"), (head_reason, full_reason)
        return
    if full is None:
        event(f"body refused {full_reason}")
        assert full_reason in _BODY_REASONS, full_reason
        if full_reason != "unparsable":
            assert may_exceed_part_limits(raw, Limits())
        return
    event("both read")
    assert (
        head.event_id,
        head.message_id,
        head.from_address,
        head.in_reply_to,
        head.references,
        head.loop_reasons,
    ) == (
        full.event_id,
        full.message_id,
        full.from_address,
        full.in_reply_to,
        full.references,
        full.loop_reasons,
    )
    # The header objects reused within a message change nothing: the stdlib's own policy,
    # which builds every header afresh, reads the same message.
    plain = message_from_bytes(raw, policy=policy.default)
    assert _extract(plain, raw, Limits()) == full  # type: ignore[arg-type]  # an EmailMessage


def test_many_boundary_lines_make_the_listener_walk_the_parts() -> None:
    many = VALID.replace(
        b"--outer--\r\n",
        b"--outer\r\nContent-Type: application/zip\r\n\r\nx\r\n" * 60 + b"--outer--\r\n",
    )
    assert not may_exceed_part_limits(VALID, Limits())
    assert may_exceed_part_limits(many, Limits())
    with pytest.raises(HostileEmail, match="too_many_attachments"):
        parse_email(many)


@PROFILE
@given(raw=mail_bytes, mail_from=st.sampled_from(["jane@customer.example", "", "x@y"]))
async def test_smtp_listener_answers_every_message_without_an_internal_error(
    mail_gateway: RunningGateway, raw: bytes, mail_from: str
) -> None:
    """Over real SMTP: 250 for anything that fits; quarantines counted by reason."""
    connector = mail_gateway.runtime.connectors[Channel.EMAIL]
    assert isinstance(connector, EmailConnector)
    registry = mail_gateway.runtime.metrics.registry

    def count(name: str) -> float:
        labels = {"channel": "email", "event": name}
        return registry.get_sample_value("flowbiz_channel_events_total", labels) or 0.0

    errors_before = count("smtp_error")
    quarantined_before = {r: count(f"quarantined_{r}") for r in _REASONS}
    sender = MailSender(*connector.listener_address("acme"))
    code, message = await sender.send(raw, mail_from=mail_from, rcpt_to=[SUPPORT])
    event(f"{code} {message.split(' ', 1)[-1][:30]}")
    assert count("smtp_error") == errors_before, "the listener hit an unexpected exception"
    assert code == 250, f"{code} {message}"
    if "review" in message:  # quarantined: one reason counted
        grown = [r for r in _REASONS if count(f"quarantined_{r}") > quarantined_before[r]]
        assert len(grown) == 1


_REASONS = (
    "headers_too_large",
    "too_many_headers",
    "too_deeply_nested",
    "unparsable",
    "no_sender",
    "bad_sender_address",
    "too_many_parts",
    "too_many_attachments",
)


# -- header injection ------------------------------------------------------------------------
# Pieces an attacker strings together: line breaks in every spelling, encoded-word syntax,
# header-looking text and the specials of address syntax.
HOSTILE_PIECES = [
    "\r\n",
    "\r",
    "\n",
    "\r\n\r\n",
    "\x00",
    "\x0b",
    "\x85",
    "\u2028",
    "\t",
    " ",
    "=?",
    "?=",
    "=?utf-8?q?",
    "=?utf-8?b?",
    "=0D=0A",
    "X-Injected: yes",
    "Bcc: victim@x.example",
    ":",
    "<",
    ">",
    '"',
    "\\",
    ",",
    ";",
    "@",
    "(",
    "é",
    "€",
    "Eve",
]
hostile_text = st.lists(st.sampled_from(HOSTILE_PIECES) | st.text(max_size=6), max_size=10).map(
    "".join
)


def _q_word(text: str) -> str:
    return Header(text, "utf-8", maxlinelen=10_000).encode(linesep="\r\n")


def _b_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8", "surrogatepass")).decode() + "?="


@st.composite
def header_spelling(draw: st.DrawFn, text: str) -> str:
    """``text`` written into a header raw (line breaks removed), encoded once or twice."""
    form = draw(st.sampled_from(["raw", "q", "b", "qq", "bq"]))
    if form == "raw":
        return "".join(c for c in text if c not in "\r\n\x85\u2028") or "x"
    if form == "q":
        return _q_word(text)
    if form == "b":
        return _b_word(text)
    if form == "qq":
        return _q_word(_q_word(text))
    return _b_word(_q_word(text))


UNIQUE = b"@UNIQUE@"  # replaced per run: Hypothesis replays examples, the gateway dedupes


@st.composite
def hostile_mail(draw: st.DrawFn) -> bytes:
    """A mail whose display name, subject, Message-ID and References are hostile."""
    name = draw(header_spelling(draw(hostile_text)))
    subject = draw(header_spelling(draw(hostile_text)))
    ids = draw(
        st.lists(
            st.sampled_from(["root@customer.example", "r1@customer.example"])
            | hostile_text.map(lambda t: t + "@x.example"),
            max_size=4,
        )
    )
    references = " ".join(draw(header_spelling(f"<{i}>")) for i in ids)
    if draw(st.booleans()):
        own_id = "<m.@UNIQUE@@customer.example>"
    else:
        own_id = draw(header_spelling(draw(hostile_text)))
    raw = (
        f"From: {name} <jane@customer.example>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\n"
        f"Message-ID: {own_id}\r\nReferences: {references or '<r0@customer.example>'}\r\n"
        "X-Example: @UNIQUE@\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    )
    return raw.encode("utf-8", "surrogateescape")


_runs = itertools.count()


def unique(raw: bytes) -> bytes:
    return raw.replace(UNIQUE, str(next(_runs)).encode())


# The headers a reply of ours carries (DKIM-Signature included); anything else was smuggled.
REPLY_HEADERS = frozenset(
    {
        "dkim-signature",
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "auto-submitted",
        "x-auto-response-suppress",
        "mime-version",
        "content-type",
    }
)


def assert_only_our_headers(data: bytes, dkim_record: bytes) -> None:
    """Our header block (each header once, no bare CR/LF/NUL), our MIME body, a valid DKIM
    signature — read by the stdlib parser, independently of what composed it."""
    head, blank, body = data.partition(b"\r\n\r\n")
    assert blank
    assert not any(c in head.replace(b"\r\n", b"") for c in (b"\r", b"\n", b"\x00"))
    parsed = message_from_bytes(data, policy=policy.default)
    names = [k.lower() for k in parsed]
    assert set(names) <= REPLY_HEADERS, set(names) - REPLY_HEADERS
    assert len(names) == len(set(names)), names
    assert parsed.get_content_type() == "multipart/alternative"
    assert body.startswith(b"--")
    assert dkim_verify(data, dns_record=dkim_record)


@pytest.fixture(scope="module")
def dkim_pair() -> tuple[bytes, bytes]:
    key = generate_dkim_key(2048)
    return key, dkim_dns_record(key)


@WRITER_PROFILE
@given(mail=hostile_mail())
def test_hostile_header_values_never_add_a_header_to_the_signed_reply(
    dkim_pair: tuple[bytes, bytes], mail: bytes
) -> None:
    """Parser, composer and signer: whatever the display name, subject and references,
    the reply's header block is exactly ours and its DKIM signature verifies."""
    key, record = dkim_pair
    raw = unique(mail)
    try:
        parsed = parse_email(raw)
    except HostileEmail as exc:
        event(f"refused {exc.reason}")
        return
    event(f"refusals {','.join(parsed.header_refusals) or '-'}")
    for value in (parsed.from_name or "", parsed.subject, *parsed.references):
        assert not is_unsafe(value), value
    reply = build_reply(
        from_address=SUPPORT,
        from_name="FlowBiz Assistant",
        to_address=parsed.reply_to or parsed.from_address,
        to_name=parsed.from_name,
        subject=parsed.subject,
        parent_message_id=parsed.message_id or "",
        parent_references=parsed.references,
        text="Hello, this is our answer.",
        signature="— FlowBiz",
        idempotency_key=parsed.event_id,
    )
    signer = DkimSigner.from_pem(selector="s1", domain="acme.example", private_key=key)
    signed = signer.sign(reply.data)
    assert_only_our_headers(signed, record)


_COMPAT32_CRLF = policy.compat32.clone(linesep="\r\n", max_line_length=78)


@PROFILE
@given(
    name=st.sampled_from(["Subject", "To", "References", "X-Auto-Response-Suppress"]),
    value=st.text(max_size=120) | st.text(st.characters(max_codepoint=127), max_size=90),
)
def test_the_reply_policy_writes_every_header_as_compat32_does(name: str, value: str) -> None:
    """The short-line pass-through of REPLY_WRITE changes no byte of any header."""
    try:
        expected = _COMPAT32_CRLF.fold_binary(name, value)
    except (ValueError, HeaderParseError) as exc:  # an embedded header: refused by both
        with pytest.raises(type(exc)):
            REPLY_WRITE.fold_binary(name, value)
        return
    assert REPLY_WRITE.fold_binary(name, value) == expected


@WRITER_PROFILE
@given(
    lines=st.lists(
        st.sampled_from(["--", "=_flowbiz_", "--=_flowbiz_", "=", "\u00e9", " ", "x" * 80])
        | st.text(max_size=30),
        max_size=12,
    )
)
def test_the_reply_boundary_never_occurs_in_its_parts(lines: list[str]) -> None:
    """Whatever the answer's text, the reply reads back as its two parts, the text intact:
    the fixed boundary cannot be forged from inside a quoted-printable part."""
    text = "\n".join(lines).replace("\r", "").strip() or "hello"
    idempotency_key = "k"
    # The boundary the text would have to forge: the digest of the reply's Message-ID.
    boundary = "=_flowbiz_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    reply = build_reply(
        from_address=SUPPORT,
        from_name="FlowBiz Assistant",
        to_address="jane@customer.example",
        to_name=None,
        subject="hi",
        parent_message_id="",
        parent_references=(),
        text=f"{text}\n--{boundary}\n{text}",
        signature="",
        idempotency_key=idempotency_key,
    )
    parsed = message_from_bytes(reply.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_boundary() == boundary
    plain, html_part = parsed.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    expected = f"{text}\n--{boundary}\n{text}".rstrip()
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == expected.replace("\r\n", "\n")


DKIM_ENV = "P_EMAIL_DKIM_KEY"


@pytest.fixture
async def mail_world(
    tmp_path: Path, dkim_pair: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[RunningGateway, Smarthost]]:
    monkeypatch.setenv(DKIM_ENV, dkim_pair[0].decode())
    smarthost = await Smarthost().start()
    channel = {
        "kind": "email",
        "addresses": [{"address": SUPPORT}],
        "listener": {"host": "127.0.0.1", "port": 0},
        "outbound": {"host": "127.0.0.1", "port": smarthost.port, "security": "none"},
        "dkim": {"selector": "s1", "domain": "acme.example", "private_key": f"env:{DKIM_ENV}"},
        "reply_rate": {"max_replies": 1000, "per_seconds": 1},
    }
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db", tenants=[{"id": "acme", "channels": [channel]}]
    )
    try:
        async with running_gateway(data) as gw:
            yield gw, smarthost
    finally:
        await smarthost.stop()


@settings(WRITER_PROFILE, max_examples=max(10, WRITER_PROFILE.max_examples // 3))
@given(mail=hostile_mail())
async def test_hostile_mail_through_smtp_gets_a_reply_with_only_our_headers(
    mail_world: tuple[RunningGateway, Smarthost],
    dkim_pair: tuple[bytes, bytes],
    mail: bytes,
) -> None:
    """The same, end to end: aiosmtplib → the gateway's listener → agent → smarthost."""
    gw, smarthost = mail_world
    connector = gw.runtime.connectors[Channel.EMAIL]
    assert isinstance(connector, EmailConnector)
    before = len(smarthost.received)
    sender = MailSender(*connector.listener_address("acme"))
    code, message = await sender.send(
        unique(mail), mail_from="jane@customer.example", rcpt_to=[SUPPORT]
    )
    assert code == 250, message
    if "review" in message:
        event("quarantined")
        return
    received = await smarthost.wait_for(before + 1, timeout=5)
    event("answered")
    assert_only_our_headers(received[before].data, dkim_pair[1])


# -- DKIM: the OpenSSL signer against dkimpy ----------------------------------------------------
# Header names a message may carry besides its one From (dkim.verify refuses two): signed
# ones in odd cases, repeated, and unsigned ones.
HEADER_NAMES = [
    *(h.decode() for h in DKIM_HEADERS if h != b"from"),
    "Subject",
    "Content-type",
    "Received",
    "X-Mailer",
    "List-Id",
]
header_value = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"),
    max_size=60,
).map(lambda s: s.encode())  # Latin and beyond: bytes over 0x7f as clients send them raw
body_line = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF) | st.sampled_from(" \t"),
    max_size=80,
).map(lambda s: s.encode())


@st.composite
def signable_mail(draw: st.DrawFn) -> bytes:
    """A header block of any signed or unsigned fields (folded or not) and any body."""
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    names = draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=12))
    names.insert(draw(st.integers(0, len(names))), draw(st.sampled_from(["From", "FROM", "from"])))
    lines = []
    for name in names:
        parts = draw(st.lists(header_value, min_size=1, max_size=3))
        folds = draw(st.sampled_from([b" ", b"\t", b"  "]))
        lines.append(name.encode() + b":" + (eol + folds).join(parts))
    body = draw(st.lists(body_line, max_size=12))
    tail = draw(st.sampled_from([b"", eol, eol * 3, b" " + eol]))
    return eol.join(lines) + eol + eol + eol.join(body) + tail


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, tuple[bytes, bytes, bytes]]:
    """Per algorithm: the PEM our signer takes, the key dkimpy takes, the DNS record."""
    encoding, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        encoding, pkcs8, serialization.NoEncryption()
    )
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_pem = ed.private_bytes(encoding, pkcs8, serialization.NoEncryption())
    ed_seed = ed.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return {
        "rsa-sha256": (rsa_pem, rsa_pem, dkim_dns_record(rsa_pem)),
        "ed25519-sha256": (ed_pem, base64.b64encode(ed_seed), dkim_dns_record(ed_pem)),
    }


@WRITER_PROFILE
@given(
    mail=signable_mail(),
    algorithm=st.sampled_from(["rsa-sha256", "ed25519-sha256"]),
    canon=st.tuples(*[st.sampled_from(["relaxed", "simple"])] * 2),
    extra=st.lists(st.sampled_from([h.decode() for h in DKIM_HEADERS]), max_size=4),
)
def test_openssl_signer_writes_dkimpys_signature_and_dkimpy_verifies_it(
    signing_keys: dict[str, tuple[bytes, bytes, bytes]],
    mail: bytes,
    algorithm: str,
    canon: tuple[Canonicalization, Canonicalization],
    extra: list[str],
) -> None:
    """Any headers, any body, either canonicalisation, headers signed more than once: the
    header is byte-identical to dkim.sign's for the same t= (RSASSA-PKCS1-v1_5 and Ed25519
    are deterministic), and dkim.verify accepts the signed message."""
    our_key, dkimpy_key, record = signing_keys[algorithm]
    include = (b"from", *(h.encode() for h in extra))
    reference: bytes = dkim.sign(
        mail,
        b"s1",
        b"acme.example",
        dkimpy_key,
        canonicalize=(canon[0].encode(), canon[1].encode()),
        signature_algorithm=algorithm.encode(),
        include_headers=list(include),
    )
    stamp = int(parse_tag_value(reference.split(b":", 1)[1])[b"t"])
    signer = DkimSigner.from_pem(
        selector="s1",
        domain="acme.example",
        private_key=our_key,
        header_canon=canon[0],
        body_canon=canon[1],
        include_headers=include,
    )
    ours = signer.signature_header(mail, timestamp=stamp)
    assert ours == reference
    assert dkim_verify(ours + mail, dns_record=record)
    event(f"{algorithm} {'/'.join(canon)}")


# -- files and choice links -----------------------------------------------------------------------
_SEAL = ActionSeal(derive_action_keys([b"prop-action-key"]))
_TICKET = ActionTicket(
    tenant="acme",
    root="root.1@customer.example",
    value="opening hours",
    label="Opening hours",
    expires=4_000_000_000,
    address=SUPPORT,
    parent="p.1@acme.example",
    customer="jane@customer.example",
    name="Jane",
    subject="Hello",
)
_TOKEN = _SEAL.seal(_TICKET)
_URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="


@PROFILE
@given(
    position=st.integers(min_value=0, max_value=len(_TOKEN) - 1),
    replacement=st.sampled_from(_URLSAFE),
    cut=st.integers(min_value=0, max_value=8),
    extra=st.text(alphabet=_URLSAFE, max_size=8),
)
def test_a_changed_choice_token_never_opens(
    position: int, replacement: str, cut: int, extra: str
) -> None:
    """Any character changed, any end cut or added: refused ``forged``, never a ticket."""
    changed = _TOKEN[:position] + replacement + _TOKEN[position + 1 :]
    changed = (changed[: len(changed) - cut] if cut else changed) + extra
    if changed == _TOKEN:
        assert _SEAL.open(changed) == _TICKET
        return
    outcome: ActionTicket | str
    try:
        outcome = _SEAL.open(changed)
    except ActionRefused as refused:
        outcome = refused.reason
    if outcome == "forged":
        return
    # Base64 padding bits: a change the decoder ignores leaves the very same token bytes.
    assert outcome == _TICKET
    assert base64.urlsafe_b64decode(changed + "==") == base64.urlsafe_b64decode(_TOKEN + "==")


@settings(WRITER_PROFILE, max_examples=max(10, WRITER_PROFILE.max_examples // 5))
@given(
    files=st.lists(
        st.tuples(
            st.binary(max_size=200),
            st.text(max_size=60) | st.sampled_from(["image/png", "text/html\r\nBcc: x@y"]),
            st.none() | st.text(max_size=80) | st.just("a\r\nBcc: x@evil.example"),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_files_never_add_a_header_and_come_back_byte_for_byte(
    files: list[tuple[bytes, str, str | None]],
) -> None:
    """Whatever a file's bytes, type and name, each part holds only our headers, one line
    each, and decodes to the bytes given."""
    reply = build_reply(
        from_address=SUPPORT,
        from_name="FlowBiz Assistant",
        to_address="jane@customer.example",
        to_name=None,
        subject="files",
        parent_message_id="",
        parent_references=(),
        text="see attached",
        signature="",
        idempotency_key="k",
        files=[MailFile(data, ctype, name) for data, ctype, name in files],
    )
    parsed = message_from_bytes(reply.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    parts = list(parsed.iter_attachments())
    assert len(parts) == len(files)
    for part, (data, _, _) in zip(parts, files, strict=True):
        assert set(part.keys()) == {
            "Content-Type",
            "Content-Transfer-Encoding",
            "Content-Disposition",
        }
        assert part.get_payload(decode=True) == data
        name = part.get_filename()
        assert name is not None
        assert not is_unsafe(name)
