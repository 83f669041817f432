"""The email parser and the SMTP listener against garbage and mutated real mail.

``parse_email`` returns a ParsedEmail or raises HostileEmail with a reason — nothing else.
Through the real SMTP listener, any message is answered 250 (accepted, suppressed or
quarantined for review) and never with the listener's "unexpected failure" deferral; each
quarantine is counted as ``flowbiz_channel_events_total{event="quarantined_<reason>"}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from connectors.email.connector import EmailConnector
from connectors.email.emulator import MailSender
from connectors.email.parsing import HostileEmail, ParsedEmail, parse_email
from gateway.models import Channel
from tests.harness import RunningGateway, base_config, running_gateway
from tests.properties.conftest import PROFILE

SUPPORT = "support@acme.example"
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
    event("parsed")


@pytest.fixture
async def mail_gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    channel = {
        "kind": "email",
        "addresses": [{"address": SUPPORT}],
        "listener": {"host": "127.0.0.1", "port": 0},
        "outbound": {"host": "127.0.0.1", "port": 9, "security": "none"},
    }
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db", tenants=[{"id": "acme", "channels": [channel]}]
    )
    async with running_gateway(data, role="web") as gw:
        yield gw


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
