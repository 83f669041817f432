"""The network between the gateway and Redis misbehaving: a peer that stops answering
(black hole, half-open connection), replies cut mid-way, added latency.

A :class:`~tests.faults.tcp_proxy.TcpFaultProxy` sits between a real gateway and the real
redis-server. While Redis does not answer, the edge answers 503 once the store's command
timeout fires (the platform retries) instead of holding the request, and ``/readyz``
answers 503 naming the store; once the network heals, ``/readyz`` answers 200 and every
message the gateway acknowledged is answered exactly once, in order per conversation.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from tests.conftest import RedisServer
from tests.faults.conftest import SECRETS, STORE_TIMEOUT, dead_letters, post_until_stored
from tests.faults.tcp_proxy import TcpFaultProxy
from tests.harness import RunningGateway, base_config, eventually, http_tenant, running_gateway

CONVERSATIONS = 6
PER_CONVERSATION = 6


def proxied_url(proxy: TcpFaultProxy) -> str:
    return f"redis://{proxy.address}/0"


def gateway_data(store_url: str, receiver: CallbackReceiver, personas: Path) -> dict[str, Any]:
    data = base_config(store_url, tenants=[http_tenant(receiver.url)])
    data["personas_dir"] = str(personas)
    data["routing"] = {"default_persona": "core"}
    return data


@pytest.fixture
async def store_proxy(redis_url: str, redis_server: RedisServer) -> Any:
    proxy = await TcpFaultProxy(redis_server.port).start()
    yield proxy
    await proxy.stop()


async def readyz(session: aiohttp.ClientSession, gw: RunningGateway) -> tuple[int, list[str]]:
    async with session.get(f"{gw.ops_url}/readyz") as response:
        body = await response.json()
        return response.status, list(body.get("problems", []))


class Conversations:
    """Senders that behave like a platform: each message posted until the gateway stores it
    (again after a 503 or a dropped connection), one conversation's messages in order."""

    def __init__(self, client: HttpChannelClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.statuses: list[int] = []
        self.acknowledged: dict[str, list[str]] = defaultdict(list)

    async def run(self, conversations: int, per_conversation: int, pause: float = 0.02) -> None:
        async def conversation(n: int) -> None:
            conv = f"{self.prefix}{n}"
            for seq in range(per_conversation):
                text = f"{conv}:{seq}"

                async def post(text: str = text) -> int:
                    status, _ = await self.client.send(
                        conversation_id=conv, text=text, event_id=text
                    )
                    return status

                status = await post_until_stored(post, statuses=self.statuses)
                assert status == 202, f"{text} was never acknowledged ({status})"
                self.acknowledged[conv].append(text)
                await asyncio.sleep(pause)

        await asyncio.gather(*(conversation(n) for n in range(conversations)))

    @property
    def total(self) -> int:
        return sum(len(texts) for texts in self.acknowledged.values())


async def assert_answered_once_in_order(
    receiver: CallbackReceiver, *senders: Conversations
) -> None:
    """Every acknowledged message answered, none twice, each conversation in order."""
    expected = sum(s.total for s in senders)
    await receiver.wait_for(expected, timeout=30)
    await eventually(lambda: len(receiver.unique()) >= expected, timeout=30)
    await asyncio.sleep(0.5)  # a second answer to anything would arrive in this time
    unique = receiver.unique()
    in_reply_to = [cb.payload["in_reply_to"] for cb in unique]
    assert len(in_reply_to) == len(set(in_reply_to)), "a message was answered twice"
    answers: dict[str, list[str]] = defaultdict(list)
    for callback in unique:
        answers[callback.payload["conversation_id"]].append(callback.payload["text"])
    for sender in senders:
        for conv, texts in sender.acknowledged.items():
            assert answers[conv] == texts, f"{conv}: answers differ from what was acknowledged"
    assert len(unique) == expected


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.parametrize("fault", ["blackhole", "half_open"])
async def test_store_that_stops_answering_is_503_named_by_readyz_and_loses_nothing(
    fault: str,
    store_proxy: TcpFaultProxy,
    receiver: CallbackReceiver,
    echo_personas: Path,
    short_store_timeout: None,
) -> None:
    """No hang: the edge answers 503, ``/readyz`` names the store; after healing all is
    answered once."""
    data = gateway_data(proxied_url(store_proxy), receiver, echo_personas)
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )
        before = Conversations(client, "before")
        await before.run(2, 2)
        assert await readyz(session, gw) == (200, [])

        getattr(store_proxy, fault)()
        # Bounded by the store's command timeout, with room for a loaded machine: the point
        # is that it ends, in a 503 the platform retries, not that it is quick.
        async with asyncio.timeout(STORE_TIMEOUT * 10):
            status, body = await client.send(conversation_id="x0", text="x0:0", event_id="x0:0")
            assert (status, body["error"]) == (503, "store_unavailable")
            status, problems = await readyz(session, gw)
        assert status == 503
        assert any(problem.startswith("store") for problem in problems), problems

        during = Conversations(client, "during")
        traffic = asyncio.create_task(during.run(CONVERSATIONS, PER_CONVERSATION))
        await asyncio.sleep(STORE_TIMEOUT * 4)  # long enough for the first posts to be refused
        assert not traffic.done()
        await store_proxy.heal()
        await asyncio.wait_for(traffic, timeout=60)
        # The platform retries the message refused with 503. On a half-open link the refused
        # admit still reached Redis once the link healed: the retry is then a duplicate.
        retried = Conversations(client, "x")
        await retried.run(1, 1)
        await eventually(lambda: _ready(session, gw), timeout=20)
        await assert_answered_once_in_order(receiver, before, during, retried)
        assert 503 in during.statuses
        assert await dead_letters(gw) == []


async def _ready(session: aiohttp.ClientSession, gw: RunningGateway) -> bool:
    return (await readyz(session, gw)) == (200, [])


@pytest.mark.slow
@pytest.mark.redis
async def test_readyz_names_an_unanswering_store_before_a_probe_gives_up(
    store_proxy: TcpFaultProxy, receiver: CallbackReceiver, echo_personas: Path
) -> None:
    """With the default command timeout (10 s) ``/readyz`` still answers within a probe's
    timeout (a few seconds), saying the store does not answer; 200 again once it does."""
    data = gateway_data(proxied_url(store_proxy), receiver, echo_personas)
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        assert await readyz(session, gw) == (200, [])
        store_proxy.blackhole()
        probe = aiohttp.ClientTimeout(total=6)  # above the readiness bound, below 10 s
        async with session.get(f"{gw.ops_url}/readyz", timeout=probe) as response:
            assert response.status == 503
            problems = (await response.json())["problems"]
        assert any(p.startswith("store slow or unreachable") for p in problems), problems
        await store_proxy.heal()
        await eventually(lambda: _ready(session, gw), timeout=30)


@pytest.mark.slow
@pytest.mark.redis
async def test_added_latency_on_the_store_link_delays_but_repeats_nothing(
    store_proxy: TcpFaultProxy,
    receiver: CallbackReceiver,
    echo_personas: Path,
    short_store_timeout: None,
) -> None:
    """100 ms each way on every Redis round trip: slower, still ready, answered once in order."""
    data = gateway_data(proxied_url(store_proxy), receiver, echo_personas)
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )
        store_proxy.latency(up=0.1, down=0.1)
        slow = Conversations(client, "slow")
        await asyncio.wait_for(slow.run(4, 2), timeout=60)
        assert await readyz(session, gw) == (200, [])
        await assert_answered_once_in_order(receiver, slow)
        assert set(slow.statuses) == {202}


@pytest.mark.slow
@pytest.mark.redis
async def test_replies_cut_mid_way_on_the_store_link_lose_and_repeat_nothing(
    store_proxy: TcpFaultProxy,
    receiver: CallbackReceiver,
    echo_personas: Path,
    short_store_timeout: None,
) -> None:
    """A Redis reply cut after a few bytes, again and again, on whatever command is in
    flight (admit, read, commit, claim, record): retries and dedupe leave each message
    answered once, in order."""
    data = gateway_data(proxied_url(store_proxy), receiver, echo_personas)
    rng = random.Random(18)
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )
        cut = Conversations(client, "cut")
        traffic = asyncio.create_task(cut.run(CONVERSATIONS, PER_CONVERSATION))
        armed = -1
        while not traffic.done():
            if store_proxy.cut_replies != armed:  # the last one was cut: the next reply
                armed = store_proxy.cut_replies
                store_proxy.drop_reply_after(rng.randrange(1, 40))
            await asyncio.sleep(0.02)
        await traffic
        await store_proxy.heal()
        await assert_answered_once_in_order(receiver, cut)
        assert store_proxy.cut_replies >= 5, "too few replies were cut to prove anything"
        assert await dead_letters(gw) == []


@pytest.mark.slow
@pytest.mark.redis
async def test_shutdown_with_an_unanswering_store_is_not_held_by_courtesy_calls(
    store_proxy: TcpFaultProxy, receiver: CallbackReceiver, echo_personas: Path
) -> None:
    """SIGTERM while Redis is black-holed (default 10 s command timeout): releasing eight
    leases and leaving the membership set, one command timeout each, held the shutdown for
    about 90 s, past any orchestrator's grace period. They are bounded: the leases expire."""
    data = gateway_data(proxied_url(store_proxy), receiver, echo_personas)
    loop = asyncio.get_running_loop()
    async with running_gateway(data) as gw:
        assert sorted(len(c.owned_partitions) for c in gw.runtime.consumers) == [4, 4]
        store_proxy.blackhole()
        await asyncio.sleep(0.2)  # the consumers' next store calls are in the hole too
        stopping = loop.time()
    stopped_in = loop.time() - stopping
    # The consumers' grace (2 s here) plus the bounded releases, with room for a loaded
    # machine; far below the ~90 s it took.
    assert stopped_in < 30, f"the shutdown took {stopped_in:.1f} s"
