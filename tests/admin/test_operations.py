"""Operator actions end to end: dead-letter replay, proactive messages, persona reload, CLI."""

import asyncio

import aiohttp
import pytest
import yaml

from connectors.http_api.emulator import HttpChannelClient
from gateway.admin.keys import Role, create_key, list_keys
from gateway.audit import AuditLog
from gateway.cli import main
from gateway.conversations import conversation_handle
from gateway.deadletters import list_dead_letters
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway


@pytest.fixture
async def admin(store_url, receiver):
    """A running gateway, an HTTP session, a channel client and an admin key's headers."""
    data = base_config(store_url, tenants=[http_tenant(receiver.url)])
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        rt = gw.runtime
        _, token = await create_key(rt.store, rt.keyspace, name="ops", role=Role.OPERATOR)
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        yield gw, session, client, {"Authorization": f"Bearer {token}"}


async def test_dead_letter_replay_delivers_exactly_once(admin, receiver):
    """A refused reply lands in the dead letters; replaying it (twice, at once) delivers once."""
    gw, session, client, auth = admin
    receiver.fail_next(1, status=400)
    await client.send(conversation_id="c1", text="hello")

    async def letters():
        async with session.get(gw.ops_url + "/v1/dead-letters?tenant=acme", headers=auth) as r:
            return (await r.json())["dead_letters"]

    [item] = await eventually(letters)
    assert item["letter"]["tenant"] == "acme"
    assert receiver.unique() == []
    url = f"{gw.ops_url}/v1/dead-letters/{item['handle']}"
    async with session.get(url, headers=auth) as response:
        assert (await response.json())["letter"]["reason"]
    statuses = []
    for response in await asyncio.gather(
        session.post(url + "/replay", headers=auth), session.post(url + "/replay", headers=auth)
    ):
        statuses.append(response.status)
        response.release()
    assert 200 in statuses  # the other one finds it gone (404) or replays the same key
    [delivered] = await receiver.wait_for(1)
    await asyncio.sleep(0.5)  # time for a wrong second delivery to show up
    assert len(receiver.unique()) == 1
    assert delivered.payload["text"].startswith("Hello")
    assert await letters() == []
    async with session.post(url + "/replay", headers=auth) as response:
        assert response.status == 404


async def test_proactive_message_reaches_the_conversation(admin, receiver):
    """An operator's message is queued on the conversation's channel and delivered, signed."""
    gw, session, client, auth = admin
    await client.send(conversation_id="c1", text="hello")
    await receiver.wait_for(1)
    handle = conversation_handle("acme/http/c1")
    url = f"{gw.ops_url}/v1/tenants/acme/conversations/{handle}/messages"
    async with session.post(url, json={"text": "Your order shipped"}, headers=auth) as response:
        assert response.status == 202
        accepted = await response.json()
    callbacks = await receiver.wait_for(2)
    assert callbacks[1].payload["text"] == "Your order shipped"
    assert callbacks[1].idempotency_key == accepted["idempotency_key"]
    async with session.get(
        f"{gw.ops_url}/v1/tenants/acme/conversations/{handle}/receipts", headers=auth
    ) as response:
        receipts = (await response.json())["receipts"]
    assert {r["idempotency_key"] for r in receipts} >= {accepted["idempotency_key"]}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_persona_reload_in_web_reaches_a_separate_worker(store_url, receiver, tmp_path):
    """Reloading through a web-only app changes the answers of a worker-only app."""
    folder = tmp_path / "personas"
    folder.mkdir()
    persona = "name: core\ndisplay_name: Echo\nagent: {kind: echo, options: {prefix: '%s'}}\n"
    (folder / "core.yaml").write_text(persona % "v1:")
    data = base_config(store_url, tenants=[http_tenant(receiver.url)])
    data |= {"personas_dir": str(folder), "routing": {"default_persona": "core"}}
    async with (
        running_gateway(data, role="web") as web,
        running_gateway(data, role="worker") as worker,
        aiohttp.ClientSession() as session,
    ):
        rt = web.runtime
        _, token = await create_key(rt.store, rt.keyspace, name="root", role=Role.ADMIN)
        client = HttpChannelClient(
            session=session, base_url=web.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        await client.send(conversation_id="c1", text="a")
        [first] = await receiver.wait_for(1)
        assert first.payload["text"] == "v1:a"
        (folder / "core.yaml").write_text(persona % "v2:")
        async with session.post(
            web.ops_url + "/v1/personas/reload", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 200
        assert worker.runtime.worker is not None
        await eventually(
            lambda: worker.runtime.worker.personas["core"].agent.options["prefix"] == "v2:"
        )
        await client.send(conversation_id="c1", text="b")
        callbacks = await receiver.wait_for(2)
        assert callbacks[1].payload["text"] == "v2:b"


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_persona_reload_refuses_a_broken_folder(store_url, tmp_path):
    """A reload that would break routing answers 422 and keeps the personas in service."""
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "core.yaml").write_text("name: core\ndisplay_name: Core\n")
    data = base_config(store_url, tenants=[http_tenant(None)])
    data |= {"personas_dir": str(folder), "routing": {"default_persona": "core"}}
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        rt = gw.runtime
        _, token = await create_key(rt.store, rt.keyspace, name="root", role=Role.ADMIN)
        before = rt.personas
        (folder / "core.yaml").write_text("name: renamed\ndisplay_name: Renamed\n")
        async with session.post(
            gw.ops_url + "/v1/personas/reload", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            assert response.status == 422
            assert "routing.default_persona" in (await response.json())["message"]
        assert rt.personas is before
        assert rt.worker is not None
        assert rt.worker.personas is before


def _write_config(store_url, tmp_path, receiver_url):
    data = base_config(store_url, tenants=[http_tenant(receiver_url)])
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


async def test_cli_keys_usage_and_dlq_work_on_the_servers_store(
    admin, store_url, receiver, tmp_path, capsys
):
    """keys create/list/revoke, usage and dlq list/replay act on the running server's data."""
    gw, session, client, _ = admin
    rt = gw.runtime
    config = _write_config(store_url, tmp_path, receiver.url)
    run = asyncio.to_thread

    assert (
        await run(main, ["keys", "create", "-c", config, "--name", "ci", "--role", "viewer"]) == 0
    )
    token = capsys.readouterr().out.strip().splitlines()[-1]
    async with session.get(
        gw.ops_url + "/v1/tenants", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 200  # the server accepts a key the CLI made
    [ci] = [k for k in await list_keys(rt.store, rt.keyspace) if k.name == "ci"]
    assert await run(main, ["keys", "list", "-c", config]) == 0
    listing = capsys.readouterr().out
    assert ci.id in listing
    assert token not in listing
    assert await run(main, ["keys", "revoke", "-c", config, ci.id]) == 0
    assert f"revoked key {ci.id}" in capsys.readouterr().out
    async with session.get(
        gw.ops_url + "/v1/tenants", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 401

    receiver.fail_next(1, status=400)
    await client.send(conversation_id="c9", text="hello")
    await eventually(lambda: list_dead_letters(rt.store, rt.keyspace))
    assert await run(main, ["dlq", "list", "-c", config, "--tenant", "acme"]) == 0
    handle = capsys.readouterr().out.splitlines()[1].split()[0]
    assert await run(main, ["dlq", "replay", "-c", config, handle]) == 0
    assert "replayed" in capsys.readouterr().out
    await receiver.wait_for(1)

    assert await run(main, ["usage", "-c", config, "--tenant", "acme", "--json"]) == 0
    assert '"dead_letters": 1' in capsys.readouterr().out
    actions = [e.action for _, e in await AuditLog(rt.store, rt.keyspace).read()]
    assert actions == ["createKey", "revokeKey", "replayDeadLetter"]
