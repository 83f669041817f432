"""Attacks on the Socket Mode listener: an envelope nested far too deep, or one no JSON
encoder can write back.

The HTTP edge refuses such JSON (tests/gateway/test_nesting_attacks.py); the socket path does
not pass through it, so the listener applies the same ``http.max_json_depth``. The envelope is
acknowledged (Slack would resend it forever otherwise), counted, and never stored: stored, it
could not be read back by the worker and would be dead-lettered after its ack.
"""

from __future__ import annotations

from connectors.slack.emulator import event_callback, message_event
from tests.connectors.slack.test_socket_mode import SOCKET, _gauge, _stored_event_ids
from tests.harness import RunningGateway, eventually


def _socket_events(gw: RunningGateway, event: str) -> float:
    value = gw.runtime.metrics.channel_events.labels("slack", event)._value.get()
    return float(value)


async def test_attack_deep_socket_envelope_is_acked_counted_and_not_stored(
    slack_gateway, emulator
) -> None:
    async with slack_gateway(**SOCKET) as gw:
        await emulator.wait_for_connections(1)
        await eventually(lambda: _gauge(gw) == 1.0)
        deep: list[object] = []
        for _ in range(150):  # json.loads reads it; the inbox could not give it back
            deep = [deep]
        event = message_event(text="hi", channel="D0ALICE", ts="1700000000.000900")
        envelope_id = await emulator.push("events_api", event_callback(event | {"blocks": deep}))
        await emulator.wait_for_ack(envelope_id)
        assert _socket_events(gw, "socket_rejected") == 1
        assert await _stored_event_ids(gw) == []
        # The listener carries on: the next, ordinary envelope is stored.
        event = message_event(text="pricing", channel="D0ALICE", ts="1700000000.001000")
        await emulator.wait_for_ack(await emulator.push("events_api", event_callback(event)))
        assert await _stored_event_ids(gw) == ["msg:T0FLOWBIZ:D0ALICE:1700000000.001000"]


async def test_attack_socket_envelope_no_encoder_can_store_is_acked_counted_and_not_stored(
    slack_gateway, emulator
) -> None:
    """A lone surrogate (``"\\ud800"``, valid JSON text that json.loads takes) in an envelope:
    no JSON encoder can write it back, so it is refused like a malformed payload — acked,
    counted, never stored — and the listener carries on."""
    async with slack_gateway(**SOCKET) as gw:
        await emulator.wait_for_connections(1)
        await eventually(lambda: _gauge(gw) == 1.0)
        event = message_event(text="hi \ud800", channel="D0ALICE", ts="1700000000.000800")
        envelope_id = await emulator.push("events_api", event_callback(event))
        await emulator.wait_for_ack(envelope_id)
        assert _socket_events(gw, "socket_rejected") == 1
        assert await _stored_event_ids(gw) == []
        event = message_event(text="pricing", channel="D0ALICE", ts="1700000000.001100")
        await emulator.wait_for_ack(await emulator.push("events_api", event_callback(event)))
        assert await _stored_event_ids(gw) == ["msg:T0FLOWBIZ:D0ALICE:1700000000.001100"]
