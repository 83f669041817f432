"""Loop protection (RFC 3834) both ways, the per-thread reply cap, and outbound failures."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from connectors.email.emulator import Smarthost, dkim_verify, generate_tls_certificate
from gateway.deadletters import list_dead_letters
from tests.connectors.email.conftest import SUPPORT, EmailWorld, email_world
from tests.harness import eventually

JANE = "jane@customer.example"

AUTOMATIC = [
    ("auto_submitted", {"Auto-Submitted": "auto-replied"}, None),
    ("auto_submitted", {"Auto-Submitted": "auto-generated; owner-email=x@y.example"}, None),
    ("mailing_list", {"List-Id": "<announce.lists.example>"}, None),
    ("mailing_list", {"List-Unsubscribe": "<mailto:leave@lists.example>"}, None),
    ("precedence_bulk", {"Precedence": "bulk"}, None),
    ("precedence_list", {"Precedence": "list"}, None),
    ("precedence_junk", {"Precedence": "junk"}, None),
    ("auto_response_suppressed", {"X-Auto-Response-Suppress": "OOF, AutoReply"}, None),
    ("auto_response_suppressed", {"X-Auto-Response-Suppress": "All"}, None),
    ("null_return_path", {"Return-Path": "<>"}, None),
    ("null_return_path", {}, ""),  # MAIL FROM:<>
    ("automatic_sender", {}, "MAILER-DAEMON@mx.customer.example"),
]


async def test_automatic_mail_is_never_answered_but_recorded(world: EmailWorld) -> None:
    """Each RFC 3834 rule: the mail is accepted (250), recorded as suppressed, not answered."""
    for n, (reason, headers, mail_from) in enumerate(AUTOMATIC):
        msg = world.sender.compose(
            from_addr=JANE,
            from_name="Jane",
            to=SUPPORT,
            subject=f"Automatic reply {n}",
            text="hello",
            headers=headers,
        )
        code, _ = await world.sender.send(msg, mail_from=mail_from)
        assert code == 250, reason
        assert world.event(f"suppressed_{reason}") >= 1, reason
    # A human mail afterwards is answered: the rules did not just stop everything.
    await world.sender.send(
        world.sender.compose(
            from_addr=JANE, from_name="Jane", to=SUPPORT, subject="human", text="hello"
        )
    )
    [reply] = await world.smarthost.wait_for(1)
    assert str(reply.message["Subject"]) == "Re: human"
    await asyncio.sleep(0.3)
    assert len(world.smarthost.received) == 1
    suppressed = await world.connector.suppressed("acme")
    assert len(suppressed) == len(AUTOMATIC)
    assert world.inbound("accepted") == 1


async def test_delivery_report_is_not_answered(world: EmailWorld) -> None:
    """A bounce (multipart/report, no Auto-Submitted, as Exchange sends them) gets no reply."""
    bounce = (
        b"From: Mail Delivery System <postmaster@mx.customer.example>\r\n"
        b"To: support@acme.example\r\nSubject: Undeliverable: Re: hello\r\n"
        b"Message-ID: <bounce.1@mx.customer.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.customer.example\r\n\r\n"
        b"Final-Recipient: rfc822; x@customer.example\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n\r\n--b1--\r\n"
    )
    code, _ = await world.sender.send(
        bounce, mail_from="postmaster@mx.customer.example", rcpt_to=[SUPPORT]
    )
    assert code == 250
    assert world.event("suppressed_delivery_report") == 1
    await asyncio.sleep(0.3)
    assert world.smarthost.received == []


async def test_our_own_reply_coming_back_is_not_answered(world: EmailWorld) -> None:
    """Our reply redirected back into the listener (a forwarding loop) is recognised."""
    await world.sender.send(
        world.sender.compose(
            from_addr=JANE, from_name="Jane", to=SUPPORT, subject="loop", text="hello"
        )
    )
    [reply] = await world.smarthost.wait_for(1)
    # Strip Auto-Submitted so only the Message-ID and From give it away.
    data = reply.data.replace(b"Auto-Submitted: auto-replied\r\n", b"")
    data = data.replace(f"To: Jane <{JANE}>".encode(), f"To: {SUPPORT}".encode())
    code, _ = await world.sender.send(data, mail_from="relay@customer.example", rcpt_to=[SUPPORT])
    assert code == 250
    assert world.event("suppressed_own_message") == 1
    assert world.event("suppressed_own_address") == 1
    await asyncio.sleep(0.3)
    assert len(world.smarthost.received) == 1


async def test_reply_rate_cap_stops_a_bot_ping_pong(
    tmp_path: Path, smarthost: Smarthost, dkim_env: None
) -> None:
    """A bot that answers every reply (without loop headers) gets only `max_replies` answers."""
    async with email_world(
        f"sqlite:///{tmp_path}/gw.db",
        smarthost,
        reply_rate={"max_replies": 2, "per_seconds": 3600},
    ) as world:
        msg = world.sender.compose(
            from_addr="bot@other.example",
            from_name="Other Bot",
            to=SUPPORT,
            subject="ping",
            text="hello",
        )
        await world.sender.send(msg)
        for n in range(4):
            received = await world.smarthost.wait_for(min(n + 1, 2))
            msg = world.sender.reply_to(
                received[-1].message,
                from_addr="bot@other.example",
                from_name="Other Bot",
                text="hello",
            )
            await world.sender.send(msg)
        store, keyspace = world.gateway.runtime.store, world.gateway.runtime.keyspace
        assert store is not None
        letters = await eventually(
            lambda: _letters_with(store, keyspace, "reply_rate_capped", 3), timeout=10
        )
        assert len(world.smarthost.received) == 2
        assert all("reply rate cap" in letter.reason for letter in letters)


async def _letters_with(store, keyspace, code, count):  # type: ignore[no-untyped-def]
    letters = [letter for _, letter in await list_dead_letters(store, keyspace)]
    found = [letter for letter in letters if letter.code == code]
    return found if len(found) >= count else None


async def test_smarthost_4xx_is_retried_and_delivered_once(world: EmailWorld) -> None:
    """451 twice at DATA, then accepted: one reply delivered, no dead letter."""
    world.smarthost.fail_next(2, reply="451 4.7.1 Greylisted, try again")
    await world.sender.send(
        world.sender.compose(
            from_addr=JANE, from_name="Jane", to=SUPPORT, subject="retry", text="hello"
        )
    )
    [reply] = await world.smarthost.wait_for(1)
    assert world.smarthost.attempts == 3
    assert str(reply.message["Subject"]) == "Re: retry"
    store = world.gateway.runtime.store
    assert store is not None
    assert await list_dead_letters(store, world.gateway.runtime.keyspace) == []


async def test_smarthost_421_at_rcpt_is_retried(world: EmailWorld) -> None:
    """A 421 (service closing) at RCPT is transient too."""
    world.smarthost.fail_next(1, reply="421 4.3.2 Service shutting down", stage="rcpt")
    await world.sender.send(
        world.sender.compose(
            from_addr=JANE, from_name="Jane", to=SUPPORT, subject="retry", text="hello"
        )
    )
    await world.smarthost.wait_for(1)
    assert (
        world.gateway.runtime.metrics.registry.get_sample_value(
            "flowbiz_delivery_retries_total", {"channel": "email"}
        )
        == 1
    )


@pytest.mark.parametrize("stage", ["rcpt", "data"])
async def test_smarthost_5xx_dead_letters_with_the_server_reply(
    world: EmailWorld, stage: str
) -> None:
    """550 from the smarthost is permanent: dead-lettered at once, the reply text kept."""
    world.smarthost.fail_next(
        1,
        reply="550 5.1.1 <jane@customer.example>: mailbox unavailable",
        stage=stage,  # type: ignore[arg-type]  # parametrised with the Literal's values
    )
    await world.sender.send(
        world.sender.compose(
            from_addr=JANE, from_name="Jane", to=SUPPORT, subject="fail", text="hello"
        )
    )
    store, keyspace = world.gateway.runtime.store, world.gateway.runtime.keyspace
    assert store is not None
    [letter] = await eventually(lambda: _letters_with(store, keyspace, "rejected", 1))
    assert letter.platform_code == "550"
    assert "5.1.1" in letter.reason
    assert "mailbox unavailable" in letter.reason
    assert letter.attempts == 1
    assert world.smarthost.received == []


async def test_starttls_and_auth_on_both_sides(
    tmp_path: Path, dkim_env: None, monkeypatch: pytest.MonkeyPatch, dkim_record: bytes
) -> None:
    """Inbound over STARTTLS (required); outbound with STARTTLS + AUTH to the smarthost."""
    cert, key = generate_tls_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    relay = await Smarthost(tls_context=server_tls, credentials=("relay-user", "relay-pw")).start()
    monkeypatch.setenv("TEST_RELAY_PASSWORD", "relay-pw")
    try:
        async with email_world(
            f"sqlite:///{tmp_path}/gw.db",
            relay,
            listener={
                "host": "127.0.0.1",
                "port": 0,
                "tls_cert_file": str(cert),
                "tls_key_file": str(key),
                "require_starttls": True,
            },
            outbound={
                "host": "127.0.0.1",
                "port": relay.port,
                "security": "starttls",
                "validate_certs": False,
                "username": "relay-user",
                "password": "env:TEST_RELAY_PASSWORD",
            },
        ) as world:
            msg = world.sender.compose(
                from_addr=JANE, from_name="Jane", to=SUPPORT, subject="tls", text="hello"
            )
            plain_code, _ = await world.sender.send(msg)
            assert plain_code == 530  # must issue STARTTLS first
            world.sender.tls = True
            assert (await world.sender.send(msg))[0] == 250
            [reply] = await relay.wait_for(1)
            assert relay.logins == ["relay-user"]
            assert relay.tls_sessions == 1
            assert dkim_verify(reply.data, dns_record=dkim_record)
    finally:
        await relay.stop()
