"""Quotas in the running gateway: notice once then silence, inbound and reply rate limits."""

import asyncio

import aiohttp
import pytest

from connectors.http_api.emulator import HttpChannelClient
from gateway.audit import AuditLog
from gateway.usage import read_usage
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway


def _data(store_url, receiver, plan, tmp_path, *, notice_prompt=False):
    data = base_config(store_url, tenants=[http_tenant(receiver.url) | {"plan": "metered"}])
    data["plans"] = {"metered": plan}
    folder = tmp_path / "personas"
    folder.mkdir()
    prompt = (
        "prompts: {quota_notice: {versions: {1: 'Limit reached, $display_name is resting.'}}}\n"
    )
    (folder / "core.yaml").write_text(
        "name: core\ndisplay_name: Echo\nagent: {kind: echo, options: {prefix: 're:'}}\n"
        + (prompt if notice_prompt else "")
    )
    data["personas_dir"] = str(folder)
    data["routing"] = {"default_persona": "core"}
    return data


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


async def _drained(gw) -> bool:
    rt = gw.runtime
    backlog = 0
    for p in range(rt.keyspace.partitions):
        backlog += await rt.store.backlog(rt.keyspace.inbox(p), "workers")
        backlog += await rt.store.backlog(rt.keyspace.outbox(p), "dispatchers")
    return backlog == 0


async def test_over_quota_sends_the_persona_notice_once_then_nothing(
    store_url, receiver, session, tmp_path
):
    """Quota 2: two answers, the persona's notice once, then silence; usage, audit, metric."""
    data = _data(
        store_url, receiver, {"monthly_outbound_messages": 2}, tmp_path, notice_prompt=True
    )
    async with running_gateway(data) as gw:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        for n in range(5):
            status, _ = await client.send(conversation_id="c1", text=f"m{n}")
            assert status == 202
            await eventually(lambda: _drained(gw))
        await asyncio.sleep(0.2)
        texts = [cb.payload["text"] for cb in receiver.unique()]
        assert texts == ["re:m0", "re:m1", "Limit reached, Echo is resting."]
        # another conversation gets its own notice, once
        await client.send(conversation_id="c2", text="x")
        await client.send(conversation_id="c2", text="y")
        await eventually(lambda: _drained(gw))
        await receiver.wait_for(4)
        await asyncio.sleep(0.2)
        assert len(receiver.unique()) == 4
        rt = gw.runtime
        rows = await read_usage(rt.store, rt.keyspace, tenant="acme")
        assert sum(r.over_quota for r in rows) == 5
        assert sum(r.outbound for r in rows) == 2
        assert sum(r.inbound for r in rows) == 7
        events = await AuditLog(rt.store, rt.keyspace).read(tenant="acme")
        assert [e.action for _, e in events] == ["quota.soft_limit", *["quota.exceeded"] * 2]
        assert b'flowbiz_turns_total{outcome="over_quota"} 5.0' in rt.metrics.render()
        assert (await rt.quotas.status("acme")).outbound_messages.used == 2


async def test_inbound_rate_limit_drops_a_users_excess_only(store_url, receiver, session, tmp_path):
    """Burst 2 per user: a third quick message from one user is dropped, another user's not."""
    plan = {"inbound_per_user_per_minute": 0.5, "inbound_burst": 2}
    async with running_gateway(_data(store_url, receiver, plan, tmp_path)) as gw:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        for n in range(3):
            await client.send(conversation_id="c1", text=f"a{n}", user_id="alice")
        await client.send(conversation_id="c1", text="b0", user_id="bob")
        await eventually(lambda: _drained(gw))
        await receiver.wait_for(3)
        await asyncio.sleep(0.2)
        assert sorted(cb.payload["text"] for cb in receiver.unique()) == [
            "re:a0",
            "re:a1",
            "re:b0",
        ]
        rt = gw.runtime
        rows = await read_usage(rt.store, rt.keyspace, tenant="acme")
        assert sum(r.rate_limited for r in rows) == 1


async def test_reply_rate_cap_silences_a_chatty_conversation(
    store_url, receiver, session, tmp_path
):
    """One reply per conversation per minute: the second turn is answered by nothing."""
    plan = {"replies_per_conversation_per_minute": 0.5, "reply_burst": 1}
    async with running_gateway(_data(store_url, receiver, plan, tmp_path)) as gw:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        await client.send(conversation_id="c1", text="one")
        await client.send(conversation_id="c1", text="two")
        await client.send(conversation_id="c2", text="three")
        await eventually(lambda: _drained(gw))
        await receiver.wait_for(2)
        await asyncio.sleep(0.2)
        assert sorted(cb.payload["text"] for cb in receiver.unique()) == ["re:one", "re:three"]
        rt = gw.runtime
        rows = await read_usage(rt.store, rt.keyspace, tenant="acme")
        assert sum(r.reply_capped for r in rows) == 1
