"""AdminClient against a served gateway: each operation answers with the server's own
models, and every refusal is the exception of its kind from gateway.client.errors."""

import asyncio

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver
from gateway.admin.keys import Role, create_key
from gateway.admin.operation import RETRY_AFTER_SECONDS
from gateway.admin.schemas import Health, TenantList
from gateway.client import (
    AdminClient,
    AuthenticationError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    TransportError,
    Unavailable,
)
from tests.client.conftest import Served
from tests.conftest import free_port, start_redis_server
from tests.harness import base_config, eventually, http_tenant, running_gateway


async def test_tenants_conversations_usage_and_personas(served: Served, receiver):
    admin = served.admin
    health = await admin.health()
    assert isinstance(health, Health)
    assert (health.status, health.store) == ("ok", "ok")
    tenants = await admin.list_tenants()
    assert isinstance(tenants, TenantList)
    assert [t.id for t in tenants.tenants] == ["acme"]
    assert (await admin.get_tenant("acme")).channels[0].kind == "http"
    assert (await admin.set_plan("acme", "free")).plan == "free"
    assert (await admin.get_quota("acme")).tenant == "acme"

    await served.channel.send("c1", "hello", user_id="u1")
    await receiver.wait_for(1)
    listed = await eventually(lambda: _when(admin.list_conversations("acme"), "conversations"))
    [summary] = listed.conversations
    assert summary.conversation_id == "c1"
    view = await admin.get_conversation("acme", summary.id)
    assert [entry.role for entry in view.history][:1] == ["user"]
    sent = await admin.send_message("acme", summary.id, "Your order shipped")
    callbacks = await receiver.wait_for(2)
    assert callbacks[1].payload["text"] == "Your order shipped"
    assert callbacks[1].idempotency_key == sent.idempotency_key
    receipts = await eventually(lambda: _when(admin.list_receipts("acme", summary.id), "receipts"))
    assert {r.status for r in receipts.receipts} >= {"delivered"}
    media = served.gateway.runtime.media
    assert media is not None
    kept = await media.blobs.put(
        tenant="acme",
        conversation_key="acme/http/c1",
        data=b"hi",
        content_type="text/plain",
        name=None,
    )
    exported = await admin.export_conversation("acme", summary.id)
    assert exported.conversation is not None
    [file] = exported.files
    assert (file.id, file.size, file.sha256, file.name) == (kept.id, 2, kept.sha256, None)
    assert file.url.startswith(served.gateway.url + "/media/")
    usage = await eventually(lambda: _when(admin.get_usage("acme", since="2000-01-01"), "rows"))
    assert usage.tenant == "acme"
    erased = await admin.erase_conversation("acme", summary.id)
    assert erased.erased
    assert erased.files_deleted == 1
    with pytest.raises(NotFound):
        await admin.get_conversation("acme", summary.id)

    personas = await admin.list_personas()
    assert "core" in {p.name for p in personas.personas}
    assert (await admin.list_persona_tools("core")).persona == "core"
    assert "core" in (await admin.reload_personas()).personas


async def test_keys_and_the_audit_log(served: Served):
    admin = served.admin
    created = await admin.create_key("reader", "viewer", tenant="acme")
    assert (created.key.role.value, created.key.tenant) == ("viewer", "acme")
    assert created.key.id in {k.id for k in (await admin.list_keys()).keys}
    async with AdminClient(served.gateway.ops_url, created.token) as reader:
        assert [t.id for t in (await reader.list_tenants()).tenants] == ["acme"]
        with pytest.raises(PermissionDenied) as denied:
            await reader.list_keys()
        assert denied.value.status == 403
        assert (await admin.revoke_key(created.key.id)).revoked_at is not None
        with pytest.raises(AuthenticationError) as refused:
            await reader.list_tenants()
        assert refused.value.status == 401
    audit = await admin.list_audit_events(tenant=None, limit=50)
    assert {"createKey", "revokeKey"} <= {item.event.action for item in audit.events}


async def test_dead_letters_list_inspect_replay_and_discard(
    served: Served, receiver: CallbackReceiver
):
    admin = served.admin
    receiver.fail_next(2, status=400)  # refused for good: each reply is dead-lettered
    await served.channel.send("c1", "hello", user_id="u1")
    await served.channel.send("c2", "hello", user_id="u2")
    letters = await eventually(
        lambda: _when(admin.list_dead_letters(tenant="acme"), "dead_letters", 2)
    )
    first, second = letters.dead_letters
    assert (await admin.get_dead_letter(first.handle)).letter.tenant == "acme"
    replayed = await admin.replay_dead_letter(first.handle)
    assert (replayed.handle, replayed.replayed) == (first.handle, True)
    [delivered] = await receiver.wait_for(1)
    assert first.letter.conversation == f"acme/http/{delivered.payload['conversation_id']}"
    await admin.discard_dead_letter(second.handle)
    assert (await admin.list_dead_letters(tenant="acme")).dead_letters == []
    with pytest.raises(NotFound) as gone:
        await admin.discard_dead_letter(second.handle)
    assert gone.value.error == "not_found"


async def _when(answer, field, count=1):
    """The answer once its list ``field`` has ``count`` items (for eventually)."""
    value = await answer
    return value if len(getattr(value, field)) >= count else None


async def test_refusals_raise_the_exception_of_their_kind(served: Served):
    async with AdminClient(served.gateway.ops_url, "fbk_0000000000000000_nope") as stranger:
        with pytest.raises(AuthenticationError):
            await stranger.health()
    with pytest.raises(NotFound) as missing:
        await served.admin.get_tenant("nobody")
    assert (missing.value.status, missing.value.error) == (404, "not_found")
    with pytest.raises(InvalidRequest) as unknown_plan:
        await served.admin.set_plan("acme", "no-such-plan")
    assert unknown_plan.value.status == 422  # sent, and refused by the server
    with pytest.raises(InvalidRequest) as bad_role:
        await served.admin.create_key("x", "superuser")
    assert bad_role.value.error == "invalid_body"  # refused before sending
    with pytest.raises(NotFound):
        await served.admin.get_dead_letter("not-a-handle")
    async with AdminClient(f"http://127.0.0.1:{free_port()}", served.token, timeout=2) as nowhere:
        with pytest.raises(TransportError):
            await nowhere.health()


async def test_a_session_passed_in_is_shared_and_left_open(served: Served):
    async with aiohttp.ClientSession() as session:
        clients = [AdminClient(served.gateway.ops_url, served.token, session=session) for _ in "ab"]
        answers = await asyncio.gather(*(c.list_tenants() for c in clients))
        for client in clients:
            await client.close()
        assert not session.closed
        assert [len(a.tenants) for a in answers] == [1, 1]


@pytest.mark.redis
async def test_a_store_outage_is_unavailable_and_health_says_degraded(
    tmp_path, receiver: CallbackReceiver
):
    """Redis stopped: health's 503 is its report, returned; any other route raises
    Unavailable with the Retry-After the gateway sent."""
    redis = start_redis_server(tmp_path)
    try:
        data = base_config(redis.url, tenants=[http_tenant(receiver.url)])
        async with running_gateway(data) as gw:
            rt = gw.runtime
            _, token = await create_key(rt.store, rt.keyspace, name="ops", role=Role.ADMIN)
            async with AdminClient(gw.ops_url, token) as admin:
                assert (await admin.health()).status == "ok"
                redis.stop()
                health = await admin.health()
                assert (health.status, health.store) == ("degraded", "unreachable")
                with pytest.raises(Unavailable) as down:
                    await admin.get_quota("acme")
                assert (down.value.status, down.value.error) == (503, "store_unavailable")
                assert down.value.retry_after == RETRY_AFTER_SECONDS
    finally:
        redis.stop()


async def test_a_proactive_message_carries_rich_parts_and_only_this_conversations_files(
    served: Served, receiver
):
    """Cards, quick replies, options and a file of this conversation reach the channel; a
    file of another conversation, or by plain http, is refused 422 and nothing is sent."""
    admin = served.admin
    await served.channel.send("c1", "hello", user_id="u1")
    await served.channel.send("c2", "hello", user_id="u2")
    await receiver.wait_for(2)
    listed = await eventually(lambda: _when(admin.list_conversations("acme"), "conversations"))
    ids = {c.conversation_id: c.id for c in listed.conversations}
    media = served.gateway.runtime.media
    assert media is not None
    mine, theirs = [
        await media.blobs.put(
            tenant="acme",
            conversation_key=key,
            data=b"%PDF-1.4\n",
            content_type="application/pdf",
            name="invoice.pdf",
        )
        for key in ("acme/http/c1", "acme/http/c2")
    ]
    sent = await admin.send_message(
        "acme",
        ids["c1"],
        "Your invoice",
        quick_replies=[{"label": "Thanks", "value": "thanks"}],
        cards=[
            {
                "title": "Order 1042",
                "text": "Shipped",
                "buttons": [{"label": "Track", "value": "track"}],
            }
        ],
        options={"button": "Pick", "options": [{"label": "Refund", "value": "refund"}]},
        attachments=[{"kind": "file", "blob": mine.id}],
    )
    callbacks = await receiver.wait_for(3)
    reply = callbacks[2].payload
    assert callbacks[2].idempotency_key == sent.idempotency_key
    assert [c["title"] for c in reply["cards"]] == ["Order 1042"]
    assert reply["quick_replies"][0]["value"] == "thanks"
    assert reply["options"]["options"][0]["value"] == "refund"
    [file] = reply["attachments"]
    assert (file["blob"], file["mime_type"]) == (mine.id, "application/pdf")
    async with aiohttp.ClientSession() as session, session.get(file["url"]) as response:
        assert await response.read() == b"%PDF-1.4\n"
    for attachment in ({"blob": theirs.id}, {"url": "http://example.com/a.png"}):
        with pytest.raises(InvalidRequest):
            await admin.send_message("acme", ids["c1"], "x", attachments=[attachment])
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 3
