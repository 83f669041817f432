"""Slack as the operators' desk: the thread map, long announcements, names and Socket Mode.

A Slack customer (a DM) hands off to the desk channel ``C0DESK`` of the same workspace; the
whole path runs through the gateway and the emulator (see tests/e2e/test_slack_desk.py for
LINE and WhatsApp customers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from connectors.slack.emulator import (
    PostedMessage,
    SlackEmulator,
    SlackSender,
    event_callback,
    message_event,
)
from tests.connectors.slack.conftest import TEAM, sender_for, slack_config
from tests.harness import eventually, running_gateway

DESK = "C0DESK"
CUSTOMER_DM = "D0ALICE"
SOCKET = {
    "socket_mode": True,
    "app_token": "env:T_SLACK_APP",
    "signing_secret": None,
    "socket_ping_interval_seconds": 0.2,
}


def desk_config(
    store_url: str, personas_dir: Path, emulator: SlackEmulator, **channel: Any
) -> dict[str, Any]:
    data = slack_config(store_url, personas_dir, emulator, **channel)
    data["tenants"][0]["handoff"] = {
        "operators": {
            "channel": "slack",
            "conversation_id": DESK,
            "reply_context": {"kind": "slack", "team_id": TEAM, "channel_id": DESK},
        },
        "released_notice": None,
    }
    return data


async def customer_says(sender: SlackSender, text: str) -> None:
    status, _ = await sender.event(event_callback(message_event(text=text, channel=CUSTOMER_DM)))
    assert status == 200


def desk_posts(emulator: SlackEmulator) -> list[PostedMessage]:
    return [p for p in emulator.posted if p.channel == DESK]


def customer_posts(emulator: SlackEmulator) -> list[PostedMessage]:
    return [p for p in emulator.posted if p.channel == CUSTOMER_DM]


def operator_reply(text: str, thread_ts: str) -> dict[str, Any]:
    """An operator's message in a desk thread, as the Events API delivers it."""
    return event_callback(
        message_event(
            text=text, user="U0BOB", channel=DESK, channel_type="channel", thread_ts=thread_ts
        )
    )


async def test_a_long_announcement_starts_the_thread_and_continues_in_it(
    store_url: str, personas_dir: Path, emulator: SlackEmulator, session: aiohttp.ClientSession
) -> None:
    """Split into several posts, only the first is at the top level; the rest are in its thread."""
    data = desk_config(store_url, personas_dir, emulator, max_message_chars=200)
    async with running_gateway(data) as gw:
        sender = sender_for(session, gw)
        await customer_says(sender, "hello " + "my order is late " * 12)
        await eventually(lambda: customer_posts(emulator))
        await customer_says(sender, "/human")
        await eventually(lambda: len(desk_posts(emulator)) >= 3)
        await customer_says(sender, "still there?")
        await eventually(lambda: desk_posts(emulator)[-1].text == "still there?")
    first, *rest = desk_posts(emulator)
    assert first.thread_ts is None
    assert rest
    assert {p.thread_ts for p in rest} == {first.ts}


async def test_the_operators_name_is_asked_once_and_signs_the_reply(
    store_url: str, personas_dir: Path, emulator: SlackEmulator, session: aiohttp.ClientSession
) -> None:
    emulator.add_user("U0BOB", display_name="Bob", real_name="Robert Example")
    async with running_gateway(desk_config(store_url, personas_dir, emulator)) as gw:
        sender = sender_for(session, gw)
        await customer_says(sender, "/human")
        announcement = await eventually(lambda: next(iter(desk_posts(emulator)), None))
        for text in ("Hi, Bob here.", "Let me check."):
            await sender.event(operator_reply(text, announcement.ts))
            await eventually(lambda t=text: customer_posts(emulator)[-1].shown_text == t)
        signatures = [
            b["elements"][0]["text"]
            for p in customer_posts(emulator)[-2:]
            for b in p.blocks
            if b["type"] == "context"
        ]
    assert signatures == ["— Bob", "— Bob"]
    asked = [c.args.get("user") for c in emulator.calls if c.method == "users.info"]
    assert asked.count("U0BOB") == 1  # the customer is looked up too, once


async def test_a_failed_name_look_up_leaves_the_name_out_not_the_reply(
    store_url: str, personas_dir: Path, emulator: SlackEmulator, session: aiohttp.ClientSession
) -> None:
    """users.info refused (no users:read scope): the reply goes out unsigned."""
    emulator.fail_next("users.info", status=200, error="missing_scope")
    async with running_gateway(desk_config(store_url, personas_dir, emulator)) as gw:
        sender = sender_for(session, gw)
        await customer_says(sender, "/human")
        announcement = await eventually(lambda: next(iter(desk_posts(emulator)), None))
        await sender.event(operator_reply("Hello from us.", announcement.ts))
        reply = await eventually(
            lambda: next(
                (p for p in customer_posts(emulator) if p.shown_text == "Hello from us."), None
            )
        )
        metric = gw.runtime.metrics.registry.get_sample_value(
            "flowbiz_channel_events_total", {"channel": "slack", "event": "user_name_failed"}
        )
    assert metric == 1
    assert reply.username == "Support team"
    assert not [b for b in reply.blocks if b["type"] == "context"]


async def test_desk_replies_arrive_over_socket_mode_too(
    store_url: str, personas_dir: Path, emulator: SlackEmulator
) -> None:
    async with running_gateway(desk_config(store_url, personas_dir, emulator, **SOCKET)):
        await emulator.wait_for_connections(1)
        await emulator.wait_for_ack(
            await emulator.push(
                "events_api", event_callback(message_event(text="/human", channel=CUSTOMER_DM))
            )
        )
        announcement = await eventually(lambda: next(iter(desk_posts(emulator)), None))
        envelope = operator_reply("Over the socket.", announcement.ts)
        await emulator.wait_for_ack(await emulator.push("events_api", envelope))
        await eventually(lambda: customer_posts(emulator)[-1].shown_text == "Over the socket.")
        await emulator.wait_for_ack(await emulator.push("events_api", envelope, retry_attempt=1))
        await emulator.wait_for_ack(
            await emulator.push(
                "events_api",
                operator_reply(" /release", announcement.ts),
            )
        )
        await eventually(lambda: desk_posts(emulator)[-1].text.startswith("Released"))
    assert [p.shown_text for p in customer_posts(emulator)].count("Over the socket.") == 1
