"""Replaying and re-targeting captured HTTP-channel signatures, against a served gateway.

The legitimate request is made by the channel's own client (what a website runs) and
captured off the wire with aiohttp's request tracing; the attack then re-sends its bytes.
"""

import asyncio
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from connectors.http_api.emulator import HttpChannelClient
from gateway.errors import ConfigError
from gateway.signing import SIGNATURE_HEADER, sign
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, running_gateway

MESSAGES = "/v1/channels/http/acme/messages"


def replies_path(conversation: str) -> str:
    return f"/v1/channels/http/acme/conversations/{conversation}/replies"


@dataclass
class Wire:
    """Every request the session sent: method, URL, headers and body, as they went out."""

    sent: list[SimpleNamespace] = field(default_factory=list)

    def trace(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()
        config.on_request_headers_sent.append(self._headers)
        config.on_request_chunk_sent.append(self._chunk)
        return config

    async def _headers(self, session: Any, ctx: Any, params: Any) -> None:
        self.sent.append(
            SimpleNamespace(
                method=params.method, url=params.url, headers=dict(params.headers), body=b""
            )
        )

    async def _chunk(self, session: Any, ctx: Any, params: Any) -> None:
        self.sent[-1].body += params.chunk

    def last(self, method: str) -> SimpleNamespace:
        return [r for r in self.sent if r.method == method][-1]


@pytest.fixture
def wire():
    return Wire()


@pytest.fixture
async def session(wire):
    async with aiohttp.ClientSession(trace_configs=[wire.trace()]) as session:
        yield session


def _gateway_config(store_url, receiver, **channel_overrides):
    tenant = http_tenant(receiver.url) | {"plan": "metered"}  # a plan that counts replies
    tenant["channels"][0] |= channel_overrides
    return base_config(
        store_url, tenants=[tenant], plans={"metered": {"monthly_outbound_messages": 100}}
    )


@pytest.fixture
async def gateway(store_url, receiver):
    async with running_gateway(_gateway_config(store_url, receiver)) as gw:
        yield gw


@pytest.fixture
def client(gateway, session):
    return HttpChannelClient(
        session=session, base_url=gateway.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
    )


async def _replay(session, gateway, method, target, headers, body=b""):
    headers = {k: v for k, v in headers.items() if k in (SIGNATURE_HEADER, "Content-Type")}
    if method == "POST":  # the edge refuses a body of another declared type before its signature
        headers.setdefault("Content-Type", "application/json")
    async with session.request(
        method, f"{gateway.url}{target}", data=body, headers=headers
    ) as response:
        return response.status, await response.json()


async def _poll_and_capture(client, wire, conversation):
    """A legitimate poll of ``conversation``: its answer and the signature header it carried."""
    answer = await client.replies(conversation_id=conversation, wait=5)
    return answer, wire.last("GET").headers


async def test_attack_signed_poll_replayed_against_another_conversation_refused(
    client, wire, session, gateway, receiver
):
    """A captured poll of Alice's replies, re-aimed at Bob's conversation or at another
    page of Alice's, reads nothing: the signature covers the path and the query."""
    await client.send(conversation_id="alice", text="hello", user_name="Alice")
    await client.send(conversation_id="bob", text="hello", user_name="Bob")
    await receiver.wait_for(2)
    answer, headers = await _poll_and_capture(client, wire, "alice")
    assert [r["text"].split("!")[0] for r in answer["replies"]] == ["Hello Alice"]
    for target in (
        replies_path("bob"),
        replies_path("bob") + "?wait=5",
        replies_path("alice") + "?wait=0&thread=t1",
        replies_path("alice") + "?wait=0&after=0",
    ):
        status, body = await _replay(session, gateway, "GET", target, headers)
        assert status == 401, (target, body)
        assert body["error"] == "bad_signature"
        assert "replies" not in body


async def test_attack_signed_poll_replayed_verbatim_refused(client, wire, session, gateway):
    """The same poll, byte for byte, works once: a replay cannot read later replies."""
    await client.send(conversation_id="alice", text="hello")
    await _poll_and_capture(client, wire, "alice")
    sent = wire.last("GET")
    target = sent.url.raw_path_qs
    status, body = await _replay(session, gateway, "GET", target, sent.headers)
    assert (status, body["error"]) == (401, "replayed_signature")


async def test_attack_signed_message_without_event_id_replayed_is_queued_once(
    client, wire, session, gateway, receiver
):
    """A message sent without event_id, replayed three times inside the window: each
    replay is acknowledged as a duplicate of it, one reply, one unit of quota."""
    status, first = await client.send(conversation_id="carol", text="hello", user_name="Carol")
    assert (status, first["duplicate"]) == (202, False)
    sent = wire.last("POST")
    assert "event_id" not in json.loads(sent.body)
    replays = await asyncio.gather(
        *(_replay(session, gateway, "POST", MESSAGES, sent.headers, sent.body) for _ in range(3))
    )
    for status, body in replays:
        assert status == 202
        assert body["duplicate"] is True
        assert body["event_id"] == first["event_id"]
    await receiver.wait_for(1)
    await asyncio.sleep(0.5)  # time for a wrong second reply to show up
    assert len(receiver.received) == 1
    assert (await gateway.runtime.quotas.status("acme")).outbound_messages.used == 1


async def test_attack_poll_signature_reused_as_a_message_post_refused(
    client, wire, session, gateway
):
    """A poll's signature (empty body) presented on a POST is refused: the method and the
    path are signed, so it never reaches the body check."""
    await _poll_and_capture(client, wire, "alice")
    headers = wire.last("GET").headers
    status, body = await _replay(session, gateway, "POST", MESSAGES, headers)
    assert (status, body["error"]) == (401, "bad_signature")


async def test_attack_body_only_v1_signature_refused_by_default(session, gateway, receiver):
    """A v1 signature (body only) is refused unless the channel opts in, with a reason that
    tells a client still on v1 what to change."""
    body = b'{"conversation_id": "c1", "user": {"id": "u"}, "text": "hello"}'
    headers = {SIGNATURE_HEADER: sign([SECRETS["T_SIGN"]], body)}
    status, answer = await _replay(session, gateway, "POST", MESSAGES, headers, body)
    assert (status, answer["error"]) == (401, "legacy_signature")
    await asyncio.sleep(0.3)
    assert receiver.received == []


async def test_v1_signature_accepted_when_the_channel_allows_it(store_url, receiver, session):
    """With ``accept_v1_signatures`` a v1 client keeps working during its migration, and
    a replay of its message without event_id is still folded into the first."""
    config = _gateway_config(store_url, receiver, accept_v1_signatures=True)
    async with running_gateway(config) as gw:
        body = b'{"conversation_id": "c1", "user": {"id": "u"}, "text": "hello"}'
        headers = {SIGNATURE_HEADER: sign([SECRETS["T_SIGN"]], body)}
        status, first = await _replay(session, gw, "POST", MESSAGES, headers, body)
        assert (status, first["duplicate"]) == (202, False)
        status, again = await _replay(session, gw, "POST", MESSAGES, headers, body)
        assert (status, again["duplicate"]) == (202, True)
        await receiver.wait_for(1)
        v2 = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )
        assert (await v2.send(conversation_id="c2", text="hello"))[0] == 202
        counted = gw.runtime.metrics.render()
        assert b'flowbiz_channel_events_total{channel="http",event="v1_signature"} 2.0' in counted


@pytest.mark.parametrize("conversation", ["a b", "50%", "ü~x", "q?x=1", "a+b", "a/b", "x%2Fy"])
async def test_polls_of_ids_that_need_percent_encoding_verify(client, receiver, conversation):
    """The canonical path is the same on both ends for any conversation id a client picks."""
    assert (await client.send(conversation_id=conversation, text="hello"))[0] == 202
    answer = await client.replies(conversation_id=conversation, wait=5)
    assert [r["conversation_id"] for r in answer["replies"]] == [conversation]


async def test_replay_window_longer_than_the_dedupe_claim_is_a_config_error(store_url, receiver):
    """A replayed message is folded by its dedupe claim: a window that outlives the claim
    would let a still-fresh replay through, so the gateway refuses to start with it."""
    config = _gateway_config(store_url, receiver, replay_window_seconds=600)
    config["store"]["dedupe_ttl_seconds"] = 300
    with pytest.raises(ConfigError) as caught:
        async with running_gateway(config):
            pass
    assert "replay_window_seconds" in str(caught.value)
