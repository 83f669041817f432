"""Verification comes first: Slack's v0 signature, its five-minute window, and the 401 path."""

from __future__ import annotations

import json
import time

import pytest

from connectors.base import InboundRequest
from connectors.slack.emulator import (
    SlackSender,
    block_actions_payload,
    event_callback,
    message_event,
    slash_command_fields,
)
from gateway.errors import UnknownTenantError, VerificationError
from tests.connectors.slack.conftest import (
    NOW,
    FixedClock,
    inbox_entries,
    make_connector,
    parsed,
    sender_for,
    signed_request,
)

BODY = json.dumps(event_callback(message_event(text="hello", ts="1700000000.000100"))).encode()


def test_sender_signs_like_slacks_documented_example() -> None:
    """The emulator's sender reproduces the worked example in Slack's signing docs."""
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
        b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
        b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id="
        b"398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    sender = SlackSender(
        session=None,  # type: ignore[arg-type]  # signing needs no session
        gateway_url="",
        signing_secret="8f742231b10e8888abcd99yyyzzz85a5",
    )
    headers = sender.headers(body, timestamp=1531420618)
    assert headers["X-Slack-Signature"] == (
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    )


@pytest.mark.parametrize(
    ("skew", "accepted"),
    [(0, True), (300, True), (301, False), (-300, True), (-301, False)],
)
async def test_five_minute_window_both_ways(personas_dir, skew: int, accepted: bool) -> None:
    """A timestamp 300 s off either way passes; 301 s off (past or future) is stale."""
    connector = make_connector(personas_dir, clock=FixedClock(NOW + skew))
    request = signed_request("/slack/events", BODY, timestamp=NOW)
    if accepted:
        result = await connector.events(request)
        assert [m.text for m in await parsed(connector, result)] == ["hello"]
    else:
        with pytest.raises(VerificationError) as caught:
            await connector.events(request)
        assert caught.value.reason == "stale_timestamp"


@pytest.mark.parametrize("missing", ["x-slack-signature", "x-slack-request-timestamp"])
async def test_missing_header_is_rejected(personas_dir, missing: str) -> None:
    """Without either signature header the request is refused before parsing."""
    connector = make_connector(personas_dir, clock=FixedClock(NOW))
    signed = signed_request("/slack/events", BODY, timestamp=NOW)
    headers = {k: v for k, v in signed.headers.items() if k != missing}
    with pytest.raises(VerificationError) as caught:
        await connector.events(_with(signed, headers=headers))
    assert caught.value.reason == "missing_signature"


async def test_non_numeric_timestamp_is_rejected_not_crashing(personas_dir) -> None:
    """A timestamp that is not a number is a verification failure, not a ValueError."""
    connector = make_connector(personas_dir, clock=FixedClock(NOW))
    signed = signed_request("/slack/events", BODY, timestamp=NOW)
    headers = {**signed.headers, "x-slack-request-timestamp": "17e8"}
    with pytest.raises(VerificationError) as caught:
        await connector.events(_with(signed, headers=headers))
    assert caught.value.reason == "bad_timestamp"


async def test_wrong_secret_is_rejected(personas_dir) -> None:
    """A signature made with another secret does not verify."""
    connector = make_connector(personas_dir, clock=FixedClock(NOW))
    request = signed_request("/slack/events", BODY, timestamp=NOW, secret="not-the-secret")
    with pytest.raises(VerificationError) as caught:
        await connector.events(request)
    assert caught.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "altered",
    [
        BODY.replace(b"hello", b"hellO"),
        BODY + b" ",
        b"\xff\xfe" + BODY,  # not even UTF-8
    ],
)
async def test_body_altered_after_signing_is_rejected(personas_dir, altered: bytes) -> None:
    """Any change to the body after signing breaks the signature."""
    connector = make_connector(personas_dir, clock=FixedClock(NOW))
    signed = signed_request("/slack/events", BODY, timestamp=NOW)
    with pytest.raises(VerificationError):
        await connector.events(_with(signed, body=altered))


async def test_verified_but_unknown_team_is_unknown_tenant(personas_dir) -> None:
    """A correctly signed event from a team no tenant configured is refused as unknown."""
    connector = make_connector(personas_dir, clock=FixedClock(NOW))
    body = json.dumps(event_callback(message_event(text="hi"), team_id="T0OTHER")).encode()
    with pytest.raises(UnknownTenantError):
        await connector.events(signed_request("/slack/events", body, timestamp=NOW))


async def test_bad_signatures_get_401_and_store_nothing(slack_gateway, emulator, session) -> None:
    """Through the real gateway: wrong, stale and missing signatures → 401, nothing stored."""
    async with slack_gateway() as gw:
        forger = SlackSender(session=session, gateway_url=gw.url, signing_secret="wrong")
        honest = sender_for(session, gw)
        envelope = json.dumps(event_callback(message_event(text="hello"))).encode()
        statuses = [
            (await forger.event(event_callback(message_event(text="hello"))))[0],
            (await forger.command(slash_command_fields(
                command="/flowbiz", text="pricing", response_url=emulator.response_url()
            )))[0],
            (await forger.interaction(block_actions_payload(value="pricing", message_ts="1.2")))[0],
            (await forger.url_verification("challenge-token"))[0],
            (await honest.post(
                "/slack/events", envelope, content_type="application/json",
                timestamp=int(time.time()) - 301,
            ))[0],
            (await honest.post(
                "/slack/events", envelope, content_type="application/json", sign=False
            ))[0],
        ]  # fmt: skip
        assert statuses == [401] * 6
        assert await inbox_entries(gw) == 0
        metrics = gw.runtime.metrics.render().decode()
        assert 'flowbiz_inbound_total{channel="slack",outcome="stale_timestamp"} 1.0' in metrics
    assert emulator.posted == []


async def test_other_workspaces_secret_cannot_speak_for_this_team(
    store_url, personas_dir, emulator, session
) -> None:
    """Two workspaces, two secrets: a request signed with B's secret naming A's team is 404."""
    from tests.connectors.slack.conftest import GLOBEX, TEAM_2, slack_channel, slack_config
    from tests.harness import running_gateway

    tenants = [
        {"id": "acme", "channels": [slack_channel(emulator)]},
        {
            "id": "globex",
            "channels": [
                slack_channel(
                    emulator,
                    team_id=TEAM_2,
                    signing_secret="env:T_SLACK_SECRET_2",
                    bot_token="env:T_SLACK_BOT_2",
                )
            ],
        },
    ]
    async with running_gateway(
        slack_config(store_url, personas_dir, emulator, tenants=tenants)
    ) as gw:
        globex = sender_for(session, gw, secret="slack-signing-secret-globex")
        status, _ = await globex.event(event_callback(message_event(text="hello")))  # acme's team
        assert status == 404
        status, _ = await globex.event(
            event_callback(
                message_event(text="hello", team=TEAM_2),
                team_id=TEAM_2,
                bot_user_id=GLOBEX.bot_user_id,
            )
        )
        assert status == 200
        posts = await emulator.wait_for_posts(1)
        assert posts[0].team_id == TEAM_2  # answered with globex's bot token
        assert await inbox_entries(gw) == 1


def _with(request: InboundRequest, **changes: object) -> InboundRequest:
    fields = {
        "method": request.method,
        "path": request.path,
        "url": request.url,
        "headers": request.headers,
        "query": request.query,
        "body": request.body,
    }
    fields.update(changes)
    return InboundRequest(**fields)  # type: ignore[arg-type]
