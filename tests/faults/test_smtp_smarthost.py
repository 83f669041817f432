"""The smarthost defers (421 / 451) for a while, then accepts: each reply is relayed once."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from email.utils import make_msgid
from pathlib import Path

import pytest

from connectors.email.connector import EmailConnector
from connectors.email.emulator import MailSender, Smarthost
from gateway.models import Channel
from tests.faults.conftest import dead_letters
from tests.harness import base_config, running_gateway

SUPPORT = "support@acme.example"
THREADS = 4
PER_THREAD = 3


@pytest.fixture
async def smarthost() -> Smarthost:
    host = await Smarthost().start()
    yield host
    await host.stop()


@pytest.mark.slow
async def test_smarthost_deferring_then_accepting_relays_each_reply_once_in_order(
    tmp_path: Path, echo_personas: Path, smarthost: Smarthost
) -> None:
    """421 at RCPT and DATA, 451 at DATA: retried until accepted, once per mail, thread order."""
    channel = {
        "kind": "email",
        "addresses": [{"address": SUPPORT}],
        "listener": {"host": "127.0.0.1", "port": 0},
        "outbound": {"host": "127.0.0.1", "port": smarthost.port, "security": "none"},
    }
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db", tenants=[{"id": "acme", "channels": [channel]}]
    )
    data["personas_dir"] = str(echo_personas)
    data["routing"] = {"default_persona": "core"}
    data["pipeline"].update({"max_delivery_attempts": 12, "retry_max_seconds": 0.3})
    smarthost.fail_next(2, reply="421 4.3.2 Service shutting down", stage="rcpt")
    smarthost.fail_next(3, reply="451 4.7.1 Greylisted, try again later")
    smarthost.fail_next(1, reply="421 4.4.2 Timeout, closing connection")
    smarthost.fail_next(2, reply="451 4.3.0 Mail server temporarily rejected message")
    deferrals = 8

    sent: dict[str, list[str]] = defaultdict(list)
    async with running_gateway(data) as gw:
        connector = gw.runtime.connectors[Channel.EMAIL]
        assert isinstance(connector, EmailConnector)
        sender = MailSender(*connector.listener_address("acme"))

        async def thread(n: int) -> None:
            customer = f"customer{n}@customer.example"
            chain: list[str] = []
            for seq in range(PER_THREAD):
                message_id = make_msgid(domain="customer.example")
                mail = sender.compose(
                    from_addr=customer,
                    from_name=f"Customer {n}",
                    to=SUPPORT,
                    subject=f"thread {n}",
                    text=f"question t{n}m{seq}",
                    message_id=message_id,
                    in_reply_to=chain[-1] if chain else None,
                    references=chain,
                )
                code, _ = await sender.send(mail)
                assert code == 250
                chain.append(message_id)
                sent[customer].append(f"question t{n}m{seq}")

        await asyncio.wait_for(asyncio.gather(*(thread(n) for n in range(THREADS))), 20)
        await smarthost.wait_for(THREADS * PER_THREAD, timeout=30)
        await asyncio.sleep(0.5)  # a second relay of any reply would arrive in this time
        letters = await dead_letters(gw)

    assert letters == []
    assert smarthost.attempts == THREADS * PER_THREAD + deferrals - 2  # two failed at RCPT
    relayed: dict[str, list[str]] = defaultdict(list)
    for mail in smarthost.received:
        [recipient] = mail.rcpt_tos
        relayed[recipient].append(mail.text().strip().splitlines()[0])
    assert relayed == sent
