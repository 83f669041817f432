"""Outbound: splitting, rate limits, failures classified, no blind resend, pacing."""

from __future__ import annotations

import asyncio
import time

import pytest

from connectors.send_policy import utf16_len
from connectors.slack.connector import escape, split_text, unescape
from connectors.slack.emulator import event_callback, message_event, slash_command_fields
from gateway.deadletters import list_dead_letters
from tests.connectors.slack.conftest import LONG_TEXT, RunningGateway, sender_for
from tests.harness import eventually


async def _dead_letters(gw: RunningGateway, count: int = 1):
    rt = gw.runtime
    assert rt.store is not None

    async def found():
        letters = await list_dead_letters(rt.store, rt.keyspace)
        return letters if len(letters) >= count else None

    return [letter for _, letter in await eventually(found)]


@pytest.mark.parametrize("limit", [50, 200, 4000])
def test_split_text_keeps_everything_in_order(limit: int) -> None:
    """Pieces are within the limit, never cut an entity, and join back to the text."""
    text = escape(LONG_TEXT)
    parts = split_text(text, limit)
    assert "".join(parts) == text
    assert all(0 < len(p) <= limit for p in parts)
    for part in parts:
        amp = part.rfind("&")
        assert amp == -1 or ";" in part[amp:], "an &entity; was cut in two"


def test_split_text_counts_utf16_units() -> None:
    """An emoji counts 2 (as a JavaScript string's length does), so no piece is over the
    limit however Slack counts."""
    text = "\N{GRINNING FACE}" * 150 + " &amp; " + "\N{GRINNING FACE}" * 150
    parts = split_text(text, 200)
    assert "".join(parts) == text
    assert all(0 < utf16_len(p) <= 200 for p in parts)


async def test_long_reply_arrives_whole_in_order_in_parts(slack_gateway, emulator, session):
    """A reply longer than one Slack message arrives as several posts, in order, nothing lost."""
    async with slack_gateway(max_message_chars=2000) as gw:
        await sender_for(session, gw).event(event_callback(message_event(text=f"echo {LONG_TEXT}")))
        await emulator.wait_for_posts(2)
        await asyncio.sleep(0.3)
    posts = emulator.posted
    assert len(posts) >= 5
    assert all(len(p.text) <= 2000 for p in posts)
    assert "".join(unescape(p.text) for p in posts) == f"echo {LONG_TEXT}"


async def test_msg_too_long_is_resplit_not_surfaced(slack_gateway, emulator, session) -> None:
    """If Slack refuses a size it should take (msg_too_long), the text goes in smaller posts."""
    emulator.max_text = 3000
    async with slack_gateway(max_message_chars=40_000) as gw:
        await sender_for(session, gw).event(event_callback(message_event(text=f"echo {LONG_TEXT}")))
        await emulator.wait_for_posts(3)
        await asyncio.sleep(0.3)
        assert await list_dead_letters(gw.runtime.store, gw.runtime.keyspace) == []
    assert "".join(unescape(p.text) for p in emulator.posted) == f"echo {LONG_TEXT}"
    assert any(c.error == "msg_too_long" for c in emulator.calls)


async def test_rate_limit_is_retried_after_retry_after(slack_gateway, emulator, session) -> None:
    """429 with Retry-After: 1 → the next try waits at least that second, then posts once."""
    emulator.fail_next("chat.postMessage", status=429, retry_after=1)
    async with slack_gateway(pipeline={"retry_max_seconds": 5}) as gw:
        started = time.perf_counter()
        await sender_for(session, gw).event(event_callback(message_event(text="pricing")))
        await emulator.wait_for_posts(1)
        assert time.perf_counter() - started >= 1.0
        await asyncio.sleep(0.2)
    posts = [c for c in emulator.calls if c.method == "chat.postMessage"]
    assert [c.status for c in posts] == [429, 200]
    assert len(emulator.posted) == 1


async def test_server_error_is_retried(slack_gateway, emulator, session) -> None:
    """A 500 from Slack is transient: retried, delivered once."""
    emulator.fail_next("chat.postMessage", 2, status=500, error="internal_error")
    async with slack_gateway() as gw:
        await sender_for(session, gw).event(event_callback(message_event(text="pricing")))
        await emulator.wait_for_posts(1)
    assert len(emulator.posted) == 1


async def test_failed_part_resumes_without_reposting_earlier_parts(
    slack_gateway, emulator, session
) -> None:
    """If part 3 of a long reply is rate limited, the retry posts parts 3.. only."""
    emulator.fail_next("chat.postMessage", status=429, retry_after=0, after=2)
    async with slack_gateway(max_message_chars=2000) as gw:
        await sender_for(session, gw).event(event_callback(message_event(text=f"echo {LONG_TEXT}")))
        await emulator.wait_for_posts(5)
        await asyncio.sleep(0.5)
    statuses = [c.status for c in emulator.calls if c.method == "chat.postMessage"]
    assert statuses[:4] == [200, 200, 429, 200]
    assert "".join(unescape(p.text) for p in emulator.posted) == f"echo {LONG_TEXT}"


@pytest.mark.parametrize(
    ("overrides", "code"),
    [({"bot_token": "env:T_SLACK_BAD_BOT"}, ("unauthorized", "invalid_auth"))],
)
async def test_permanent_errors_are_dead_lettered(
    slack_gateway, emulator, session, overrides, code
) -> None:
    """invalid_auth is permanent: no retry, a dead letter with Slack's error code."""
    async with slack_gateway(**overrides) as gw:
        await sender_for(session, gw).event(event_callback(message_event(text="pricing")))
        [letter] = await _dead_letters(gw)
    assert (letter.code, letter.platform_code) == code
    assert letter.attempts == 1
    assert emulator.posted == []


async def test_channel_not_found_is_dead_lettered(slack_gateway, emulator, session) -> None:
    """channel_not_found is permanent: dead-lettered once with the reason."""
    async with slack_gateway() as gw:
        await sender_for(session, gw).event(
            event_callback(message_event(text="pricing", channel="C0GONE", channel_type="im"))
        )
        [letter] = await _dead_letters(gw)
    assert (letter.code, letter.platform_code, letter.attempts) == (
        "rejected",
        "channel_not_found",
        1,
    )
    assert "channel_not_found" in letter.reason


@pytest.mark.parametrize(
    ("mode", "timeout"),
    [
        ("disconnect", 3.0),  # long enough for any SDK-level retry to show up
        ("hang", 0.3),
    ],
)
async def test_unknown_outcome_is_not_retried_blindly(
    slack_gateway, emulator, session, mode, timeout
) -> None:
    """Slack got the post but the answer was lost: no second post, dead letter outcome_unknown."""
    emulator.drop_next("chat.postMessage", mode=mode)
    async with slack_gateway(request_timeout_seconds=timeout) as gw:
        await sender_for(session, gw).event(event_callback(message_event(text="pricing")))
        [letter] = await _dead_letters(gw)
        await asyncio.sleep(0.3)
    assert letter.code == "outcome_unknown"
    assert len(emulator.posted) == 1
    assert sum(c.method == "chat.postMessage" for c in emulator.calls) == 1


async def test_replies_in_one_slack_channel_are_paced(slack_gateway, emulator, session) -> None:
    """Replies to one Slack channel (here four threads of it) go out at messages_per_second."""
    async with slack_gateway(messages_per_second=5, burst=1, channel_messages="all") as gw:
        sender = sender_for(session, gw)
        for n in range(4):
            await sender.event(
                event_callback(
                    message_event(
                        text="pricing",
                        channel="C0SALES",
                        channel_type="channel",
                        ts=f"1700000001.00010{n}",
                    )
                )
            )
        posts = await emulator.wait_for_posts(4)
    assert len({p.thread_ts for p in posts}) == 4  # four conversations
    assert posts[3].received_at - posts[0].received_at >= 0.55  # three gaps of 0.2 s


async def test_an_expired_response_url_is_labelled_rejected_not_by_its_body(
    slack_gateway, emulator, session
) -> None:
    """Whatever the response_url answers, the metric label is one of the failure codes; the
    body (Slack's ``expired_url``) is kept for the operator as the platform code."""
    emulator.fail_next("response_url", status=404, error="expired_url")
    async with slack_gateway() as gw:
        fields = slash_command_fields(
            command="/flowbiz", text="pricing", response_url=emulator.response_url()
        )
        await sender_for(session, gw).command(fields)
        [letter] = await _dead_letters(gw)
        sample = gw.runtime.metrics.registry.get_sample_value
        labels = {"channel": "slack", "reason": "rejected"}
        # Counted once the store has the letter: the test may see the letter first.
        await eventually(lambda: sample("flowbiz_dead_letters_total", labels) == 1)
    assert (letter.code, letter.platform_code, letter.attempts) == (
        "rejected",
        "expired_url",
        1,
    )
    assert letter.reason == "response_url answered 404 expired_url"
