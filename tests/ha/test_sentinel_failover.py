"""The primary SIGKILLed mid-run under Redis Sentinel; the sentinels promote its replica.

The gateway reaches Redis only through three sentinels (``redis+sentinel://``). Messages
flow over several HTTP conversations, each sent like a platform does (again after a 503,
the next one only after the last was acknowledged); a quarter of the way through the
primary is SIGKILLed while its replica lags behind (what it took in the last moments is on
the primary only; see ``_fail_over``). Once the sentinels have promoted the replica, the
dead node comes back as the new primary's replica (as a replacement would), so that writes
can again be confirmed by a replica.

- With ``store.replica_acks: 1``: every message the edge acknowledged is answered exactly
  once, in order per conversation.
- With replica acknowledgement off, what the promoted replica never received is lost; the
  test counts and reports those messages (printed, and as the ``acknowledged_lost`` and
  ``answered_twice`` properties of the test's JUnit record) rather than assert zero.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from tests.conftest import redis_command, start_redis_server
from tests.faults.conftest import post_until_stored
from tests.ha.redis_ha import Replicated, SentinelGroup, info
from tests.harness import SECRETS, base_config, eventually, http_tenant, running_gateway

CONVERSATIONS = 8
PER_CONVERSATION = 25
SEND_INTERVAL = 0.08  # between one conversation's messages
ANSWER_SECONDS = 0.2  # the bot's time per answer
LAG_SECONDS = 0.3  # the primary runs ahead of its replica this long before it dies
BALLAST = "ha-test:ballast"  # the test's own key, not the gateway's


@pytest.fixture
async def slow_bot() -> AsyncIterator[str]:
    """A bot (for the webhook agent) that repeats the customer's text after
    ``ANSWER_SECONDS``: turns take longer than messages take to arrive, so at the kill the
    inbox holds acknowledged messages no worker has seen yet, as under real load."""

    async def answer(request: web.Request) -> web.Response:
        context = await request.json()
        await asyncio.sleep(ANSWER_SECONDS)
        return web.json_response({"text": context["message"]["text"]})

    app = web.Application()
    app.router.add_post("/bot", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/bot"
    await runner.cleanup()


@pytest.fixture
def bot_personas(tmp_path: Path, slow_bot: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("T_BOT", "bot-secret")
    folder = tmp_path / "personas"
    folder.mkdir()
    options = {"url": slow_bot, "secrets_env": ["T_BOT"], "allow_private": True}
    (folder / "core.yaml").write_text(
        json.dumps(
            {
                "name": "core",
                "display_name": "Bot",
                "agent": {"kind": "webhook", "options": options},
            }
        )
    )
    return folder


def _fail_over(replicated: Replicated, sentinels: SentinelGroup) -> int:
    """Let the replica fall behind, SIGKILL the primary, wait for the sentinels to promote
    the replica, and start the dead node again as the new primary's replica. Returns the new
    primary's port.

    Falling behind: the replica is stopped (SIGSTOP) and the primary given a write larger
    than the sockets between them hold, so what it takes for the next ``LAG_SECONDS`` stays
    in its own output buffer, which dies with it. (A dropped link is no use: a replica
    reconnects at once and catches up from the backlog.)"""
    old, replica = replicated.primary, replicated.replicas[0]
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        assert redis_command(old.port, "SET", BALLAST, "x" * (32 << 20), timeout=10) == b"+OK"
        time.sleep(LAG_SECONDS)
        old.kill()
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while (port := sentinels.master_port()) in (None, old.port):
        if time.monotonic() > deadline:
            pytest.fail("the sentinels did not promote the replica")
        time.sleep(0.05)
    replicated.primary = replicated.replicas[0]
    follower = ["--replicaof", "127.0.0.1", str(port), "--repl-diskless-sync-delay", "0"]
    (old.directory / "redis.log").unlink(missing_ok=True)
    replicated.replicas[0] = start_redis_server(old.directory, port=old.port, extra=follower)
    return port


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("replica_acks", [1, 0], ids=["replica-acks", "no-replica-acks"])
async def test_primary_killed_under_sentinel(
    replica_acks: int,
    replicated: Replicated,
    sentinels: SentinelGroup,
    receiver: CallbackReceiver,
    bot_personas: Path,
    channel_env_on: None,
    record_property: Callable[[str, object], None],
) -> None:
    data = base_config(sentinels.url(), tenants=[http_tenant(receiver.url)])
    data["store"] |= {"replica_acks": replica_acks, "replica_ack_timeout_ms": 500}
    data["personas_dir"] = str(bot_personas)
    # The worker reads little ahead, so its backlog waits in Redis (where a failover can
    # lose it), not in its own memory (where it survives one).
    data["pipeline"]["max_in_flight"] = CONVERSATIONS
    data["routing"] = {"default_persona": "core"}
    statuses: list[int] = []
    acknowledged: dict[str, list[str]] = defaultdict(list)
    promoted: list[int] = []

    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )

        async def conversation(n: int) -> None:
            for seq in range(PER_CONVERSATION):
                text = f"c{n}:{seq}"

                async def post(text: str = text) -> int:
                    status, _ = await client.send(conversation_id=f"c{n}", text=text, event_id=text)
                    return status

                status = await post_until_stored(post, attempts=600, statuses=statuses)
                assert status == 202, f"{text} was never acknowledged ({status})"
                acknowledged[f"c{n}"].append(text)
                await asyncio.sleep(SEND_INTERVAL)

        async def kill_primary() -> None:
            total = CONVERSATIONS * PER_CONVERSATION
            await eventually(lambda: len(receiver.unique()) >= 1, timeout=30)
            await eventually(lambda: sum(map(len, acknowledged.values())) >= total // 3)
            promoted.append(await asyncio.to_thread(_fail_over, replicated, sentinels))

        began = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(kill_primary(), *(conversation(n) for n in range(CONVERSATIONS))),
            timeout=80,
        )
        expected = sum(len(texts) for texts in acknowledged.values())
        if replica_acks:
            await receiver.wait_for(expected, timeout=30)
        else:
            await _settled(receiver)
        await asyncio.sleep(0.5)  # a second answer to anything would arrive in this time
        elapsed = time.monotonic() - began

    assert promoted, "the primary was never killed"
    assert info(promoted[0]).get("role") == "master"
    assert 503 in statuses, "the failover never reached a request"
    answers: dict[str, list[str]] = defaultdict(list)
    for callback in receiver.unique():
        answers[callback.payload["conversation_id"]].append(callback.payload["text"])
    in_reply_to = [cb.payload["in_reply_to"] for cb in receiver.unique()]
    answered_twice = len(in_reply_to) - len(set(in_reply_to))
    lost = sum(1 for c, texts in acknowledged.items() for text in texts if text not in answers[c])
    print(
        f"\nsentinel failover, replica_acks={replica_acks}: {expected} acknowledged, "
        f"{lost} lost, {answered_twice} answered twice, {statuses.count(503)} answers 503, "
        f"{elapsed:.1f} s"
    )
    record_property("acknowledged", expected)
    record_property("acknowledged_lost", lost)
    record_property("answered_twice", answered_twice)
    if replica_acks:
        assert answered_twice == 0, "a message was answered twice"
        for name, texts in acknowledged.items():
            assert answers[name] == texts, f"{name}: answers differ from what was acknowledged"


async def _settled(receiver: CallbackReceiver, quiet: float = 3.0) -> None:
    """Wait until no new answer has arrived for ``quiet`` seconds (at most 30 s)."""
    seen, since = -1, time.monotonic()
    deadline = since + 30
    while time.monotonic() < deadline:
        now = len(receiver.unique())
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        await asyncio.sleep(0.1)
