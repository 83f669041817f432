"""Garbage and mutated-but-signed requests against every HTTP inbound edge.

Garbage (random bodies, headers and signatures) must be refused before anything is read;
correctly signed mutations of real payloads (fields deleted, replaced by random JSON,
bodies truncated) reach the parsers and must be accepted or refused with a reason — never a
500, never an exception other than the InboundError family (which the edge turns into 4xx).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from hypothesis import event, example, given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from connectors.line.emulator import LineWebhookSender, sign_body
from connectors.slack.emulator import (
    block_actions_payload,
    event_callback,
    message_event,
    slash_command_fields,
)
from connectors.whatsapp.emulator import TwilioWebhookSender
from gateway.signing import SIGNATURE_HEADER, sign_request
from tests.harness import RunningGateway
from tests.properties.conftest import (
    LINE_DEST,
    LINE_SECRET,
    PROFILE,
    SECRETS,
    SLACK_SECRET,
    WA_ACCOUNT,
    WA_SENDER,
    WA_TOKEN,
    deep_json_text,
    header_text,
    inbound_counts,
    json_body,
    json_values,
    mutated,
    post_to_edge,
)

ROUTES = [
    ("http", "/v1/channels/http/acme/messages"),
    ("slack", "/slack/events"),
    ("slack", "/slack/commands"),
    ("slack", "/slack/interactivity"),
    ("line", "/line/webhook"),
    ("whatsapp", "/whatsapp/webhook"),
    ("whatsapp", "/whatsapp/status"),
]
HEADER_NAMES = [
    "Content-Type",
    "Authorization",
    SIGNATURE_HEADER,
    "X-Slack-Signature",
    "X-Slack-Request-Timestamp",
    "X-Line-Signature",
    "X-Twilio-Signature",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
]


@PROFILE
@given(
    route=st.sampled_from(ROUTES),
    body=st.binary(max_size=2000)
    | json_values.map(lambda v: json.dumps(v).encode())
    | deep_json_text.map(str.encode),
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_text, max_size=5),
)
async def test_garbage_is_refused_with_a_reason_and_a_metric(
    edge: RunningGateway,
    session: aiohttp.ClientSession,
    route: tuple[str, str],
    body: bytes,
    headers: dict[str, str],
) -> None:
    """Random body and headers: a 4xx whose JSON error is counted under that reason."""
    channel, path = route
    status = await post_to_edge(
        edge, session, channel=channel, path=path, body=body, headers=headers
    )
    if not (path == "/slack/commands" and b"ssl_check=1" in body):  # Slack's unsigned probe
        assert status >= 400


# -- correctly signed mutations ----------------------------------------------------------------
VALID_HTTP = {
    "conversation_id": "c1",
    "event_id": "e1",
    "thread": None,
    "user": {"id": "u1", "name": "Ann"},
    "text": "hello",
}


@PROFILE
@given(body=json_body(VALID_HTTP), use_api_key=st.booleans())
async def test_http_channel_signed_mutations(
    edge: RunningGateway, session: aiohttp.ClientSession, body: bytes, use_api_key: bool
) -> None:
    """Authenticated bodies of any shape: 202 or a 4xx with a counted reason."""
    auth = (
        {"Authorization": f"Bearer {SECRETS['T_API_KEY']}"}
        if use_api_key
        else {
            SIGNATURE_HEADER: sign_request(
                [SECRETS["T_SIGN"]], "POST", "/v1/channels/http/acme/messages", body
            )
        }
    )
    await post_to_edge(
        edge,
        session,
        channel="http",
        path="/v1/channels/http/acme/messages",
        body=body,
        headers={"Content-Type": "application/json", **auth},
    )


_POLLS = itertools.count()
# Anything a client may put in a conversation id or a query (printable, reserved, non-ASCII).
url_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)


@PROFILE
@given(
    # Not routable as an id, signature or not: dot segments, and braces (aiohttp's pattern).
    conversation=url_text.filter(lambda c: c not in ("", ".", "..") and not {"{", "}"} & set(c)),
    params=st.lists(st.tuples(url_text.filter(bool), url_text), max_size=4),
    tamper=st.sampled_from(["none", "add", "change"]),
)
# Found by the long fuzz: a verified poll whose cursor is not one we issued is a 400.
@example(conversation="0", params=[("after", ":")], tamper="none")
async def test_http_channel_signed_polls_verify_and_tampered_ones_do_not(
    edge: RunningGateway,
    session: aiohttp.ClientSession,
    conversation: str,
    params: list[tuple[str, str]],
    tamper: str,
) -> None:
    """A poll signed over the URL a client builds verifies however aiohttp re-encodes it on
    the way; a query parameter added or changed after signing is refused."""
    # An example may repeat within a second; n keeps each poll distinct (docs: "Replays").
    n = str(next(_POLLS))
    path = f"/v1/channels/http/acme/conversations/{quote(conversation, safe='')}/replies"
    url = f"{edge.url}{path}?{urlencode([('wait', '0'), ('n', n), *params])}"
    header = {SIGNATURE_HEADER: sign_request([SECRETS["T_SIGN"]], "GET", url)}
    sent = {
        "none": url,
        "add": url + "&tampered=1",
        "change": url.replace(f"&n={n}", f"&n={n}0", 1),  # ours comes first in the query
    }[tamper]
    async with session.get(sent, headers=header) as response:
        body = await response.text()
        if tamper != "none":
            assert response.status == 401, (conversation, params, body)
            return
        # Verified: answered, or refused for what the query asks (a parameter that is not a
        # cursor this API returned, say), never for the signature.
        assert response.status in (200, 400), (conversation, params, body)
        if response.status == 400:
            event(f"signed poll refused: {json.loads(body)['error']}")
            assert json.loads(body)["error"] not in {"bad_signature", "unauthorized"}, body


def _slack_headers(body: bytes, content_type: str) -> dict[str, str]:
    # Slack's v0 scheme over the raw bytes (slack_sdk's helper only signs UTF-8 text).
    ts = str(int(time.time()))
    digest = hmac.new(SLACK_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    signature = "v0=" + digest.hexdigest()
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
    }


VALID_EVENT = event_callback(message_event(text="hello", ts="1700000000.000100"))
VALID_MENTION_THREAD = event_callback(
    message_event(
        text="<@U0FLOWBOT> hi",
        channel="C0GENERAL",
        channel_type="channel",
        ts="1700000000.000200",
        thread_ts="1700000000.000100",
        files=[{"id": "F1", "name": "a.png", "mimetype": "image/png", "size": 3}],
    )
)
VALID_EDIT = event_callback(
    {
        "type": "message",
        "subtype": "message_changed",
        "channel": "D0DIRECT",
        "channel_type": "im",
        "message": {"user": "U1", "text": "edited", "ts": "1.1", "edited": {"ts": "1.2"}},
    }
)


@PROFILE
@given(body=st.sampled_from([VALID_EVENT, VALID_MENTION_THREAD, VALID_EDIT]).flatmap(json_body))
async def test_slack_events_signed_mutations(
    edge: RunningGateway, session: aiohttp.ClientSession, body: bytes
) -> None:
    """Signed Events API bodies of any shape: 200 or a 4xx with a counted reason."""
    await post_to_edge(
        edge,
        session,
        channel="slack",
        path="/slack/events",
        body=body,
        headers=_slack_headers(body, "application/json"),
    )


VALID_COMMAND = slash_command_fields(
    command="/ask", text="pricing", response_url="https://hooks.slack.com/commands/T0/1/x"
)


@PROFILE
@given(
    fields=mutated(VALID_COMMAND),
    raw=st.none() | st.binary(max_size=300),
)
async def test_slack_commands_signed_mutations(
    edge: RunningGateway, session: aiohttp.ClientSession, fields: Any, raw: bytes | None
) -> None:
    """Signed slash-command forms with fields missing or replaced: never a 5xx."""
    if raw is None:
        pairs = fields.items() if isinstance(fields, dict) else [("x", json.dumps(fields))]
        body = urlencode(
            [(str(k), json.dumps(v) if not isinstance(v, str) else v) for k, v in pairs]
        ).encode()
    else:
        body = raw
    await post_to_edge(
        edge,
        session,
        channel="slack",
        path="/slack/commands",
        body=body,
        headers=_slack_headers(body, "application/x-www-form-urlencoded"),
    )


VALID_ACTION = block_actions_payload(value="pricing", message_ts="1700000000.000300")


@PROFILE
@given(payload=json_body(VALID_ACTION))
async def test_slack_interactivity_signed_mutations(
    edge: RunningGateway, session: aiohttp.ClientSession, payload: bytes
) -> None:
    """Signed interactivity payloads of any shape: never a 5xx."""
    body = b"payload=" + quote(payload.decode("utf-8", "replace")).encode()
    await post_to_edge(
        edge,
        session,
        channel="slack",
        path="/slack/interactivity",
        body=body,
        headers=_slack_headers(body, "application/x-www-form-urlencoded"),
    )


_line = LineWebhookSender(
    session=None,  # type: ignore[arg-type]  # only the event builders are used
    gateway_url="",
    destination=LINE_DEST,
    channel_secret=LINE_SECRET,
)
USER = "U" + "0d" * 16
VALID_LINE = {
    "destination": LINE_DEST,
    "events": [
        _line.text("hello", user_id=USER),
        _line.postback("action=buy", user_id=USER),
        _line.follow(user_id=USER),
        _line.join(group_id="C" + "1c" * 16),
        _line.media({"type": "image", "contentProvider": {"type": "line"}}, user_id=USER),
        _line.media(
            {"type": "location", "title": "x", "address": "y", "latitude": 1.0, "longitude": 2.0},
            user_id=USER,
        ),
        _line.member_joined(group_id="C" + "1c" * 16, user_ids=[USER]),
    ],
}


@PROFILE
@given(body=json_body(VALID_LINE))
async def test_line_signed_mutations(
    edge: RunningGateway, session: aiohttp.ClientSession, body: bytes
) -> None:
    """Signed LINE webhooks with events mutated or truncated: 200 or a counted 4xx."""
    await post_to_edge(
        edge,
        session,
        channel="line",
        path="/line/webhook",
        body=body,
        headers={
            "Content-Type": "application/json",
            "X-Line-Signature": sign_body(LINE_SECRET, body),
        },
    )


_wa = TwilioWebhookSender(
    session=None,  # type: ignore[arg-type]  # only the payload builder is used
    gateway_url="http://127.0.0.1",
    account_sid=WA_ACCOUNT,
    auth_token=WA_TOKEN,
)
VALID_WA = _wa.inbound(
    from_="whatsapp:+14155550100",
    to=WA_SENDER,
    body="hello",
    media=[("https://api.twilio.com/m/1", "image/jpeg")],
)
VALID_STATUS = {
    "MessageSid": "SM" + "ab" * 16,
    "MessageStatus": "delivered",
    "AccountSid": WA_ACCOUNT,
    "From": WA_SENDER,
    "To": "whatsapp:+14155550100",
}
form_values = (
    st.text(max_size=40) | st.sampled_from(["", "-1", "99", "1e9", "whatsapp:+1"]) | deep_json_text
)


@st.composite
def mutated_form(draw: st.DrawFn, valid: dict[str, str]) -> dict[str, str]:
    form = dict(valid)
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(sorted(valid)) | st.text(min_size=1, max_size=12))
        if draw(st.booleans()):
            form.pop(key, None)
        else:
            form[key] = draw(form_values)
    return form


@PROFILE
@given(form=mutated_form(VALID_WA) | mutated_form(VALID_STATUS), status_route=st.booleans())
async def test_whatsapp_signed_mutations(
    edge: RunningGateway, session: aiohttp.ClientSession, form: dict[str, str], status_route: bool
) -> None:
    """Twilio-signed forms with fields missing or odd: 200 or a counted 4xx."""
    path = "/whatsapp/status" if status_route else "/whatsapp/webhook"
    url = edge.url + path
    signature = RequestValidator(WA_TOKEN).compute_signature(url, form)
    await post_to_edge(
        edge,
        session,
        channel="whatsapp",
        path=path,
        body=urlencode(list(form.items())).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    )


# Found by the fuzz: the stdlib's header parser, behind aiohttp's ``request.content_type``,
# raises IndexError on a parameter name ending in ``*`` with nothing after it (RFC 2231
# syntax, cut short), which surfaced as a 500 on every route.
UNPARSABLE_CONTENT_TYPES = [";0*", "application/json; charset*", "text/plain;a*"]


async def test_attack_unparsable_content_type_is_refused_415_on_every_route(
    edge: RunningGateway, session: aiohttp.ClientSession
) -> None:
    """A Content-Type the header parser chokes on: 415 with a counted reason, never a 500."""
    for (channel, path), content_type in itertools.product(ROUTES, UNPARSABLE_CONTENT_TYPES):
        before = inbound_counts(edge).get((channel, "unsupported_media_type"), 0)
        headers = {"Content-Type": content_type}
        async with session.post(edge.url + path, data=b"{}", headers=headers) as response:
            status, payload = response.status, await response.read()
        assert status == 415, (path, content_type, status, payload[:100])
        assert json.loads(payload)["error"] == "unsupported_media_type"
        after = inbound_counts(edge).get((channel, "unsupported_media_type"), 0)
        assert after == before + 1, (path, content_type)
