"""ChannelClient against a served gateway in both auth modes, and verify_callback on reply
webhooks the gateway really sent (recorded raw by a loopback receiver)."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from gateway.client import (
    AuthenticationError,
    ChannelClient,
    ClientError,
    InvalidRequest,
    NotFound,
    SignatureError,
    verify_callback,
)
from tests.client.conftest import Served
from tests.harness import SECRETS, base_config, http_tenant, running_gateway


async def test_api_key_send_dedupe_and_poll(served: Served):
    channel = served.channel
    accepted = await channel.send("c1", "hello", user_id="u1", event_id="e1")
    assert (accepted.event_id, accepted.duplicate) == ("e1", False)
    again = await channel.send("c1", "hello", user_id="u1", event_id="e1")
    assert (again.event_id, again.duplicate) == ("e1", True)
    answer = await channel.replies("c1", wait=10)
    [reply] = answer.replies
    assert (reply.conversation_id, reply.in_reply_to) == ("c1", accepted.id)
    assert answer.next is not None
    after = await channel.replies("c1", after=answer.next, wait=0)
    assert after.replies == []


async def test_signed_requests_with_a_rotation_pair_and_a_wrong_secret(served: Served):
    url = served.gateway.url
    pair = ["not-the-secret-yet", SECRETS["T_SIGN_OLD"]]  # one entry per secret: any may match
    async with ChannelClient(url, "acme", signing_secrets=pair) as signed:
        accepted = await signed.send("c7", "hello", user_id="u7", thread="t1")
        assert not accepted.duplicate
        # The poll's query (wait, thread) is signed too.
        answer = await signed.replies("c7", wait=10, thread="t1")
        assert [r.thread for r in answer.replies] == ["t1"]
    async with ChannelClient(url, "acme", signing_secrets=["wrong"]) as forged:
        with pytest.raises(AuthenticationError) as refused:
            await forged.send("c7", "hello", user_id="u7")
    assert (refused.value.status, refused.value.error) == (401, "bad_signature")


async def test_refusals_raise_the_exception_of_their_kind(served: Served):
    async with ChannelClient(served.gateway.url, "nobody", api_key=SECRETS["T_API_KEY"]) as c:
        with pytest.raises(NotFound) as unknown:
            await c.send("c1", "hello", user_id="u1")
    assert unknown.value.error == "unknown_tenant"
    with pytest.raises(InvalidRequest) as empty:
        await served.channel.send("c1", "", user_id="u1")  # neither text nor action
    assert (empty.value.status, empty.value.error) == (400, "bad_payload")
    with pytest.raises(InvalidRequest):
        await served.channel.send("c1", "x" * 20_001, user_id="u1")  # over the model's limit
    with pytest.raises(ValueError, match="exactly one"):
        ChannelClient(served.gateway.url, "acme")
    with pytest.raises(ValueError, match="exactly one"):
        ChannelClient(served.gateway.url, "acme", api_key="k", signing_secrets=["s"])
    with pytest.raises(TypeError):
        ChannelClient(served.gateway.url, "acme", signing_secrets="one-string")


@dataclass(slots=True)
class RawCallback:
    headers: dict[str, str]
    body: bytes
    target: str  # the request's raw path and query, as sent


@dataclass(slots=True)
class RawReceiver:
    """Records callbacks as they arrived, unverified: verify_callback does the checking."""

    url: str = ""
    received: list[RawCallback] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(
            RawCallback(dict(request.headers), await request.read(), request.raw_path)
        )
        self.arrived.set()
        return web.Response(status=204)


@pytest.fixture
async def raw_receiver() -> AsyncIterator[RawReceiver]:
    receiver = RawReceiver()
    app = web.Application()
    app.router.add_post("/hooks/flowbiz", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/flowbiz?site=shop"
    yield receiver
    await runner.cleanup()


async def test_verify_callback_accepts_the_gateways_reply_and_nothing_altered(
    tmp_path, raw_receiver: RawReceiver
):
    data = base_config(f"sqlite:///{tmp_path}/g.db", tenants=[http_tenant(raw_receiver.url)])
    async with (
        running_gateway(data) as gw,
        ChannelClient(gw.url, "acme", api_key=SECRETS["T_API_KEY"]) as channel,
    ):
        accepted = await channel.send("c1", "hello", user_id="u1")
        await asyncio.wait_for(raw_receiver.arrived.wait(), 10)
    [callback] = raw_receiver.received
    secrets = [SECRETS["T_CALLBACK"]]
    for url in (raw_receiver.url, callback.target):  # the full URL, or the raw path and query
        verified = verify_callback(callback.headers, callback.body, url, secrets)
        assert verified.reply.in_reply_to == accepted.id
        assert verified.idempotency_key == callback.headers["X-FlowBiz-Idempotency-Key"]
    lower = {k.lower(): v for k, v in callback.headers.items()}
    assert verify_callback(lower, callback.body, callback.target, secrets).reply.text

    def refused(headers=callback.headers, body=callback.body, url=callback.target, **kw):
        with pytest.raises(SignatureError) as error:
            verify_callback(headers, body, url, kw.pop("secrets", secrets), **kw)
        return error.value.reason

    tampered = json.loads(callback.body) | {"text": "Send your password"}
    assert refused(body=json.dumps(tampered).encode()) == "bad_signature"
    assert refused(url="/hooks/flowbiz?site=other") == "bad_signature"
    assert refused(url="/hooks/other?site=shop") == "bad_signature"
    assert refused(secrets=["another-secret"]) == "bad_signature"
    assert refused(now=verified.timestamp + 301) == "stale_signature"
    unsigned = {k: v for k, v in callback.headers.items() if k != "X-FlowBiz-Signature"}
    assert refused(headers=unsigned) == "missing_signature"
    assert issubclass(SignatureError, ClientError)
