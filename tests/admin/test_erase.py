"""Erasing a conversation leaves nothing of it in the store, on SQLite and on Redis.

The check does not trust the store's own API: it reads every table of the SQLite file, or
every key of every type in Redis, and looks for the conversation's marks anywhere.
"""

import aiohttp
import pytest

from connectors.http_api.emulator import HttpChannelClient
from gateway.admin.keys import Role, create_key
from gateway.conversations import conversation_handle
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway
from tests.leftovers import leftovers
from tests.media.conftest import PDF, PNG

MARKS = (b"victim", b"ev-secret")


async def _leftovers(store_url: str) -> list[str]:
    return await leftovers(store_url, MARKS)


async def test_erase_removes_every_trace_of_a_conversation(store_url, receiver):
    """State, history, replies, receipts, dedupe, delivery, buckets, queues, dead letters: gone."""
    data = base_config(store_url, tenants=[http_tenant(receiver.url) | {"plan": "limited"}])
    data["plans"] = {
        "limited": {
            "monthly_outbound_messages": 100,
            "inbound_per_user_per_minute": 60,
            "replies_per_conversation_per_minute": 60,
        }
    }
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        rt = gw.runtime
        _, token = await create_key(rt.store, rt.keyspace, name="ops", role=Role.ADMIN)
        auth = {"Authorization": f"Bearer {token}"}
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        await client.send(
            conversation_id="victim", text="hello", user_id="victim-user", event_id="ev-secret-1"
        )
        await client.send(conversation_id="other", text="hello", user_id="someone")
        await receiver.wait_for(2)
        receiver.fail_next(1, status=400)  # the next reply is refused for good: a dead letter
        await client.send(
            conversation_id="victim", text="pricing", user_id="victim-user", event_id="ev-secret-2"
        )

        async def dead_lettered():
            async with session.get(gw.ops_url + "/v1/dead-letters", headers=auth) as response:
                return (await response.json())["dead_letters"]

        await eventually(dead_lettered)
        assert await _leftovers(store_url)  # the marks really are in the store before

        handle = conversation_handle("acme/http/victim")
        url = f"{gw.ops_url}/v1/tenants/acme/conversations/{handle}"
        async with session.delete(url, headers=auth) as response:
            assert response.status == 200, await response.text()
            report = await response.json()
        assert report["erased"] is True
        assert report["stream_entries_deleted"] >= 4  # 2 inbox, 1+ outbox, 1 dead letter

        assert await _leftovers(store_url) == []
        async with session.get(url, headers=auth) as response:
            assert response.status == 404
        async with session.delete(url, headers=auth) as response:
            assert response.status == 404
        # the other conversation is untouched
        other = conversation_handle("acme/http/other")
        async with session.get(
            f"{gw.ops_url}/v1/tenants/acme/conversations/{other}", headers=auth
        ) as response:
            assert response.status == 200
            assert len((await response.json())["history"]) == 2
        # the audit log records the erase without naming the conversation
        async with session.get(gw.ops_url + "/v1/audit", headers=auth) as response:
            events = [i["event"] for i in (await response.json())["events"]]
        erases = [e for e in events if e["action"] == "eraseConversation"]
        assert [e["status"] for e in erases] == [200, 404]  # failed attempts are audited too
        erase = erases[0]
        assert erase["target"]["conversation"].startswith("sha256:")
        assert erase["remote"] == "127.0.0.1"


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_erased_event_can_be_sent_again_as_new(store_url, receiver):
    """The dedupe claim is erased too: the same event id afterwards counts as a new message."""
    data = base_config(store_url, tenants=[http_tenant(receiver.url)])
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        rt = gw.runtime
        _, token = await create_key(rt.store, rt.keyspace, name="ops", role=Role.ADMIN)
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        await client.send(conversation_id="victim", text="hi", event_id="ev-1")
        await receiver.wait_for(1)
        handle = conversation_handle("acme/http/victim")
        async with session.delete(
            f"{gw.ops_url}/v1/tenants/acme/conversations/{handle}",
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200
        _, body = await client.send(conversation_id="victim", text="hi", event_id="ev-1")
        assert body["duplicate"] is False


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_erase_takes_the_desk_thread_of_a_handed_off_customer(store_url, receiver):
    """The desk's thread for the customer (announcement, relays, link back) goes with them."""
    tenant = http_tenant(receiver.url) | {
        "handoff": {"operators": {"channel": "http", "conversation_id": "desk"}}
    }
    data = base_config(store_url, tenants=[tenant])
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        rt = gw.runtime
        _, token = await create_key(rt.store, rt.keyspace, name="ops", role=Role.ADMIN)
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        await client.send(conversation_id="victim", text="/human", user_id="victim-user")
        await receiver.wait_for(2)  # the customer's notice and the desk's announcement
        await client.send(conversation_id="victim", text="victim here", user_id="victim-user")
        await receiver.wait_for(3)  # relayed to the desk
        handle = conversation_handle("acme/http/victim")
        async with session.delete(
            f"{gw.ops_url}/v1/tenants/acme/conversations/{handle}",
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200
        assert await _leftovers(store_url) == []


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("blobs", ["files", "s3"])
async def test_erase_deletes_the_conversations_kept_files_and_export_lists_them(
    store_url, receiver, tmp_path, request, blobs
):
    """No blob of the erased conversation is left in the folder or the bucket (read there,
    not through the store's API); another conversation's file stays; the export listed the
    files with links that worked."""
    media: dict[str, object] = {"dir": str(tmp_path / "media")}
    if blobs == "s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = await s3.make_bucket()
        media["s3"] = s3.config_data(bucket)

    async def left() -> list[str]:
        if blobs == "s3":
            return sorted(await s3.keys(bucket))
        folder = tmp_path / "media"
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    data = base_config(store_url, tenants=[http_tenant(receiver.url)], media=media)
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        rt = gw.runtime
        assert rt.media is not None
        _, token = await create_key(rt.store, rt.keyspace, name="ops", role=Role.ADMIN)
        auth = {"Authorization": f"Bearer {token}"}
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        await client.send(conversation_id="victim", text="hello", user_id="victim-user")
        await client.send(conversation_id="other", text="hello", user_id="someone")
        await receiver.wait_for(2)
        kept = [
            await rt.media.blobs.put(
                tenant="acme",
                conversation_key="acme/http/victim",
                data=content,
                content_type=kind,
                name=name,
            )
            for content, kind, name in (
                (PNG, "image/png", "victim.png"),
                (PDF, "application/pdf", None),
            )
        ]
        other = await rt.media.blobs.put(
            tenant="acme",
            conversation_key="acme/http/other",
            data=PNG,
            content_type="image/png",
            name="other.png",
        )
        before = await left()
        assert len(before) in (3, 6)  # S3: one object each; the folder: bytes and metadata

        url = (
            f"{gw.ops_url}/v1/tenants/acme/conversations/{conversation_handle('acme/http/victim')}"
        )
        async with session.get(url + "/export", headers=auth) as response:
            assert response.status == 200
            files = (await response.json())["files"]
        assert [(f["id"], f["content_type"], f["size"], f["sha256"], f["name"]) for f in files] == [
            (i.id, i.content_type, i.size, i.sha256, i.name) for i in kept
        ]
        async with session.get(files[0]["url"]) as response:
            assert response.status == 200
            assert await response.read() == PNG

        async with session.delete(url, headers=auth) as response:
            assert response.status == 200, await response.text()
            report = await response.json()
        assert report["files_deleted"] == 2
        after = await left()
        assert len(after) == len(before) // 3
        assert all(other.id.split(".")[2] in path for path in after)
        assert (await rt.media.blobs.get(other.id))[1] == PNG
        async with session.get(files[0]["url"]) as response:
            assert response.status == 404  # the link outlived its file


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_an_erase_the_file_store_fails_erases_nothing_and_can_be_retried(
    store_url, receiver, s3_server
):
    """The files go first: a bucket out of reach answers 503 with the conversation whole."""
    media = {"s3": s3_server.config_data("flowbiz-no-such-bucket")}
    data = base_config(store_url, tenants=[http_tenant(receiver.url)], media=media)
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        rt = gw.runtime
        _, token = await create_key(rt.store, rt.keyspace, name="ops", role=Role.ADMIN)
        auth = {"Authorization": f"Bearer {token}"}
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        await client.send(conversation_id="victim", text="hello", user_id="victim-user")
        await receiver.wait_for(1)
        url = (
            f"{gw.ops_url}/v1/tenants/acme/conversations/{conversation_handle('acme/http/victim')}"
        )
        async with session.delete(url, headers=auth) as response:
            assert response.status == 503
            assert response.headers["Retry-After"]
        async with session.get(url, headers=auth) as response:
            assert response.status == 200
            assert len((await response.json())["history"]) == 2
        async with session.get(url + "/export", headers=auth) as response:
            assert response.status == 503
