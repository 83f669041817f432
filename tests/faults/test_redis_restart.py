"""redis-server killed and restarted mid-run (AOF on) while messages flow; and the same for
one master of a 3-master Redis Cluster.

The store runs with ``appendonly yes`` and ``appendfsync always``: Redis writes and fsyncs
the AOF before it answers a command, so every admit that returned (and so every 2xx the
gateway sent a platform) is on disk when the process is SIGKILLed. ``everysec`` would be
cheaper but may lose up to about two seconds of acknowledged writes on a crash of the
host — the gateway's "ack after append" promise needs ``always`` (see docs/deploy.md).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from connectors.line.emulator import LineEmulator, LineWebhookSender, sign_body
from tests.conftest import start_redis_cluster, start_redis_server
from tests.faults.conftest import SECRETS, dead_letters, post_until_stored
from tests.harness import base_config, eventually, http_tenant, running_gateway

LINE_DEST = "U" + "f1" * 16
LINE_SECRET = "fault-line-secret"
LINE_TOKEN = "fault-line-token"
HTTP_CONVERSATIONS = 12
LINE_USERS = 6
PER_CONVERSATION = 12
OUTAGE_SECONDS = 2.0


@pytest.fixture
async def line() -> LineEmulator:
    emulator = await LineEmulator().start()
    emulator.add_channel(destination=LINE_DEST, access_token=LINE_TOKEN, channel_secret=LINE_SECRET)
    yield emulator
    await emulator.stop()


@dataclass
class AofStore:
    """An AOF store to kill and restart: one redis-server, or one master of a cluster."""

    url: str
    cluster: bool
    kill: Callable[[], None]
    restart: Callable[[], None]  # on the same port, from its files


@pytest.fixture(params=["redis", "redis-cluster"])
def aof_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AofStore]:
    """One AOF redis-server; or a 3-master AOF cluster whose master holding partition 0 is
    the one killed."""
    folder = tmp_path / "redis"
    folder.mkdir()
    if request.param == "redis":
        servers = [start_redis_server(folder, appendonly=True)]
        yield AofStore(
            servers[0].url,
            cluster=False,
            kill=servers[0].kill,
            restart=lambda: servers.append(
                start_redis_server(folder, appendonly=True, port=servers[0].port)
            ),
        )
        for server in servers:
            server.stop()
        return
    cluster = start_redis_cluster(folder, appendonly=True)
    try:
        nodes = redis.RedisCluster.from_url(cluster.url)
        try:
            port = nodes.get_node_from_key("{p0}").port
        finally:
            nodes.close()
        index = next(i for i, m in enumerate(cluster.masters) if m.port == port)
        yield AofStore(
            cluster.url,
            cluster=True,
            kill=lambda: cluster.masters[index].kill(),
            restart=lambda: cluster.restart(index),
        )
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.redis
async def test_redis_killed_and_restarted_mid_run_loses_and_repeats_nothing(
    aof_store: AofStore,
    receiver: CallbackReceiver,
    line: LineEmulator,
    echo_personas: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """503 while Redis is down and senders retry; each acked message answered once, in order."""
    monkeypatch.setenv("F_LINE_SECRET", LINE_SECRET)
    monkeypatch.setenv("F_LINE_TOKEN", LINE_TOKEN)
    tenant = http_tenant(receiver.url)
    tenant["channels"].append(
        {
            "kind": "line",
            "destination": LINE_DEST,
            "channel_secret": "env:F_LINE_SECRET",
            "channel_access_token": "env:F_LINE_TOKEN",
            "api_base_url": line.url,
            "fetch_profiles": False,
            "loading_indicator": False,
            "request_timeout_seconds": 2,
        }
    )
    data = base_config(aof_store.url, tenants=[tenant])
    data["store"]["cluster"] = aof_store.cluster
    data["personas_dir"] = str(echo_personas)
    data["routing"] = {"default_persona": "core"}

    statuses: list[int] = []
    acknowledged: dict[str, list[str]] = defaultdict(list)
    restarted = asyncio.Event()

    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )
        sender = LineWebhookSender(
            session=session,
            gateway_url=gw.url,
            destination=LINE_DEST,
            channel_secret=LINE_SECRET,
            emulator=line,
        )

        async def http_conversation(n: int) -> None:
            for seq in range(PER_CONVERSATION):
                text = f"h{n}:{seq}"

                async def post(text: str = text) -> int:
                    status, _ = await client.send(conversation_id=f"h{n}", text=text, event_id=text)
                    return status

                status = await post_until_stored(post, statuses=statuses)
                assert status == 202, f"{text} was never acknowledged ({status})"
                acknowledged[f"h{n}"].append(text)
                await asyncio.sleep(0.02)

        async def line_user(n: int) -> None:
            user = "U" + f"{n:02x}" * 16
            for seq in range(PER_CONVERSATION):
                text = f"l{n}:{seq}"
                body = sender.body([sender.text(text, user_id=user)])

                async def post(body: bytes = body) -> int:
                    status, _ = await sender.post_raw(body, signature=sign_body(LINE_SECRET, body))
                    return status

                status = await post_until_stored(post, statuses=statuses)
                assert status == 200, f"{text} was never acknowledged ({status})"
                acknowledged[user].append(text)
                await asyncio.sleep(0.02)

        async def restart_redis() -> None:
            # Kill once a fair share has been answered, so the outage hits a busy pipeline.
            total = (HTTP_CONVERSATIONS + LINE_USERS) * PER_CONVERSATION
            await asyncio.wait_for(_answered(receiver, line, total // 4), timeout=20)
            aof_store.kill()
            await asyncio.sleep(OUTAGE_SECONDS)
            await asyncio.to_thread(aof_store.restart)
            restarted.set()

        await asyncio.wait_for(
            asyncio.gather(
                restart_redis(),
                *(http_conversation(n) for n in range(HTTP_CONVERSATIONS)),
                *(line_user(n) for n in range(LINE_USERS)),
            ),
            timeout=40,
        )
        assert restarted.is_set()
        expected = sum(len(texts) for texts in acknowledged.values())
        await asyncio.wait_for(_answered(receiver, line, expected), timeout=30)
        await asyncio.sleep(0.5)  # a second answer to anything would arrive in this time
        letters = await dead_letters(gw)

    assert 503 in statuses, "the outage never reached a request"
    assert set(statuses) <= {200, 202, 503}, f"unexpected answers: {sorted(set(statuses))}"
    assert letters == []
    http_answers: dict[str, list[str]] = defaultdict(list)
    for callback in receiver.unique():
        http_answers[callback.payload["conversation_id"]].append(callback.payload["text"])
    in_reply_to = [cb.payload["in_reply_to"] for cb in receiver.unique()]
    assert len(in_reply_to) == len(set(in_reply_to)), "an HTTP message was answered twice"
    for conversation, texts in acknowledged.items():
        answers = http_answers[conversation] if conversation.startswith("h") else None
        if answers is None:
            answers = line.texts_to(conversation)
        assert answers == texts, f"{conversation}: answers differ from what was acknowledged"


async def _answered(receiver: CallbackReceiver, line: LineEmulator, count: int) -> None:
    """Wait until ``count`` distinct answers have arrived over both channels."""
    await eventually(
        lambda: len(receiver.unique()) + len(line.deliveries) >= count, timeout=30, interval=0.05
    )
