"""Display names on LINE through the real gateway and the LINE emulator: a friend's profile
in a one-to-one chat, a member's profile in a group or room (line-bot-sdk v3's
``get_group_member_profile`` / ``get_room_member_profile``), kept in the store, and a
failing profile API costing the name, never the answer."""

from __future__ import annotations

from connectors.line.emulator import LineEmulator
from tests.connectors.line.conftest import ALICE, BOB
from tests.harness import RunningGateway

GROUP = "C" + "5e" * 16
ROOM = "R" + "6f" * 16


def _lookups(gw: RunningGateway, outcome: str) -> float:
    value = gw.runtime.metrics.registry.get_sample_value(
        "flowbiz_contact_lookups_total", {"channel": "line", "outcome": outcome}
    )
    return value or 0.0


async def test_a_group_member_is_greeted_by_their_member_profile(
    line_gateway, sender, emulator: LineEmulator
) -> None:
    emulator.add_member(GROUP, ALICE, "Alice (Sales)")
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=ALICE, group_id=GROUP)]) == 200
        await emulator.wait_for(1)
        assert await line.post([line.text("hello again", user_id=ALICE, group_id=GROUP)]) == 200
        await emulator.wait_for(2)
        assert _lookups(gw, "fetched") == 1
        assert _lookups(gw, "cached") == 1
    assert emulator.texts_to(GROUP) == ["Hello Alice (Sales)!", "Hello Alice (Sales)!"]
    assert [c.status for c in emulator.calls_to("member_profile")] == [200]
    assert emulator.calls_to("profile") == []  # a group member's own profile is not asked


async def test_a_room_member_is_greeted_by_their_member_profile(
    line_gateway, sender, emulator: LineEmulator
) -> None:
    emulator.add_member(ROOM, BOB, "Bob")
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=BOB, room_id=ROOM)]) == 200
        await emulator.wait_for(1)
    assert emulator.texts_to(ROOM) == ["Hello Bob!"]


async def test_someone_not_in_the_group_keeps_their_id(
    line_gateway, sender, emulator: LineEmulator
) -> None:
    """LINE answers 404 for a user it does not show in that group: known as unknown."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=BOB, group_id=GROUP)]) == 200
        await emulator.wait_for(1)
        assert _lookups(gw, "unknown") == 1
    assert emulator.texts_to(GROUP) == [f"Hello {BOB}!"]


async def test_a_failing_profile_api_still_answers_with_the_id(
    line_gateway, sender, emulator: LineEmulator
) -> None:
    emulator.fail_next(status=500, endpoint="profile")
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert _lookups(gw, "failed") == 1
    assert delivery.texts == [f"Hello {ALICE}!"]
