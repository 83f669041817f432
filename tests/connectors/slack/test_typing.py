"""The typing status in Slack assistant threads: set as the agent starts, only where Slack
has one (a DM thread), and never in the way of the reply."""

from __future__ import annotations

import time

import pytest

from connectors.slack.emulator import app_mention_event, event_callback, message_event
from tests.connectors.slack.conftest import sender_for
from tests.harness import eventually

THREAD = "1700000000.000100"


def _typing(gw, outcome: str) -> float | None:
    prefix = f'flowbiz_typing_indicators_total{{channel="slack",outcome="{outcome}"}}'
    for line in gw.runtime.metrics.render().decode().splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_an_assistant_thread_shows_is_typing(slack_gateway, emulator, session) -> None:
    async with slack_gateway() as gw:
        await sender_for(session, gw).event(
            event_callback(message_event(text="pricing", thread_ts=THREAD))
        )
        [post] = await emulator.wait_for_posts(1)
        await eventually(lambda: _typing(gw, "shown"))
    assert emulator.files.statuses == [
        {"channel_id": "D0DIRECT", "thread_ts": THREAD, "status": "is typing…"}
    ]
    [call] = [c for c in emulator.calls if c.method == "assistant.threads.setStatus"]
    assert call.token == "xoxb-emulated-bot-token"
    assert (post.shown_text, post.thread_ts) == ("Pro costs 29 a month.", THREAD)


@pytest.mark.parametrize(
    "event",
    [
        message_event(text="pricing"),  # a DM, not threaded: no assistant thread
        app_mention_event(text="pricing", thread_ts=THREAD),  # a channel thread
    ],
)
async def test_no_status_call_outside_assistant_threads(
    slack_gateway, emulator, session, event
) -> None:
    async with slack_gateway() as gw:
        await sender_for(session, gw).event(event_callback(event))
        await emulator.wait_for_posts(1)
    assert not [c for c in emulator.calls if c.method == "assistant.threads.setStatus"]


async def test_a_failing_status_neither_delays_nor_changes_the_reply(
    slack_gateway, emulator, session
) -> None:
    emulator.fail_next("assistant.threads.setStatus", status=500, error="internal_error")
    async with slack_gateway() as gw:
        await sender_for(session, gw).event(
            event_callback(message_event(text="pricing", thread_ts=THREAD))
        )
        [post] = await emulator.wait_for_posts(1)
        await eventually(lambda: _typing(gw, "failed"))
        assert _typing(gw, "shown") is None
    assert post.shown_text == "Pro costs 29 a month."
    assert emulator.files.statuses == []
    assert [c.method for c in emulator.calls].count("chat.postMessage") == 1


async def test_a_slow_status_does_not_delay_the_reply(slack_gateway, emulator, session) -> None:
    """setStatus takes 3 s to answer; the reply does not wait for it."""
    emulator.files.status_delay = 3.0
    async with slack_gateway() as gw:
        started = time.perf_counter()
        await sender_for(session, gw).event(
            event_callback(message_event(text="pricing", thread_ts=THREAD))
        )
        [post] = await emulator.wait_for_posts(1)
        waited = time.perf_counter() - started
        await eventually(lambda: emulator.files.statuses, timeout=6)
    assert waited < 1.5, f"the reply waited {waited:.2f}s for the status"
    assert post.shown_text == "Pro costs 29 a month."
