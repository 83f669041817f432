"""Attack: a validly signed body nested far too deep, on every connector's webhook.

Without a limit, Slack and LINE answered 500 (``RecursionError`` in ``json.loads``), and a
body between 200 and ~1000 levels was acknowledged and then dead-lettered by the worker
(pydantic-core cannot read its inbox entry back). The edge refuses it: 400 ``too_deep``, a
metric, nothing in the inbox. Each body here is signed exactly as its platform signs it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from connectors.line.emulator import sign_body
from connectors.slack.emulator import block_actions_payload, event_callback, message_event
from gateway.envelope import RawEvent, is_raw_event
from gateway.models import InboundMessage
from gateway.signing import SIGNATURE_HEADER, sign
from tests.harness import SECRETS, RunningGateway
from tests.properties.conftest import (
    LINE_DEST,
    LINE_SECRET,
    SLACK_SECRET,
    WA_SENDER,
    WA_TOKEN,
    edge,
    session,
)

__all__ = ["edge", "session"]  # the fixtures, shared with the property tests

DEEP_MARK = '"@deep@"'
DEPTHS = [150, 5000]  # past the edge's limit but parseable by json.loads; past both parsers


def _nest(document: object, depth: int) -> bytes:
    """``document`` serialised with its "@deep@" value replaced by ``depth`` nested arrays."""
    return json.dumps(document).replace(DEEP_MARK, "[" * depth + "]" * depth, 1).encode()


def _slack_headers(body: bytes, content_type: str) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(SLACK_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + digest.hexdigest(),
    }


async def _inbox(gw: RunningGateway) -> list[InboundMessage]:
    rt = gw.runtime
    assert rt.store is not None
    found = []
    for partition in range(rt.keyspace.partitions):
        for entry in await rt.store.range(rt.keyspace.inbox(partition), count=100):
            if is_raw_event(entry.payload):  # stored as the platform sent it: parse it
                event = RawEvent.model_validate_json(entry.payload)
                parsed = await rt.connectors[event.channel].parse(event)
                assert parsed is not None
                found.append(parsed)
            else:
                found.append(InboundMessage.model_validate_json(entry.payload))
    return found


async def _refused_too_deep(
    gw: RunningGateway, session: aiohttp.ClientSession, channel: str, path: str, body: bytes,
    headers: dict[str, str],
) -> None:  # fmt: skip
    before = gw.runtime.metrics.inbound.labels(channel, "too_deep")._value.get()
    async with session.post(gw.url + path, data=body, headers=headers) as response:
        assert response.status == 400, await response.text()
        assert (await response.json())["error"] == "too_deep"
    assert gw.runtime.metrics.inbound.labels(channel, "too_deep")._value.get() == before + 1
    assert await _inbox(gw) == []


@pytest.mark.parametrize("depth", DEPTHS)
async def test_attack_deep_json_on_the_http_channel_is_refused(
    edge: RunningGateway, session: aiohttp.ClientSession, depth: int
) -> None:
    body = _nest(
        {"conversation_id": "c", "user": {"id": "u"}, "text": "hi", "extra": "@deep@"}, depth
    )
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign([SECRETS["T_SIGN"]], body),
    }
    await _refused_too_deep(edge, session, "http", "/v1/channels/http/acme/messages", body, headers)


@pytest.mark.parametrize("depth", DEPTHS)
async def test_attack_deep_json_on_slack_events_is_refused(
    edge: RunningGateway, session: aiohttp.ClientSession, depth: int
) -> None:
    event = message_event(text="hello", ts="1700000000.000100") | {"blocks": "@deep@"}
    body = _nest(event_callback(event), depth)
    headers = _slack_headers(body, "application/json")
    await _refused_too_deep(edge, session, "slack", "/slack/events", body, headers)


@pytest.mark.parametrize("depth", DEPTHS)
async def test_attack_deep_json_in_slack_interactivity_payload_is_refused(
    edge: RunningGateway, session: aiohttp.ClientSession, depth: int
) -> None:
    payload = block_actions_payload(value="pricing", message_ts="1700000000.000300")
    payload["state"] = "@deep@"
    body = b"payload=" + quote(_nest(payload, depth).decode()).encode()
    headers = _slack_headers(body, "application/x-www-form-urlencoded")
    await _refused_too_deep(edge, session, "slack", "/slack/interactivity", body, headers)


@pytest.mark.parametrize("depth", DEPTHS)
async def test_attack_deep_json_on_line_is_refused(
    edge: RunningGateway, session: aiohttp.ClientSession, depth: int
) -> None:
    event = {
        "type": "message",
        "mode": "active",
        "timestamp": 1700000000000,
        "webhookEventId": "01H0000000000000000000DEEP",
        "deliveryContext": {"isRedelivery": False},
        "source": {"type": "user", "userId": "U" + "0d" * 16},
        "replyToken": "r" * 32,
        "message": {"type": "text", "id": "1", "text": "hi", "emojis": "@deep@"},
    }
    body = _nest({"destination": LINE_DEST, "events": [event]}, depth)
    headers = {
        "Content-Type": "application/json",
        "X-Line-Signature": sign_body(LINE_SECRET, body),
    }
    await _refused_too_deep(edge, session, "line", "/line/webhook", body, headers)


async def test_brackets_a_customer_types_are_text_not_nesting(
    edge: RunningGateway, session: aiohttp.ClientSession
) -> None:
    """No false alarm: brackets inside a JSON string, or in a plain form field, are text.

    WhatsApp (Twilio) bodies are forms whose fields are all text: a message of brackets is a
    message, accepted and readable back from the inbox.
    """
    text = "[" * 300 + "{" * 300
    body = json.dumps(event_callback(message_event(text=text, ts="1700000000.000400"))).encode()
    async with session.post(
        edge.url + "/slack/events", data=body, headers=_slack_headers(body, "application/json")
    ) as response:
        assert response.status == 200
    form = {
        "MessageSid": "SM" + "cd" * 16,
        "AccountSid": "AC" + "9b" * 16,
        "From": "whatsapp:+14155550100",
        "To": WA_SENDER,
        "Body": text,
        "NumMedia": "0",
        "ProfileName": "Eve",
        "WaId": "14155550100",
    }
    url = edge.url + "/whatsapp/webhook"
    async with session.post(
        url,
        data=urlencode(form).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": RequestValidator(WA_TOKEN).compute_signature(url, form),
        },
    ) as response:
        assert response.status == 200, await response.text()
    texts = sorted(m.text for m in await _inbox(edge))
    assert texts == [text, text]
