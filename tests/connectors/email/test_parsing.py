"""Parsing real-world and hostile mail: text choice, charsets, quotes, attachments, limits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.email.parsing import HostileEmail, Limits, html_to_text, parse_email
from tests.connectors.email.conftest import SUPPORT, EmailWorld

HEAD = (
    b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <juergen@kunde.example>\r\n"
    b"To: support@acme.example\r\nSubject: =?iso-8859-1?q?Gr=FC=DFe?=\r\n"
    b"Message-ID: <m1@kunde.example>\r\nMIME-Version: 1.0\r\n"
)


def test_plain_text_is_preferred_over_html() -> None:
    """multipart/alternative: the text/plain part is the message text."""
    raw = HEAD + (
        b'Content-Type: multipart/alternative; boundary="a"\r\n\r\n'
        b"--a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain version\r\n"
        b"--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html version</p>\r\n--a--\r\n"
    )
    parsed = parse_email(raw)
    assert parsed.text == "plain version"
    assert parsed.from_name == "Jürgen Müller"
    assert parsed.subject == "Grüße"


def test_html_only_mail_becomes_text_without_the_quoted_blockquote() -> None:
    """HTML-only mail is turned into text; scripts, styles and the quoted part are dropped."""
    html = (
        "<html><head><style>p{color:red}</style></head><body><div>Hi,<br>what are the"
        " <b>prices</b>&nbsp;&amp; plans?</div><ul><li>one</li><li>two</li></ul>"
        "<script>alert(1)</script><blockquote>old quoted text</blockquote></body></html>"
    )
    text = html_to_text(html)
    assert text == "Hi,\nwhat are the prices & plans?\n\n- one\n- two"


@pytest.mark.parametrize(
    ("charset", "encoded"),
    [
        ("iso-8859-1", "Grüße aus Köln".encode("iso-8859-1")),
        ("windows-1252", "\u201cquoted\u201d \u2013 dash".encode("windows-1252")),
        ("shift_jis", "こんにちは".encode("shift_jis")),
        ("x-unknown-charset", "naïve".encode()),  # unknown name: read as UTF-8
    ],
)
def test_charsets_are_decoded(charset: str, encoded: bytes) -> None:
    """Declared charsets are honoured; an unknown one falls back to UTF-8."""
    raw = HEAD + f"Content-Type: text/plain; charset={charset}\r\n".encode()
    raw += b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(encoded)
    parsed = parse_email(raw)
    expected = encoded.decode("utf-8" if charset.startswith("x-") else charset)
    assert parsed.text == expected


def test_attachments_are_metadata_and_a_compressed_bomb_is_never_expanded() -> None:
    """Attachments keep name/type/size and their place; a gzip of 50 MB of zeros stays its
    stored size, and over the channel's limit it is refused with its bytes dropped."""
    bomb = gzip.compress(b"\0" * 50_000_000)
    raw = HEAD + (
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
        b"--m\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--m\r\nContent-Type: application/gzip\r\n"
        b'Content-Disposition: attachment; filename="logs.gz"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(bomb)
        + b"--m\r\nContent-Type: image/png\r\nContent-Disposition: inline; filename=a.png\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"\x89PNG" * 10)
        + b"--m--\r\n"
    )
    parsed = parse_email(raw, limits=Limits(max_attachment_bytes=20_000))
    assert parsed.text == "see attached"
    gz, png = parsed.attachments
    assert (gz.name, gz.mime_type, gz.size, gz.kind) == (
        "logs.gz",
        "application/gzip",
        len(bomb),
        "file",
    )
    assert gz.extra == {"part": 0, "over_limit": True}
    assert gz.refused == "too_large"
    assert (png.kind, png.size, png.extra, png.refused) == ("image", 40, {"part": 1}, None)
    assert parsed.attachment_data == (None, b"\x89PNG" * 10)


def test_reply_without_references_uses_in_reply_to() -> None:
    """RFC 5322 §3.6.4: a single In-Reply-To id stands in for missing References."""
    raw = (
        b"From: a@x.example\r\nTo: support@acme.example\r\nSubject: Re: x\r\n"
        b"In-Reply-To: <p1@acme.example>\r\n\r\nok\r\n"
    )
    parsed = parse_email(raw)
    assert parsed.references == ("p1@acme.example",)
    assert parsed.message_id is None
    assert parsed.event_id.startswith("sha256:")


def _nested(depth: int) -> bytes:
    body = b""
    for i in range(depth):
        body += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
    body += b"Content-Type: text/plain\r\n\r\nhi\r\n"
    for i in reversed(range(depth)):
        body += b"--b%d--\r\n" % i
    return HEAD + body


HOSTILE = [
    ("too_deeply_nested", _nested(3000)),  # would blow the stdlib parser's recursion
    ("headers_too_large", HEAD + b"X-Junk: a" + (b"\r\n " + b"a" * 900) * 300 + b"\r\n\r\nhi\r\n"),
    ("too_many_headers", HEAD + b"X-H: 1\r\n" * 2000 + b"\r\nhi\r\n"),
    (
        "too_many_parts",
        HEAD
        + b'Content-Type: multipart/mixed; boundary="z"\r\n\r\n'
        + b"--z\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 500
        + b"--z--\r\n",
    ),
    ("no_sender", b"To: support@acme.example\r\nSubject: hi\r\n\r\nno from\r\n"),
    ("no_sender", b"\x00\xff\xfe garbage \r\n\r\n\x00"),
]


@pytest.mark.parametrize(
    ("reason", "raw"), HOSTILE, ids=[f"{r}-{n}" for n, (r, _) in enumerate(HOSTILE)]
)
def test_hostile_messages_are_refused_with_a_reason(reason: str, raw: bytes) -> None:
    """Each kind of hostile input raises HostileEmail with its reason, never anything else."""
    with pytest.raises(HostileEmail) as caught:
        parse_email(raw)
    assert caught.value.reason == reason


MALFORMED_BUT_READABLE = [
    # Missing closing boundary, bad base64, broken encoded-word, 8-bit headers, no Content-Type.
    HEAD + b'Content-Type: multipart/mixed; boundary="q"\r\n\r\n--q\r\nContent-Type: text/plain'
    b"\r\n\r\nunterminated\r\n",
    HEAD + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notb64@@\r\n",
    b"From: =?utf-8?b?broken?= <x@y.example>\r\nSubject: =?bogus?q?x?=\r\n\r\nbody\r\n",
    b"From: \xc3\xa9l\xe9ne <helene@y.example>\r\nSubject: caf\xe9\r\n\r\ncaf\xe9\r\n",
    b"From: a@y.example\r\nContent-Type: multipart/alternative\r\n\r\nno boundary given\r\n",
    b"From: a@y.example\r\nMessage-ID: <<<>>>\r\nReferences: <a> <<b>> garbage\r\n\r\nx\r\n",
]


@pytest.mark.parametrize("raw", MALFORMED_BUT_READABLE)
def test_malformed_but_readable_mime_is_still_parsed(raw: bytes) -> None:
    """Broken MIME that still has a sender and a body is read, not dropped."""
    parsed = parse_email(raw)
    assert "@" in parsed.from_address


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=3000),
    st.sampled_from(
        [HEAD, b"", HEAD + b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n']
    ),
)
def test_arbitrary_bytes_never_crash_the_parser(body: bytes, head: bytes) -> None:
    """Whatever the bytes, the parser returns a message or a HostileEmail verdict."""
    with contextlib.suppress(HostileEmail):
        parse_email(head + body)


async def test_hostile_mail_through_smtp_is_quarantined_and_good_mail_still_flows(
    world: EmailWorld,
) -> None:
    """Hostile mail is accepted into quarantine with its reason; the next good mail is answered."""
    for reason, raw in HOSTILE[:4]:
        code, _ = await world.sender.send(
            raw.replace(b"support@acme.example", SUPPORT.encode()),
            mail_from="x@kunde.example",
            rcpt_to=[SUPPORT],
        )
        assert code == 250, reason
    quarantined = await world.connector.quarantined("acme")
    assert [q["reason"] for q in quarantined] == [r for r, _ in HOSTILE[:4]]
    assert quarantined[0]["raw"].startswith("From: ")
    msg = world.sender.compose(
        from_addr="jane@customer.example",
        from_name="Jane",
        to=SUPPORT,
        subject="after",
        text="hello",
    )
    assert (await world.sender.send(msg))[0] == 250
    [reply] = await world.smarthost.wait_for(1)
    assert str(reply.message["Subject"]) == "Re: after"
    await asyncio.sleep(0.2)
    assert world.inbound("accepted") == 1
