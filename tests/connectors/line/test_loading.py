"""LINE's loading animation as the worker's typing indicator: shown in one-to-one chats as
the agent starts, never in groups, never in the way of the reply."""

from __future__ import annotations

import time

from tests.connectors.line.conftest import ALICE, GROUP
from tests.harness import eventually


def typing_count(gw, outcome: str) -> float:
    value = gw.runtime.metrics.registry.get_sample_value(
        "flowbiz_typing_indicators_total", {"channel": "line", "outcome": outcome}
    )
    return value or 0.0


async def test_the_animation_shows_in_a_one_to_one_chat_as_the_agent_starts(
    line_gateway, sender, emulator
):
    async with line_gateway(loading_seconds=30) as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=ALICE)]) == 200
        await emulator.wait_for(1)
        await eventually(lambda: emulator.loading == [(ALICE, 30)])
        [call] = emulator.calls_to("loading")
        assert call.body == {"chatId": ALICE, "loadingSeconds": 30}
        await eventually(lambda: typing_count(gw, "shown") == 1)


async def test_no_animation_in_groups_or_when_the_channel_turns_it_off(
    line_gateway, sender, emulator
):
    async with line_gateway(loading_indicator=False) as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=ALICE)]) == 200
        await emulator.wait_for(1)
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=ALICE, group_id=GROUP)]) == 200
        await emulator.wait_for(2)
        await eventually(lambda: typing_count(gw, "skipped") == 1)
        assert typing_count(gw, "shown") == 0
    assert emulator.calls_to("loading") == []


async def test_a_failing_animation_is_counted_and_the_reply_still_goes(
    line_gateway, sender, emulator
):
    emulator.fail_next(1, status=500, endpoint="loading")
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.texts == ["Hello Alice!"]
        assert [c.status for c in emulator.calls_to("loading")] == [500]
        await eventually(lambda: typing_count(gw, "failed") == 1)


async def test_a_hanging_animation_never_delays_the_reply(line_gateway, sender, emulator):
    """LINE takes 3 s to answer the animation call: the reply does not wait for it."""
    emulator.delay_next("loading", 3.0)
    async with line_gateway(request_timeout_seconds=2) as gw:
        line = sender(gw.url)
        started = time.monotonic()
        assert await line.post([line.text("hello", user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert time.monotonic() - started < 1.5
        assert delivery.via == "reply"
        await eventually(lambda: typing_count(gw, "timeout") == 1, timeout=5)
