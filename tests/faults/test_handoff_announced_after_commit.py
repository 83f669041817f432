"""An operator's reply to a handoff announcement always finds the customer handed off.

The announcement is the desk's first sight of a handoff; an operator (a quick person, or a
bot at the desk) may answer it at once. Here a loopback proxy in front of the real
redis-server holds back the commit of the customer's turn that starts the handoff, and an
operator answers the moment the desk can see the announcement. The reply must reach the
customer exactly once, never "This conversation is not handed off".
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from gateway.config import parse_config
from gateway.handoff import HandoffDesk
from gateway.models import Channel, ConversationKey
from gateway.store import Keyspace, open_store
from gateway.store.redis import _COMMIT_LUA
from tests.conftest import RedisServer
from tests.faults.conftest import SECRETS
from tests.faults.redis_proxy import RedisFaultProxy, Rule, script_id
from tests.harness import RunningGateway, base_config, eventually, http_tenant, running_gateway

REPLY = "Hi, Eve here. Let me look at your order."
NOTICE = "I have asked a person from our team to take over. They will answer you here."
RELEASED = "You are back with the assistant. How else can I help?"


@pytest.fixture
def desk_personas(tmp_path: Path) -> Path:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "core.yaml").write_text(
        "name: core\ndisplay_name: Core Bot\n"
        "agent: {kind: rules, options: {rules: [], fallback: 'bot answer'}}\n"
    )
    return folder


def texts_to(receiver: CallbackReceiver, conversation_id: str) -> list[str]:
    return [
        str(cb.payload["text"])
        for cb in receiver.unique()
        if cb.payload["conversation_id"] == conversation_id
    ]


def handoff_turns(gw: RunningGateway, outcome: str) -> float:
    value = gw.runtime.metrics.registry.get_sample_value(
        "flowbiz_turns_total", {"outcome": f"handoff_{outcome}"}
    )
    return value or 0.0


async def operator_says(
    gw: RunningGateway,
    session: aiohttp.ClientSession,
    thread: ConversationKey,
    text: str,
    *,
    event_id: str,
) -> None:
    body: dict[str, Any] = {
        "conversation_id": "operators",
        "thread": thread.thread,
        "user": {"id": "op-eve", "name": "Eve"},
        "text": text,
        "event_id": event_id,
    }
    async with session.post(
        f"{gw.url}/v1/channels/http/acme/messages",
        json=body,
        headers={"Authorization": f"Bearer {SECRETS['T_API_KEY']}"},
    ) as response:
        assert response.status == 202


def split_conversations(keyspace: Keyspace) -> tuple[ConversationKey, ConversationKey]:
    """A customer on partition 0 whose desk thread is on partition 1, and that thread."""
    for n in range(1000):
        customer = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id=f"c{n}")
        thread = customer_thread(customer)
        if keyspace.partition(customer.key) == 0 and keyspace.partition(thread.key) == 1:
            return customer, thread
    raise AssertionError("no such conversation id")


def customer_thread(customer: ConversationKey) -> ConversationKey:
    return ConversationKey(
        tenant="acme",
        channel=Channel.HTTP,
        conversation_id="operators",
        thread=HandoffDesk.thread_for(customer),
    )


def owned(gw: RunningGateway) -> list[list[int]]:
    return [consumer.owned_partitions for consumer in gw.runtime.consumers]


@pytest.mark.redis
async def test_attack_operator_answering_announcement_before_customer_commit_reaches_customer(
    redis_url: str,
    redis_server: RedisServer,
    receiver: CallbackReceiver,
    desk_personas: Path,
) -> None:
    """An operator answering the announcement at once is relayed to the customer, once.

    The redis store sends a process's commands in one pipeline at a time, so holding the
    commit holds that whole process: the customer's turn runs in a worker process of its
    own (through the proxy, owning partition 0), the desk's thread is answered by a second
    process (straight to redis-server, owning partition 1, and taking the webhooks).
    """
    data = base_config(
        redis_url,
        tenants=[http_tenant(receiver.url)],
        handoff={
            "operators": {"tenant": "acme", "channel": "http", "conversation_id": "operators"}
        },
    )
    data["personas_dir"] = str(desk_personas)
    data["store"]["partitions"] = 2
    # Long enough that the held process keeps its leases while its commit is held.
    data["pipeline"]["lease_seconds"] = 3.0
    store_config = parse_config(data).store
    keyspace = Keyspace(prefix=store_config.prefix, partitions=store_config.partitions)
    customer, thread = split_conversations(keyspace)
    held_commit = Rule(
        (script_id(_COMMIT_LUA), keyspace.state(customer.key).encode()), "hold", once=True
    )
    proxy = await RedisFaultProxy(redis_server.port, [held_commit]).start()
    probe = await open_store(redis_url)  # straight to redis-server, past the proxy
    outbox = keyspace.outbox(keyspace.partition(thread.key))

    async def desk_shows_announcement() -> bool:
        # Read the outbox first: an entry trimmed after delivery has reached the receiver.
        queued = await probe.range(outbox)
        if any(e.payload.find(b":handoff") >= 0 for e in queued):
            return True
        return bool(texts_to(receiver, "operators"))

    held_data = {**data, "store": {**data["store"], "url": proxy.url}}
    try:
        # The first process takes every partition; once the second joins it keeps the lowest.
        async with (
            running_gateway(held_data, role="worker") as held,
            running_gateway(data) as desk,
            aiohttp.ClientSession() as session,
        ):
            await eventually(lambda: owned(held) == [[0], [0]] and owned(desk) == [[1], [1]])
            web = HttpChannelClient(
                session=session, base_url=desk.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
            )
            await web.send(conversation_id=customer.conversation_id, text="/human", user_name="Ann")
            async with asyncio.timeout(10):
                await held_commit.matched.wait()  # the turn that starts the handoff is committing
            answered = False
            if await desk_shows_announcement():
                # The operator answers at once, while the customer's turn is not committed.
                await eventually(lambda: texts_to(receiver, "operators"))
                await operator_says(desk, session, thread, REPLY, event_id="o1")
                await eventually(
                    lambda: sum(handoff_turns(desk, o) for o in ("relayed", "inactive")) >= 1
                )
                answered = True
            held_commit.release()
            announcement = (await eventually(lambda: texts_to(receiver, "operators")))[0]
            assert announcement.startswith("Handoff: Ann on http")
            if not answered:
                await operator_says(desk, session, thread, REPLY, event_id="o1")
            await eventually(
                lambda: sum(handoff_turns(desk, o) for o in ("relayed", "inactive")) >= 1
            )
            assert handoff_turns(desk, "inactive") == 0, texts_to(receiver, "operators")
            assert handoff_turns(desk, "relayed") == 1

            await operator_says(desk, session, thread, "/release", event_id="o2")
            mine = customer.conversation_id
            await eventually(lambda: RELEASED in texts_to(receiver, mine))
            assert texts_to(receiver, mine) == [NOTICE, REPLY, RELEASED]
            assert [cb.payload["text"] for cb in receiver.received].count(REPLY) == 1
            assert len(texts_to(receiver, "operators")) == 2  # the announcement, "Released: …"
    finally:
        await probe.aclose()
        await proxy.stop()


@pytest.mark.redis
async def test_announcement_lost_after_the_commit_is_made_again_once(
    redis_url: str,
    redis_server: RedisServer,
    receiver: CallbackReceiver,
    desk_personas: Path,
) -> None:
    """The turn is committed, then the store connection drops as the desk is being told: the
    entry, still unacknowledged, is handled again and the desk hears of it exactly once."""
    data = base_config(
        redis_url,
        tenants=[http_tenant(receiver.url)],
        handoff={
            "operators": {"tenant": "acme", "channel": "http", "conversation_id": "operators"}
        },
    )
    data["personas_dir"] = str(desk_personas)
    store_config = parse_config(data).store
    keyspace = Keyspace(prefix=store_config.prefix, partitions=store_config.partitions)
    customer = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="cust")
    mapping = keyspace.handoff_customer(customer_thread(customer).key)
    dropped = Rule((mapping.encode(),), "cut", once=True)
    proxy = await RedisFaultProxy(redis_server.port, [dropped]).start()
    try:
        gw_data = {**data, "store": {**data["store"], "url": proxy.url}}
        async with running_gateway(gw_data) as gw, aiohttp.ClientSession() as session:
            web = HttpChannelClient(
                session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
            )
            await web.send(conversation_id="cust", text="/human", user_name="Ann")
            await eventually(lambda: texts_to(receiver, "operators"))
            await operator_says(gw, session, customer_thread(customer), REPLY, event_id="o1")
            await eventually(lambda: REPLY in texts_to(receiver, "cust"))
            assert dropped.matched.is_set(), "the desk was told without the dropped request"
            assert gw.runtime.metrics.registry.get_sample_value(
                "flowbiz_turns_total", {"outcome": "already_handled"}
            )
            to_desk = [
                cb for cb in receiver.received if cb.payload["conversation_id"] == "operators"
            ]
            assert len(to_desk) == 1
            assert [cb.payload["text"] for cb in receiver.received].count(NOTICE) == 1
            assert texts_to(receiver, "cust") == [NOTICE, REPLY]
    finally:
        await proxy.stop()
