"""The whole path through the HTTP API channel, on SQLite and on a real Redis."""

import asyncio
import io
import time

import aiohttp
import pytest

from agents.base import AgentReply
from agents.registry import AGENT_KINDS
from connectors.http_api.emulator import HttpChannelClient
from gateway.deadletters import list_dead_letters, replay
from gateway.signing import SIGNATURE_HEADER, sign_request
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway

MESSAGES = "/v1/channels/http/acme/messages"
BODY = b'{"conversation_id": "c1", "user": {"id": "u"}, "text": "hello"}'


class SleepyAgent:
    """A test bot: answers with the text it got, after a pause when the text asks for one."""

    def __init__(self, options):
        self.delay = float(options.get("delay", 0))

    async def respond(self, context):
        if "slow" in context.message.text:
            await asyncio.sleep(self.delay)
        return AgentReply.text(f"re:{context.message.text}")


@pytest.fixture(autouse=True)
def sleepy_agent_kind(monkeypatch):
    monkeypatch.setitem(AGENT_KINDS, "sleepy", SleepyAgent)


@pytest.fixture
def personas_dir(tmp_path, request):
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "core.yaml").write_text(
        "name: core\ndisplay_name: Core\nagent: {kind: rules, options: {rules: "
        "[{keywords: [hello], reply: 'Hello $user_name!'}], fallback: 'fallback'}}\n"
    )
    (folder / "sleepy.yaml").write_text(
        "name: sleepy\ndisplay_name: Sleepy\nfailure_reply: too slow, sorry\n"
        "agent: {kind: sleepy, timeout_seconds: 0.5, options: {delay: 0.05}}\n"
    )
    (folder / "stuck.yaml").write_text(
        "name: stuck\ndisplay_name: Stuck\nfailure_reply: too slow, sorry\n"
        "agent: {kind: sleepy, timeout_seconds: 0.2, options: {delay: 5}}\n"
    )
    return folder


@pytest.fixture
async def gateway(store_url, receiver, personas_dir):
    data = base_config(store_url, tenants=[http_tenant(receiver.url)])
    data["personas_dir"] = str(personas_dir)
    data["routing"] = {
        "default_persona": "core",
        "rules": [
            {"persona": "sleepy", "regex": "^(A|B)"},
            {"persona": "stuck", "keywords": ["stuck"]},
        ],
    }
    async with running_gateway(data) as gw:
        yield gw


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def client(gateway, session):
    return HttpChannelClient(
        session=session, base_url=gateway.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
    )


async def _inbox_backlog(gw) -> int:
    rt = gw.runtime
    return sum(
        [
            await rt.store.backlog(rt.keyspace.inbox(p), "workers")
            for p in range(rt.keyspace.partitions)
        ]
    )


async def test_message_is_answered_with_a_signed_webhook(client, receiver):
    """A signed message is acked 202 and its reply arrives as a verified webhook."""
    status, body = await client.send(conversation_id="c1", text="hello", user_name="Ann")
    assert status == 202
    assert body["duplicate"] is False
    [reply] = await receiver.wait_for(1)
    assert reply.payload["text"] == "Hello Ann!"
    assert reply.payload["persona"]["display_name"] == "Core"
    assert reply.payload["in_reply_to"] == body["id"]
    assert receiver.rejected == 0


async def test_retried_event_is_answered_once(client, receiver):
    """The same event id sent three times at once is stored once and answered once."""
    results = await asyncio.gather(
        *(client.send(conversation_id="c1", text="hello", event_id="ev-1") for _ in range(3))
    )
    assert sorted(body["duplicate"] for _, body in results) == [False, True, True]
    await receiver.wait_for(1)
    await asyncio.sleep(0.5)  # time for a wrong second reply to show up
    assert len(receiver.received) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {SIGNATURE_HEADER: sign_request(["wrong-secret"], "POST", MESSAGES, BODY)},
        {
            SIGNATURE_HEADER: sign_request(
                [SECRETS["T_SIGN"]], "POST", MESSAGES, BODY, timestamp=int(time.time()) - 3600
            )
        },
        {"Authorization": "Bearer not-the-key"},
    ],
    ids=["missing", "wrong-secret", "stale", "bad-api-key"],
)
async def test_unauthenticated_requests_get_401_and_change_nothing(
    gateway, session, receiver, headers
):
    """Missing, wrong or stale credentials: 401, nothing in the inbox, no reply."""
    if SIGNATURE_HEADER in headers:
        headers = {SIGNATURE_HEADER: headers[SIGNATURE_HEADER]}
    headers = {"Content-Type": "application/json", **headers}
    async with session.post(f"{gateway.url}{MESSAGES}", data=BODY, headers=headers) as response:
        assert response.status == 401
        assert (await response.json())["error"]
    assert await _inbox_backlog(gateway) == 0
    await asyncio.sleep(0.2)
    assert receiver.received == []


async def test_api_key_and_old_signing_secret_are_accepted(gateway, session, receiver):
    """A tenant API key works, and so does the previous secret during a rotation."""
    by_key = HttpChannelClient(
        session=session, base_url=gateway.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
    )
    by_old = HttpChannelClient(
        session=session, base_url=gateway.url, tenant="acme", signing_secret=SECRETS["T_SIGN_OLD"]
    )
    assert (await by_key.send(conversation_id="k", text="hello"))[0] == 202
    assert (await by_old.send(conversation_id="o", text="hello"))[0] == 202
    assert len(await receiver.wait_for(2)) == 2


async def test_replies_can_be_long_polled(client):
    """A client without a callback reads replies by long-poll, resuming from a cursor."""
    await client.send(conversation_id="poll", text="hello")
    first = await client.replies(conversation_id="poll", wait=5)
    assert [r["text"] for r in first["replies"]] == ["Hello user-1!"]
    await client.send(conversation_id="poll", text="something else")
    second = await client.replies(conversation_id="poll", after=first["next"], wait=5)
    assert [r["text"] for r in second["replies"]] == ["fallback"]


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/v1/channels/http/nobody/messages", b"{}", 404, "unknown_tenant"),
        ("/v1/channels/http/acme/messages", b"{not json", 400, "bad_payload"),
        ("/v1/channels/http/acme/messages", b'{"conversation_id": "c"}', 400, "bad_payload"),
        ("/v1/channels/http/acme/messages", b"x" * 2_000_000, 413, "too_large"),
    ],
    ids=["unknown-tenant", "malformed", "missing-fields", "too-large"],
)
async def test_bad_input_gets_a_clear_error_and_a_metric(
    gateway, session, path, body, status, error
):
    """Bad requests are refused with a reason and counted; the gateway keeps serving."""
    headers = {
        SIGNATURE_HEADER: sign_request([SECRETS["T_SIGN"]], "POST", path, body),
        "Content-Type": "application/json",
    }
    payload = io.BytesIO(body) if len(body) > 1_000_000 else body  # large bodies as streams
    async with session.post(f"{gateway.url}{path}", data=payload, headers=headers) as response:
        assert response.status == status
        assert (await response.json())["error"] == error
    async with session.get(f"{gateway.ops_url}/metrics") as response:
        metrics = await response.text()
    assert f'flowbiz_inbound_total{{channel="http",outcome="{error}"}} 1.0' in metrics
    async with session.get(f"{gateway.url}/healthz") as response:
        assert response.status == 200


async def test_one_conversation_in_order_while_others_proceed(client, receiver):
    """A slow conversation's replies keep their order and do not hold up another one."""
    for n in range(10):
        await client.send(conversation_id="slow-conv", text=f"A{n} slow")
    for n in range(3):
        await client.send(conversation_id="fast-conv", text=f"B{n}")
    received = await receiver.wait_for(13, timeout=15)
    texts = [r.payload["text"] for r in received]
    a_texts = [t for t in texts if t.startswith("re:A")]
    assert a_texts == [f"re:A{n} slow" for n in range(10)]
    last_b = max(texts.index(f"re:B{n}") for n in range(3))
    assert last_b < texts.index("re:A9 slow")


async def test_agent_timeout_answers_with_the_persona_failure_reply(client, receiver, gateway):
    """An agent past its timeout is cancelled and the persona's failure reply is sent."""
    await client.send(conversation_id="stuck", text="stuck slow")
    [reply] = await receiver.wait_for(1, timeout=5)
    assert reply.payload["text"] == "too slow, sorry"


async def test_transient_failures_are_retried_until_delivered(client, receiver, gateway):
    """Two 500s then success: one delivery, two retries counted."""
    receiver.fail_next(2, status=500)
    await client.send(conversation_id="r", text="hello")
    assert len(await receiver.wait_for(1)) == 1
    retries = gateway.runtime.metrics.retries.labels("http")._value.get()
    assert retries == 2


async def test_retry_after_is_honoured(client, receiver):
    """A 429 with Retry-After delays the next try by at least that long."""
    receiver.fail_next(1, status=429, retry_after=0.4)
    started = time.monotonic()
    await client.send(conversation_id="r", text="hello")
    await receiver.wait_for(1)
    assert time.monotonic() - started >= 0.4


async def test_permanent_failure_is_dead_lettered_and_replays_once(client, receiver, gateway):
    """A 400 lands in the dead-letter list with its reason; a replay delivers it once."""
    receiver.fail_next(1, status=400)
    await client.send(conversation_id="d", text="hello")
    rt = gateway.runtime
    letters = await eventually(lambda: list_dead_letters(rt.store, rt.keyspace))
    [(handle, letter)] = letters
    assert (letter.reason, letter.code, letter.platform_code, letter.tenant) == (
        "callback answered 400",
        "rejected",
        "400",
        "acme",
    )
    assert receiver.received == []
    assert await replay(rt.store, rt.keyspace, handle) is True
    assert await replay(rt.store, rt.keyspace, handle) is False
    [reply] = await receiver.wait_for(1)
    assert reply.payload["text"] == "Hello user-1!"
    assert await list_dead_letters(rt.store, rt.keyspace) == []


async def test_readiness_reports_store_and_workers(gateway, session):
    """/readyz is 200 once the store answers and the consumers run."""
    async with session.get(f"{gateway.ops_url}/readyz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"


async def test_handled_entries_are_trimmed_from_inbox_and_outbox(client, receiver, gateway):
    """Once answered and delivered, messages do not stay in the queues' streams."""
    for n in range(5):
        await client.send(conversation_id=f"t{n}", text="hello")
    await receiver.wait_for(5)
    rt = gateway.runtime

    async def queues_empty() -> bool:
        for p in range(rt.keyspace.partitions):
            for stream in (rt.keyspace.inbox(p), rt.keyspace.outbox(p)):
                if await rt.store.range(stream, count=1):
                    return False
        return True

    await eventually(queues_empty, timeout=15)
