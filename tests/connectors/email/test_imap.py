"""IMAP inbound against a real Dovecot: IDLE, polling, flags after ingest, restarts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aioimaplib
import pytest

from connectors.email.emulator import MailSender, Smarthost
from gateway.models import Channel
from tests.connectors.email.conftest import EmailWorld, email_world
from tests.connectors.email.dovecot import PASSWORD, USER, Dovecot, start_dovecot
from tests.harness import eventually

PASSWORD_ENV = "TEST_IMAP_PASSWORD"


@pytest.fixture
def dovecot(monkeypatch: pytest.MonkeyPatch) -> Iterator[Dovecot]:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    server = start_dovecot()
    yield server
    server.stop()


@pytest.fixture
async def mailbox(dovecot: Dovecot) -> AsyncIterator[aioimaplib.IMAP4]:
    """A second IMAP session, as the mail server's delivery agent and as an inspector."""
    client = aioimaplib.IMAP4("127.0.0.1", dovecot.port, timeout=5)
    await client.wait_hello_from_server()
    await client.login(USER, PASSWORD)
    await client.select("INBOX")
    yield client
    await client.logout()


def imap_block(dovecot: Dovecot, **overrides: Any) -> dict[str, Any]:
    block = {
        "host": "127.0.0.1",
        "port": dovecot.port,
        "security": "none",
        "username": USER,
        "password": f"env:{PASSWORD_ENV}",
        "reconnect_seconds": 0.2,
        "poll_seconds": 0.2,
    }
    block.update(overrides)
    return block


async def deliver(mailbox: aioimaplib.IMAP4, subject: str, n: int) -> None:
    msg = MailSender("127.0.0.1", 0).compose(
        from_addr="jane@customer.example",
        from_name="Jane",
        to=USER,
        subject=subject,
        text="what are your prices?",
        message_id=f"<imap.{n}@customer.example>",
    )
    response = await mailbox.append(msg.as_bytes(), mailbox="INBOX")
    assert response.result == "OK"


async def flags(mailbox: aioimaplib.IMAP4) -> dict[int, str]:
    response = await mailbox.uid("fetch", "1:*", "(UID FLAGS)")
    out = {}
    for line in response.lines:
        # Skip unsolicited flag updates (no UID) that the server pushes to this session.
        if isinstance(line, bytes) and b"FETCH" in line and b"UID " in line:
            uid = int(line.split(b"UID ")[1].split()[0].rstrip(b")"))
            out[uid] = line.decode()
    return out


async def imap_state(world: EmailWorld) -> dict[str, Any] | None:
    """The poller's stored UIDVALIDITY/last UID, once it has saved one."""
    store = world.gateway.runtime.store
    assert store is not None
    keys = await store.scan(world.gateway.runtime.keyspace.imap_state_prefix())
    if not keys:
        return None
    [key] = keys
    value = await store.get_record(key)
    return None if value is None else dict(json.loads(value))


async def test_imap_mail_is_answered_and_flagged_only_after_ingest(
    tmp_path: Path,
    smarthost: Smarthost,
    dkim_env: None,
    dovecot: Dovecot,
    mailbox: aioimaplib.IMAP4,
) -> None:
    """Mail waiting in the mailbox and mail arriving during IDLE are answered and flagged."""
    await deliver(mailbox, "waiting", 1)
    async with email_world(
        f"sqlite:///{tmp_path}/gw.db", smarthost, listener=None, imap=imap_block(dovecot, idle=True)
    ) as world:
        [first] = await smarthost.wait_for(1)
        assert str(first.message["Subject"]) == "Re: waiting"
        await deliver(mailbox, "pushed", 2)  # wakes the IDLE
        replies = await smarthost.wait_for(2)
        assert str(replies[1].message["Subject"]) == "Re: pushed"
        state = await eventually(lambda: _at_uid(world, 2))
        assert state["uidvalidity"] > 0
        marked = await flags(mailbox)
        assert all("$FlowbizIngested" in f and "\\Seen" in f for f in marked.values())
        assert world.event("imap_ingested") == 2
        assert (
            world.gateway.runtime.metrics.registry.get_sample_value(
                "flowbiz_listener_up", {"listener": "email-imap:acme:email"}
            )
            == 1
        )


async def _at_uid(world: EmailWorld, uid: int) -> dict[str, Any] | None:
    state = await imap_state(world)
    return state if state is not None and state["last_uid"] >= uid else None


async def test_imap_restart_misses_nothing_and_doubles_nothing(
    tmp_path: Path,
    smarthost: Smarthost,
    dkim_env: None,
    dovecot: Dovecot,
    mailbox: aioimaplib.IMAP4,
) -> None:
    """Across a restart (and a crash after ingest, before flagging) every mail is answered once."""
    store_url = f"sqlite:///{tmp_path}/gw.db"
    for n in (1, 2):
        await deliver(mailbox, f"before {n}", n)
    async with email_world(
        store_url, smarthost, listener=None, imap=imap_block(dovecot, idle=True)
    ) as world:
        await smarthost.wait_for(2)
        await eventually(lambda: _at_uid(world, 2))
        # Pretend the process died after ingesting UID 2 but before flagging it / saving the UID.
        store = world.gateway.runtime.store
        assert store is not None
        [key] = await store.scan(world.gateway.runtime.keyspace.imap_state_prefix())
        state = json.loads(await store.get_record(key) or b"{}")
        await store.put_record(key, json.dumps({**state, "last_uid": 1}).encode())
    await mailbox.uid("store", "2", "-FLAGS.SILENT", "(\\Seen $FlowbizIngested)")
    for n in (3, 4):
        await deliver(mailbox, f"while down {n}", n)
    # Second run: polling instead of IDLE, same store.
    async with email_world(
        store_url, smarthost, listener=None, imap=imap_block(dovecot, idle=False)
    ) as world:
        await smarthost.wait_for(4)
        await eventually(lambda: _at_uid(world, 4))
        connector = world.gateway.runtime.connectors[Channel.EMAIL]
        assert connector is world.connector
        await eventually(lambda: world.connector._pollers[0].passes >= 2)
        assert world.event("imap_duplicate") == 1  # UID 2 fetched again, deduped
    subjects = sorted(str(r.message["Subject"]) for r in smarthost.received)
    assert subjects == ["Re: before 1", "Re: before 2", "Re: while down 3", "Re: while down 4"]
    marked = await flags(mailbox)
    assert sorted(marked) == [1, 2, 3, 4]
    assert all("$FlowbizIngested" in f for f in marked.values())


async def test_imap_message_over_the_limit_is_quarantined_unfetched(
    tmp_path: Path,
    smarthost: Smarthost,
    dkim_env: None,
    dovecot: Dovecot,
    mailbox: aioimaplib.IMAP4,
) -> None:
    """A mailbox message above max_message_bytes is quarantined by size, and flagged."""
    await deliver(mailbox, "big", 1)
    async with email_world(
        f"sqlite:///{tmp_path}/gw.db",
        smarthost,
        listener=None,
        imap=imap_block(dovecot, max_message_bytes=100),
    ) as world:
        await eventually(lambda: _at_uid(world, 1))
        [entry] = await world.connector.quarantined("acme")
        assert entry["reason"] == "too_large"
        assert entry["raw"] is None
    assert smarthost.received == []
    assert "$FlowbizIngested" in (await flags(mailbox))[1]
