"""Socket Mode through the emulator's websocket: ack after the durable append, dedupe,
reconnects and the listener health gauge."""

from __future__ import annotations

import asyncio

from connectors.slack.emulator import (
    app_mention_event,
    block_actions_payload,
    event_callback,
    message_event,
    slash_command_fields,
)
from gateway.envelope import RawEvent
from tests.connectors.slack.conftest import RunningGateway
from tests.harness import eventually

SOCKET = {
    "socket_mode": True,
    "app_token": "env:T_SLACK_APP",
    "signing_secret": None,
    "socket_ping_interval_seconds": 0.2,
}
LISTENER = 'flowbiz_listener_up{listener="slack_socket:acme/slack"}'


def _gauge(gw: RunningGateway) -> float | None:
    for line in gw.runtime.metrics.render().decode().splitlines():
        if line.startswith(LISTENER):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _stored_event_ids(gw: RunningGateway) -> list[str]:
    rt = gw.runtime
    assert rt.store is not None
    ids = []
    for partition in range(rt.keyspace.partitions):
        for entry in await rt.store.range(rt.keyspace.inbox(partition), count=1000):
            # A Slack event is stored as it came, keyed by its event id (gateway/envelope.py).
            ids.append(RawEvent.model_validate_json(entry.payload).event_id)
    return ids


async def test_socket_event_is_acked_after_it_is_stored(slack_gateway, emulator) -> None:
    """An events_api envelope is in the inbox when its ack arrives, and gets answered."""
    async with slack_gateway(**SOCKET) as gw:
        await emulator.wait_for_connections(1)
        await eventually(lambda: _gauge(gw) == 1.0)
        event = message_event(text="pricing", channel="D0ALICE", ts="1700000000.000100")
        envelope_id = await emulator.push("events_api", event_callback(event))
        await emulator.wait_for_ack(envelope_id)
        assert "msg:T0FLOWBIZ:D0ALICE:1700000000.000100" in await _stored_event_ids(gw)
        [post] = await emulator.wait_for_posts(1)
    assert post.shown_text == "Pro costs 29 a month."


async def test_socket_redelivery_is_answered_once(slack_gateway, emulator) -> None:
    """Slack's redelivery of an unacked envelope (retry_attempt 1) is acked, not answered again."""
    async with slack_gateway(**SOCKET):
        await emulator.wait_for_connections(1)
        payload = event_callback(app_mention_event(text="hello", channel="C0SALES"))
        first = await emulator.push("events_api", payload)
        again = await emulator.push("events_api", payload, retry_attempt=1, retry_reason="timeout")
        await emulator.wait_for_ack(first)
        await emulator.wait_for_ack(again)
        await emulator.wait_for_posts(1)
        await asyncio.sleep(0.3)
    assert len(emulator.posted) == 1


async def test_socket_slash_command_and_click(slack_gateway, emulator) -> None:
    """Slash commands and button clicks also arrive over the socket, acked and answered."""
    async with slack_gateway(**SOCKET):
        await emulator.wait_for_connections(1)
        command = slash_command_fields(
            command="/flowbiz", text="pricing", response_url=emulator.response_url()
        )
        await emulator.wait_for_ack(await emulator.push("slash_commands", command))
        click = block_actions_payload(value="hours", message_ts="1.2", channel_id="D0ALICE")
        await emulator.wait_for_ack(await emulator.push("interactive", click))
        posts = await emulator.wait_for_posts(2)
    assert {p.shown_text for p in posts} == {"Pro costs 29 a month.", "We are open 9 to 18."}


async def test_socket_reconnects_and_reports_its_health(slack_gateway, emulator) -> None:
    """After Slack's disconnect or a dropped socket the listener reconnects; the gauge follows."""
    async with slack_gateway(**SOCKET) as gw:
        await emulator.wait_for_connections(1)
        await emulator.disconnect_sockets(graceful=True)  # Slack's "refresh_requested"
        await emulator.wait_for_connections(2)

        emulator.refuse_connections = True  # Slack unreachable for a while
        await emulator.disconnect_sockets(graceful=False)
        await eventually(lambda: _gauge(gw) == 0.0, timeout=5)
        emulator.refuse_connections = False
        await eventually(lambda: _gauge(gw) == 1.0, timeout=5)

        event = message_event(text="pricing", channel="D0ALICE")
        await emulator.wait_for_ack(await emulator.push("events_api", event_callback(event)))
        await emulator.wait_for_posts(1)
    assert emulator.connections_opened >= 3
    assert _gauge(gw) == 0.0  # stopped with the gateway
