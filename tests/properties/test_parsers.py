"""Every connector's parser (the worker's parse step) against mutated stored events.

The edge appends a verified event as the platform sent it (gateway/envelope.py) and the
worker later turns it into a message with the connector's ``parse``. An event the edge took
is acknowledged: if ``parse`` then fails with anything but ``EventParseError`` the worker can
only file it as a ``parser_error`` (a defect). So, for any envelope — a real one captured
from the real edge, its event and context mutated (fields deleted, replaced by random JSON,
deep nesting, lone surrogates) — the worker's reading of it must end in one of:

- ``RawEvent`` refuses the envelope (the worker dead-letters it as unreadable);
- ``parse`` returns ``None`` (nothing to answer) or an ``InboundMessage`` that serialises to
  JSON (the worker stores it with the turn's state);
- ``parse`` raises ``EventParseError`` with a non-empty reason.

The HTTP channel stores messages parsed at the edge: its "parse" is
``InboundMessage.model_validate_json`` of the entry, fuzzed the same way.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from pydantic import ValidationError
from twilio.request_validator import RequestValidator

from connectors.email.connector import EmailConnector
from connectors.email.edge import mail_event
from connectors.email.emulator import MailSender
from connectors.line.emulator import sign_body
from gateway.envelope import RawEvent, is_raw_event
from gateway.errors import EventParseError
from gateway.models import Channel, InboundMessage
from gateway.signing import SIGNATURE_HEADER, sign_request
from tests.harness import SECRETS, RunningGateway
from tests.properties.conftest import (
    DEEP,
    LINE_SECRET,
    PROFILE,
    WA_TOKEN,
    deep_json_text,
    mutated,
)
from tests.properties.test_email import SUPPORT, VALID, mail_bytes
from tests.properties.test_http_edges import (
    VALID_ACTION,
    VALID_COMMAND,
    VALID_EVENT,
    VALID_HTTP,
    VALID_LINE,
    VALID_MENTION_THREAD,
    VALID_WA,
    _slack_headers,
)

_DEEP_TOKEN = json.dumps(DEEP)
# Lone surrogates are valid JSON escapes that no UTF-8 encoder takes.
surrogates = st.sampled_from(['"\\ud800"', '"a\\udfff"', '{"\\ud83d":1}'])


async def stored_entries(gw: RunningGateway) -> list[bytes]:
    """Every inbox entry the edge appended, as stored."""
    store, keyspace = gw.runtime.store, gw.runtime.keyspace
    assert store is not None
    payloads: list[bytes] = []
    for partition in range(keyspace.partitions):
        entries = await store.range(keyspace.inbox(partition), after=None, count=1000)
        payloads += [entry.payload for entry in entries]
    return payloads


async def captured(gw: RunningGateway, channel: Channel) -> list[dict[str, Any]]:
    """The envelopes of ``channel`` the edge stored, as JSON values to mutate."""
    seeds = [
        json.loads(p)
        for p in await stored_entries(gw)
        if is_raw_event(p) and json.loads(p)["channel"] == channel.value
    ]
    assert seeds, f"the edge stored no {channel.value} event to start from"
    return seeds


@st.composite
def mutated_envelope(draw: st.DrawFn, seeds: list[dict[str, Any]]) -> bytes:
    """A captured envelope with its event (mostly), its context or another field mutated,
    serialised as the worker reads it."""
    envelope = dict(draw(st.sampled_from(seeds)))
    where = draw(st.sampled_from(["event", "event", "event", "context", "anywhere"]))
    if where == "anywhere":
        envelope = draw(mutated(envelope))
    else:
        envelope[where] = draw(mutated(envelope[where]))
    text = json.dumps(envelope, ensure_ascii=draw(st.booleans()))
    while _DEEP_TOKEN in text:
        text = text.replace(_DEEP_TOKEN, draw(deep_json_text | surrogates), 1)
    return text.encode("utf-8", "surrogatepass")


async def check_parse(gw: RunningGateway, payload: bytes) -> None:
    """The worker's reading of one inbox entry ends in one of the allowed ways."""
    try:
        raw = RawEvent.model_validate_json(payload)
    except ValidationError:
        event("envelope refused")
        return
    connector = gw.runtime.connectors.get(raw.channel)
    if connector is None:
        event("no connector")
        return
    refusal: EventParseError | None = None
    try:
        message = await connector.parse(raw)
    except EventParseError as exc:
        refusal, message = exc, None
    if refusal is not None:
        assert refusal.reason, "an EventParseError without a reason"
        event(f"EventParseError {refusal.reason}")
        return
    if message is None:
        event("ignored")
        return
    assert isinstance(message, InboundMessage), type(message)
    message.model_dump_json()  # the worker stores it: it must serialise
    event(f"message {message.kind.value}")


# -- the edges that store raw events, seeded from the real edge ------------------------------
async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> None:
    async with session.post(url, data=body, headers=headers) as response:
        assert response.status < 300, f"{url}: {response.status} {await response.text()}"


@pytest.fixture
async def slack_seeds(edge: RunningGateway, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    for body in (VALID_EVENT, VALID_MENTION_THREAD):
        data = json.dumps(body).encode()
        await _post(
            session, edge.url + "/slack/events", data, _slack_headers(data, "application/json")
        )
    form = urlencode(VALID_COMMAND).encode()
    await _post(
        session,
        edge.url + "/slack/commands",
        form,
        _slack_headers(form, "application/x-www-form-urlencoded"),
    )
    action = b"payload=" + quote(json.dumps(VALID_ACTION)).encode()
    await _post(
        session,
        edge.url + "/slack/interactivity",
        action,
        _slack_headers(action, "application/x-www-form-urlencoded"),
    )
    seeds = await captured(edge, Channel.SLACK)
    kinds = {seed["context"].get("type") for seed in seeds}
    assert len(kinds) == 3, f"not every Slack payload kind was stored: {kinds}"
    return seeds


@pytest.fixture
async def line_seeds(edge: RunningGateway, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    body = json.dumps(VALID_LINE).encode()
    headers = {"Content-Type": "application/json", "X-Line-Signature": sign_body(LINE_SECRET, body)}
    await _post(session, edge.url + "/line/webhook", body, headers)
    return await captured(edge, Channel.LINE)


@pytest.fixture
async def whatsapp_seeds(
    edge: RunningGateway, session: aiohttp.ClientSession
) -> list[dict[str, Any]]:
    url = edge.url + "/whatsapp/webhook"
    signature = RequestValidator(WA_TOKEN).compute_signature(url, VALID_WA)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": signature,
    }
    await _post(session, url, urlencode(list(VALID_WA.items())).encode(), headers)
    return await captured(edge, Channel.WHATSAPP)


@PROFILE
@given(data=st.data())
async def test_slack_parser_on_mutated_stored_events(
    edge: RunningGateway, slack_seeds: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Events API, slash-command and interactivity envelopes, mutated: parse or refuse."""
    await check_parse(edge, data.draw(mutated_envelope(slack_seeds)))


@PROFILE
@given(data=st.data())
async def test_line_parser_on_mutated_stored_events(
    edge: RunningGateway, line_seeds: list[dict[str, Any]], data: st.DataObject
) -> None:
    """LINE webhook events (text, postback, follow, join, media, location), mutated."""
    await check_parse(edge, data.draw(mutated_envelope(line_seeds)))


@PROFILE
@given(data=st.data())
async def test_whatsapp_parser_on_mutated_stored_events(
    edge: RunningGateway, whatsapp_seeds: list[dict[str, Any]], data: st.DataObject
) -> None:
    """Twilio inbound-message forms, mutated: parse or refuse."""
    await check_parse(edge, data.draw(mutated_envelope(whatsapp_seeds)))


# -- the HTTP channel: the entry is the message the edge parsed -------------------------------
@pytest.fixture
async def http_seeds(edge: RunningGateway, session: aiohttp.ClientSession) -> list[Any]:
    path = "/v1/channels/http/acme/messages"
    body = json.dumps(VALID_HTTP).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_request([SECRETS["T_SIGN"]], "POST", path, body),
    }
    await _post(session, edge.url + path, body, headers)
    seeds = [json.loads(p) for p in await stored_entries(edge) if not is_raw_event(p)]
    assert seeds, "the HTTP edge stored no message"
    return seeds


@PROFILE
@given(data=st.data())
async def test_http_channel_stored_message_mutated(
    http_seeds: list[Any], data: st.DataObject
) -> None:
    """A stored HTTP-channel message, mutated: the worker's model refuses it or reads a
    message that serialises again."""
    seed = data.draw(st.sampled_from(http_seeds))
    text = json.dumps(data.draw(mutated(seed)), ensure_ascii=data.draw(st.booleans()))
    while _DEEP_TOKEN in text:
        text = text.replace(_DEEP_TOKEN, data.draw(deep_json_text | surrogates), 1)
    try:
        message = InboundMessage.model_validate_json(text.encode("utf-8", "surrogatepass"))
    except ValidationError:
        event("refused")
        return
    message.model_dump_json()
    event("message")


# -- email: the envelope holds the mail's bytes -----------------------------------------------
@pytest.fixture
async def mail_seeds(mail_gateway: RunningGateway) -> list[dict[str, Any]]:
    connector = mail_gateway.runtime.connectors[Channel.EMAIL]
    assert isinstance(connector, EmailConnector)
    sender = MailSender(*connector.listener_address("acme"))
    code, message = await sender.send(VALID, mail_from="jane@customer.example", rcpt_to=[SUPPORT])
    assert code == 250, message
    return await captured(mail_gateway, Channel.EMAIL)


@PROFILE
@given(data=st.data(), raw=mail_bytes)
async def test_email_parser_on_mutated_stored_mail(
    mail_gateway: RunningGateway, mail_seeds: list[dict[str, Any]], data: st.DataObject, raw: bytes
) -> None:
    """The stored mail replaced by mutated mail (as text or base64), the context sometimes
    mutated too: parse or refuse."""
    envelope = dict(data.draw(st.sampled_from(mail_seeds)))
    stored = mail_event(raw)
    if data.draw(st.integers(0, 9)) == 0:  # base64 that is not quite base64
        stored = {"base64": base64.b64encode(raw).decode()[: data.draw(st.integers(0, 50))] + "!"}
    envelope["event"] = stored
    if data.draw(st.booleans()):
        envelope["context"] = data.draw(mutated(envelope["context"]))
    await check_parse(mail_gateway, json.dumps(envelope).encode())


# Found by the fuzz: the LINE SDK reads ``"userId": null`` (or a null group or room id) as a
# source without a chat, and building the message from it raised pydantic's
# ValidationError — a parser_error dead letter instead of a named refusal.
@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ({"type": "user", "userId": None}, "no_source"),
        ({"type": "user", "userId": ""}, "no_source"),
        # The SDK itself refuses these: a group or room id is required there.
        ({"type": "group", "groupId": None, "userId": "U" + "0d" * 16}, "malformed_event"),
        ({"type": "room", "roomId": None}, "malformed_event"),
    ],
)
async def test_a_line_event_whose_chat_id_is_null_is_refused(
    edge: RunningGateway, line_seeds: list[dict[str, Any]], source: dict[str, Any], reason: str
) -> None:
    text_event = next(s for s in line_seeds if s["event"]["type"] == "message")
    envelope = {**text_event, "event": {**text_event["event"], "source": source}}
    raw = RawEvent.model_validate_json(json.dumps(envelope))
    with pytest.raises(EventParseError) as refused:
        await edge.runtime.connectors[Channel.LINE].parse(raw)
    assert refused.value.reason == reason
