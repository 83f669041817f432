"""Header injection: a stranger's mail must never write a header of our DKIM-signed reply.

Each attack is real mail sent with aiosmtplib into the gateway's aiosmtpd listener; the
reply is read at the smarthost emulator. A reply passes when its header block holds
exactly the headers we write (each once), its body is our MIME body, and its DKIM
signature verifies.
"""

from __future__ import annotations

import asyncio

import pytest

from connectors.email.compose import build_reply
from connectors.email.emulator import RelayedMail, dkim_verify
from connectors.email.headers import HeaderBlockRefused, verify_header_block
from connectors.email.parsing import parse_email
from tests.connectors.email.conftest import SUPPORT, EmailWorld

EVE = "eve@evil.example"
# The headers a reply of ours carries; anything else in the header block was smuggled in.
OUR_HEADERS = frozenset(
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


def header_names(data: bytes) -> list[str]:
    """The names of the top-level header lines, lower-cased, in order."""
    head, blank, _ = data.partition(b"\r\n\r\n")
    assert blank, "no end of the header block"
    names = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue  # a folded continuation
        name, colon, _ = line.partition(b":")
        assert colon, f"a header line without a name: {line!r}"
        names.append(name.decode("ascii", "replace").strip().lower())
    return names


def assert_reply_is_ours(relayed: RelayedMail, dkim_record: bytes) -> None:
    data = relayed.data
    head, _, body = data.partition(b"\r\n\r\n")
    for forbidden in (b"\x00", b"\r\r", b"\n\n"):
        assert forbidden not in head, forbidden
    assert head.count(b"\r") == head.count(b"\n"), "a bare CR or LF in the header block"
    names = header_names(data)
    assert set(names) <= OUR_HEADERS, set(names) - OUR_HEADERS
    assert len(names) == len(set(names)), f"a header written twice: {names}"
    assert {"from", "to", "subject", "message-id", "content-type"} <= set(names)
    assert relayed.message.get_content_type() == "multipart/alternative"
    assert body.startswith(b"--"), "the body does not start with our MIME boundary"
    text = relayed.text()
    assert text.startswith("Hello "), text[:200]
    assert "\n-- \n— FlowBiz Assistant" in text
    assert dkim_verify(data, dns_record=dkim_record)


def mail(headers: bytes, *, body: bytes = b"hello there\r\n") -> bytes:
    base = b"To: support@acme.example\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    return headers + base + b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body


async def send_and_receive(world: EmailWorld, raw: bytes) -> RelayedMail:
    code, answer = await world.sender.send(raw, mail_from=EVE, rcpt_to=[SUPPORT])
    assert code == 250, answer
    [relayed] = await world.smarthost.wait_for(1, timeout=5)
    return relayed


async def test_attack_encoded_crlf_in_display_name_adds_no_header(
    world: EmailWorld, dkim_record: bytes
) -> None:
    """``From: =?utf-8?q?Eve=0D=0AX-Injected=3A_yes=0D=0A=0D=0A...?=`` wrote a header and
    the start of the body of our signed reply."""
    raw = mail(
        b"From: =?utf-8?q?Eve=0D=0AX-Injected=3A_yes=0D=0A=0D=0APay_now?= <eve@evil.example>\r\n"
        b"Subject: invoice\r\nMessage-ID: <name.1@evil.example>\r\n"
    )
    relayed = await send_and_receive(world, raw)
    assert_reply_is_ours(relayed, dkim_record)
    assert relayed.message["X-Injected"] is None
    assert relayed.rcpt_tos == (EVE,)
    assert relayed.message["To"].addresses[0].addr_spec == EVE
    assert world.event("header_cleaned_from_name") == 1


async def test_attack_quoted_display_name_with_encoded_crlf_adds_no_header(
    world: EmailWorld, dkim_record: bytes
) -> None:
    """The same smuggled through a quoted display name (the parser decodes it there too)."""
    raw = mail(
        b'From: "Eve, =?utf-8?q?=0D=0AX-Injected=3A_yes?=" <eve@evil.example>\r\n'
        b"Subject: invoice\r\nMessage-ID: <name.2@evil.example>\r\n"
    )
    relayed = await send_and_receive(world, raw)
    assert_reply_is_ours(relayed, dkim_record)
    assert relayed.message["X-Injected"] is None


@pytest.mark.parametrize(
    "subject",
    [
        # Encoded once: the parser's decoding yields the CR/LF.
        b"=?utf-8?q?hi=0D=0AX-Injected=3A_yes=0D=0A=0D=0APay_now?=",
        # Encoded twice: decoded once inbound, the text is itself an encoded-word that
        # the stdlib generator decodes again while folding our Subject.
        b"=?utf-8?q?hi_=3D=3Futf-8=3Fq=3F=3D0D=3D0AX-Injected=3D3A=5Fyes=3F=3D?=",
        b"=?utf-8?b?aGkgPT91dGYtOD9xPz0wRD0wQVgtSW5qZWN0ZWQ9M0FfeWVzPz0=?=",
    ],
    ids=["encoded", "double-encoded-q", "double-encoded-b"],
)
async def test_attack_encoded_crlf_in_subject_adds_no_header(
    world: EmailWorld, dkim_record: bytes, subject: bytes
) -> None:
    raw = mail(b"From: Eve <eve@evil.example>\r\nSubject: " + subject + b"\r\n")
    relayed = await send_and_receive(world, raw)
    assert_reply_is_ours(relayed, dkim_record)
    assert relayed.message["X-Injected"] is None
    assert str(relayed.message["Subject"]).startswith("Re: hi")


async def test_attack_encoded_crlf_in_message_id_adds_no_header(
    world: EmailWorld, dkim_record: bytes
) -> None:
    """A Message-ID that decodes to ``a@b CRLF X-Injected: yes``: answered, not threaded to it."""
    raw = mail(
        b"From: Eve <eve@evil.example>\r\nSubject: ids\r\n"
        b"Message-ID: =?utf-8?q?evil@evil.example=0D=0AX-Injected:yes?=\r\n"
    )
    relayed = await send_and_receive(world, raw)
    assert_reply_is_ours(relayed, dkim_record)
    assert relayed.message["X-Injected"] is None
    assert relayed.message["In-Reply-To"] is None
    assert world.event("header_refused_message_id") == 1


async def test_attack_double_encoded_id_in_in_reply_to_adds_no_header(
    world: EmailWorld, dkim_record: bytes
) -> None:
    """An id that is itself an encoded-word after one decoding (the generator decodes it
    again while folding In-Reply-To)."""
    raw = mail(
        b"From: Eve <eve@evil.example>\r\nSubject: ids\r\n"
        b"Message-ID: =?utf-8?q?<a=3D=3Futf-8=3Fq=3F=3D0D=3D0AX-Injected:=5Fyes=3F=3D@x>?=\r\n"
    )
    relayed = await send_and_receive(world, raw)
    assert_reply_is_ours(relayed, dkim_record)
    assert relayed.message["X-Injected"] is None


@pytest.mark.parametrize(
    "references",
    [
        b"<root@customer.example> <a=?utf-8?q?=0D=0AX-Injected:_yes?=@x>",
        b"=?utf-8?q?<root@customer.example>_<a=3D=3Futf-8=3Fq=3F=3D0D=3D0AX-Injected:"
        b"=5Fyes=3F=3D@x>?=",
        b"<root@customer.example>\r\n =?utf-8?q?<a@x>=0D=0AX-Injected:_yes?=",
    ],
    ids=["raw-encoded-word-in-id", "double-encoded", "encoded-crlf-between-ids"],
)
async def test_attack_encoded_crlf_in_references_adds_no_header(
    world: EmailWorld, dkim_record: bytes, references: bytes
) -> None:
    raw = mail(
        b"From: Eve <eve@evil.example>\r\nSubject: refs\r\n"
        b"Message-ID: <refs.1@evil.example>\r\nReferences: " + references + b"\r\n"
    )
    relayed = await send_and_receive(world, raw)
    assert_reply_is_ours(relayed, dkim_record)
    assert relayed.message["X-Injected"] is None
    assert str(relayed.message["In-Reply-To"]) == "<refs.1@evil.example>"
    assert "<root@customer.example>" in str(relayed.message["References"])


async def test_attack_encoded_crlf_in_sender_address_is_quarantined_not_answered(
    world: EmailWorld,
) -> None:
    """A From address whose quoted local part decodes to CR/LF is no address: the message
    is accepted for review (quarantined with a reason, counted), and nobody is mailed."""
    raw = mail(
        b'From: Eve <"=?utf-8?q?eve=0D=0AX-Injected:_yes?="@evil.example>\r\n'
        b"Subject: hi\r\nMessage-ID: <addr.1@evil.example>\r\n"
    )
    code, answer = await world.sender.send(raw, mail_from=EVE, rcpt_to=[SUPPORT])
    assert (code, answer) == (250, "2.6.0 Message accepted for review")
    [entry] = await world.connector.quarantined("acme")
    assert entry["reason"] == "bad_sender_address"
    assert world.event("quarantined_bad_sender_address") == 1
    await asyncio.sleep(0.3)
    assert world.smarthost.received == []


async def test_attack_hostile_reply_to_is_ignored_and_the_reply_goes_to_from(
    world: EmailWorld, dkim_record: bytes
) -> None:
    """An unusable Reply-To is refused (counted); the author in From still gets the answer."""
    raw = mail(
        b"From: Eve <eve@evil.example>\r\nSubject: reply-to\r\n"
        b'Reply-To: "=?utf-8?q?x=0D=0AX-Injected:_yes?="@evil.example\r\n'
        b"Message-ID: <rt.1@evil.example>\r\n"
    )
    relayed = await send_and_receive(world, raw)
    assert_reply_is_ours(relayed, dkim_record)
    assert relayed.rcpt_tos == (EVE,)
    assert world.event("header_refused_reply_to") == 1


@pytest.mark.parametrize(
    "to_address",
    ["eve@evil.example\r\nRCPT TO:<x@y.example>", "eve\x00@evil.example", '"a b"@evil.example'],
)
def test_attack_reply_to_an_invalid_address_is_refused_when_composing(to_address: str) -> None:
    """A stored context from before the inbound checks cannot make us write a bad address:
    composing refuses it (the connector turns that into a dead letter, code bad_address)."""
    with pytest.raises(ValueError, match="address"):
        build_reply(
            from_address=SUPPORT,
            from_name="FlowBiz Assistant",
            to_address=to_address,
            to_name="Eve",
            subject="hi",
            parent_message_id="a@b.example",
            parent_references=(),
            text="ours",
            signature="",
            idempotency_key="k",
        )


def test_parsed_header_values_are_stored_clean() -> None:
    """Display name, subject and thread ids kept in the InboundMessage carry no CR, LF, NUL
    and no encoded-word that a later header write would decode."""
    parsed = parse_email(
        mail(
            b"From: =?utf-8?q?Eve=0D=0AX-Injected=3A_yes=00?= <Eve@Evil.example>\r\n"
            b"Subject: =?utf-8?q?hi_=3D=3Futf-8=3Fq=3F=3D0D=3D0A=3F=3D=0D=0Athere?=\r\n"
            b"Message-ID: <ok.1@evil.example>\r\n"
            b"References: <root@x.example> <a=?utf-8?q?=0D=0A?=@x> <bad\x00@x>\r\n"
        )
    )
    assert parsed.from_address == EVE
    assert parsed.from_name == "Eve X-Injected: yes"
    assert parsed.subject == "hi = ?utf-8?q?=0D=0A?= there"
    assert parsed.references == ("root@x.example",)
    assert parsed.header_refusals == ("references",)


@pytest.mark.parametrize(
    "head",
    [
        b"From: a@b.example\r\nX-Injected: yes\r\nTo: c@d.example",
        b"From: a@b.example\r\nTo: c@d.example\rX-Injected: yes",
        b"From: a@b.example\r\nTo: c@d.example\nX-Injected: yes",
        b"From: a@b.example\r\nTo: c@d\x00.example",
        b"From: a@b.example\r\nFrom: c@d.example",
        b"From: a@b.example\r\nnot a header",
    ],
    ids=["extra-header", "bare-cr", "bare-lf", "nul", "twice", "no-name"],
)
def test_attack_a_smuggled_header_line_is_caught_before_signing(head: bytes) -> None:
    """The last line of defence, whatever the stdlib's folder lets through: a header block
    that is not exactly the one we wrote is refused, so it is never signed or sent."""
    with pytest.raises(HeaderBlockRefused):
        verify_header_block(head + b"\r\n\r\nbody\r\n", ["From", "To"])
    verify_header_block(
        b"From: a@b.example\r\nTo: c@d.example\r\n folded\r\n\r\nbody", ["From", "To"]
    )
