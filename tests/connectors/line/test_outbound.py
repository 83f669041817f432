"""LINE outbound: reply while the token is fresh, else push once; splitting; failures."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from connectors.line.connector import MAX_TEXT_UTF16, push_retry_key, split_text, utf16_len
from gateway.deadletters import list_dead_letters, replay
from gateway.models import Channel, OutboundMessage
from tests.connectors.line.conftest import (
    ALICE,
    LONG_REPLY,
    channel_event,
    line_channel,
    line_config,
)
from tests.harness import eventually, running_gateway

# With this margin a token counts as fresh for 0.2 s; the sleepy agent takes 0.3 s.
STALE_AFTER_AGENT = 59.8


async def _push_usage(gw) -> int:
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    key = gw.runtime.keyspace.line_push_usage("acme", day)
    return await gw.runtime.store.incr(key, 0)


async def test_slow_agent_is_answered_by_one_push_when_the_token_is_stale(
    line_gateway, sender, emulator
):
    """The token aged past the margin while the agent worked: one push, counted for the tenant."""
    async with line_gateway(reply_token_margin_seconds=STALE_AFTER_AGENT) as gw:
        line = sender(gw.url)
        event = line.text("slow question", user_id=ALICE)
        assert await line.post([event]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.via == "push"
        assert delivery.to == ALICE
        assert delivery.texts == ["slow answer to: slow question"]
        assert uuid.UUID(delivery.retry_key or "")  # a UUID retry key is always sent
        assert emulator.calls_to("reply") == []
        assert channel_event(gw, "reply_token_stale") == 1
        await eventually(lambda: channel_event(gw, "push") == 1)  # counted after LINE answers
        assert await _push_usage(gw) == 1


async def test_token_expired_at_line_falls_back_to_one_push(line_gateway, sender, emulator):
    """LINE refuses a token the gateway still thought fresh: the same send pushes instead."""
    emulator.reply_token_lifetime = 0.1
    async with line_gateway(reply_token_margin_seconds=0) as gw:
        line = sender(gw.url)
        assert await line.post([line.text("slow question", user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.via == "push"
        assert [c.status for c in emulator.calls_to("reply")] == [400]
        assert channel_event(gw, "reply_token_rejected") == 1
        await asyncio.sleep(0.3)
        assert len(emulator.deliveries) == 1


async def test_push_retried_after_a_timeout_is_delivered_once(line_gateway, sender, emulator):
    """LINE accepted a push but answered too late; the retry (same retry key) gets 409 = done."""
    emulator.delay_next("push", 1.5)
    async with line_gateway(
        reply_token_margin_seconds=STALE_AFTER_AGENT, request_timeout_seconds=0.5
    ) as gw:
        line = sender(gw.url)
        assert await line.post([line.text("slow question", user_id=ALICE)]) == 200
        await emulator.wait_for(1)
        pushes = emulator.calls_to("push")
        for _ in range(100):
            if len(pushes) >= 2:
                break
            await asyncio.sleep(0.05)
            pushes = emulator.calls_to("push")
        assert [c.status for c in pushes] == [200, 409]
        assert pushes[0].retry_key == pushes[1].retry_key
        assert len(emulator.deliveries) == 1
        await eventually(lambda: channel_event(gw, "push_already_accepted") == 1)
        await eventually(
            lambda: gw.runtime.metrics.registry.get_sample_value(
                "flowbiz_deliveries_total", {"channel": "line", "outcome": "delivered"}
            )
        )


async def test_reply_429_with_retry_after_is_retried_and_delivered_once(
    line_gateway, sender, emulator
):
    """A 429 on reply leaves the token unused: the retry waits and replies, once."""
    emulator.fail_next(1, status=429, retry_after=1, endpoint="reply")
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.via == "reply"
        first, second = emulator.calls_to("reply")
        assert (first.status, second.status) == (429, 200)
        # Retry-After (1 s) honoured up to the test config's 0.5 s backoff cap.
        assert second.at - first.at >= 0.45
        assert emulator.calls_to("push") == []


async def test_a_reply_redelivered_after_a_crash_is_dead_lettered_and_its_replay_pushes_once(
    line_gateway, sender, emulator
):
    """A process died after LINE took a reply and before it recorded so: the redelivered
    outbound finds the reply token held by itself, and is dead-lettered as outcome_unknown
    rather than pushed (which would answer the customer twice)."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.via == "reply"
        store, keyspace = gw.runtime.store, gw.runtime.keyspace
        # What the crash leaves: the outbox entry not done, and no record of the reply.
        [(partition, entry)] = [
            (p, e)
            for p in range(gw.config.store.partitions)
            for e in await store.range(keyspace.outbox(p))
        ]
        message = OutboundMessage.model_validate_json(entry.payload)
        conv = message.conversation.key
        await eventually(
            lambda: store.get_record(keyspace.delivered(partition, message.idempotency_key))
        )
        await store.delete(
            [
                keyspace.delivered(partition, message.idempotency_key),
                keyspace.line_replied(conv, message.idempotency_key),
            ]
        )
        await store.append(keyspace.outbox(partition), entry.payload)
        await eventually(lambda: list_dead_letters(store, keyspace))
        [(_, letter)] = await list_dead_letters(store, keyspace)
        assert letter.code == "outcome_unknown"
        assert channel_event(gw, "reply_outcome_unknown") == 1
        assert emulator.calls_to("push") == []
        assert len(emulator.deliveries) == 1

        # The operator replays it while the reply token is still fresh: pushed, once.
        [(handle, _)] = await list_dead_letters(store, keyspace)
        assert await replay(store, keyspace, handle)
        [_, pushed] = await emulator.wait_for(2)
        assert pushed.via == "push"
        assert channel_event(gw, "reply_replayed_as_push") == 1
        await asyncio.sleep(0.3)  # a second push or another dead letter would show by now
        assert await list_dead_letters(store, keyspace) == []
        assert len(emulator.deliveries) == 2


async def test_reply_500_is_retried_as_one_push(line_gateway, sender, emulator):
    """LINE answered the reply with a 5xx: nothing was shown, so the retry pushes (once),
    and is not taken for a reply whose outcome was never recorded."""
    emulator.fail_next(1, status=500, endpoint="reply")
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.via == "push"
        assert [c.status for c in emulator.calls_to("reply")] == [500]
        assert channel_event(gw, "reply_outcome_unknown") == 0
        assert await list_dead_letters(gw.runtime.store, gw.runtime.keyspace) == []


async def test_push_500_is_retried_with_the_same_retry_key(line_gateway, sender, emulator):
    """A 5xx on push is transient: retried with the same key and delivered once."""
    emulator.fail_next(2, status=500, endpoint="push")
    async with line_gateway(reply_token_margin_seconds=STALE_AFTER_AGENT) as gw:
        line = sender(gw.url)
        assert await line.post([line.text("slow question", user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        pushes = emulator.calls_to("push")
        assert [c.status for c in pushes] == [500, 500, 200]
        assert len({c.retry_key for c in pushes}) == 1
        assert delivery.via == "push"
        await eventually(lambda: channel_event(gw, "push") == 1)
        assert await _push_usage(gw) == 1


async def test_permanent_error_lands_in_the_dead_letter_list(line_gateway, sender, emulator):
    """LINE refuses the access token (401): no retry, dead-lettered with the reason."""
    async with line_gateway(channel_access_token="env:T_LINE_BAD_TOKEN") as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=ALICE)]) == 200

        async def dead() -> list:
            return await list_dead_letters(gw.runtime.store, gw.runtime.keyspace)

        for _ in range(200):
            letters = await dead()
            if letters:
                break
            await asyncio.sleep(0.02)
        [(_, letter)] = letters
        assert (letter.code, letter.platform_code) == ("unauthorized", "401")
        assert "LINE reply answered 401" in letter.reason
        assert letter.channel == "line"
        assert [c.status for c in emulator.calls_to("reply")] == [401]
        assert emulator.deliveries == []


async def test_long_answer_is_split_and_batched_five_per_call(line_gateway, sender, emulator):
    """Six text objects: five go by reply, the sixth by push; order and content are kept."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.text("essay please", user_id=ALICE)]) == 200
        first, second = await emulator.wait_for(2)
        assert (first.via, len(first.messages)) == ("reply", 5)
        assert (second.via, len(second.messages)) == ("push", 1)
        texts = first.texts + second.texts
        assert all(utf16_len(t) <= MAX_TEXT_UTF16 for t in texts)
        assert "\n".join(texts) == LONG_REPLY
        await eventually(lambda: channel_event(gw, "push") == 1)
        assert await _push_usage(gw) == 1


async def test_later_batch_failing_does_not_repeat_the_replied_batch(
    line_gateway, sender, emulator
):
    """Reply succeeded, the push of the rest failed: the retry sends only the rest."""
    emulator.fail_next(1, status=500, endpoint="push")
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.text("essay please", user_id=ALICE)]) == 200
        first, second = await emulator.wait_for(2)
        await asyncio.sleep(0.3)
        assert [d.via for d in emulator.deliveries] == ["reply", "push"]
        assert [c.status for c in emulator.calls_to("reply")] == [200]
        assert [c.status for c in emulator.calls_to("push")] == [500, 200]
        assert len(first.messages) + len(second.messages) == 6


def test_split_text_counts_utf16_and_never_cuts_a_surrogate_pair():
    """Astral emoji count two units; chunks stay under the limit and rejoin to the original."""
    text = "🍎" * 7 + "abc"  # 17 UTF-16 units
    chunks = split_text(text, limit=4)
    assert all(utf16_len(c) <= 4 for c in chunks)
    assert "".join(chunks) == text
    assert chunks[0] == "🍎🍎"


def test_split_text_prefers_line_breaks():
    """A chunk ends at a newline in its second half rather than mid-word."""
    text = "first line here\nsecond line here"
    assert split_text(text, limit=20) == ["first line here", "second line here"]
    assert split_text("short") == ["short"]


def test_push_retry_key_is_a_stable_uuid_per_batch():
    """Every process derives the same UUID retry key for a batch; batches differ."""
    key = "0196b2a0-0000-7000-8000-000000000000:0"
    assert push_retry_key(key, 0) == push_retry_key(key, 0)
    assert push_retry_key(key, 0) != push_retry_key(key, 1)
    assert uuid.UUID(push_retry_key(key, 0)).version == 5


async def test_split_web_and_worker_roles_deliver_and_release_clients(
    store_url, personas_dir, emulator, sender
):
    """Scale-out: a web process ingests, a worker process replies and shuts down cleanly."""
    data = line_config(store_url, personas_dir, [line_channel(emulator)])
    async with running_gateway(data, role="web") as web, running_gateway(data, role="worker") as wk:
        line = sender(web.url)
        assert await line.post([line.text("hello", user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert (delivery.via, delivery.texts) == ("reply", ["Hello Alice!"])
        worker_line = wk.runtime.connectors[Channel.LINE]
        assert worker_line.open_clients == 1  # created by send(): workers never start()
    assert worker_line.open_clients == 0  # closed at shutdown, in the worker role too


async def test_push_quota_is_taken_once_per_push_and_enforced(
    store_url, personas_dir, emulator, sender
):
    """Paid pushes take the plan's monthly quota once despite retries; beyond it: dead letter."""
    emulator.fail_next(1, status=500, endpoint="push")
    data = line_config(
        store_url,
        personas_dir,
        [line_channel(emulator, reply_token_margin_seconds=STALE_AFTER_AGENT)],
    )
    data["plans"] = {"tiny": {"monthly_line_pushes": 1}}
    data["tenants"][0]["plan"] = "tiny"
    async with running_gateway(data) as gw:
        line = sender(gw.url)
        assert await line.post([line.text("slow one", user_id=ALICE)]) == 200
        await emulator.wait_for(1)
        assert [c.status for c in emulator.calls_to("push")] == [500, 200]
        assert await line.post([line.text("slow two", user_id=ALICE)]) == 200
        letters = await eventually(lambda: list_dead_letters(gw.runtime.store, gw.runtime.keyspace))
        [(_, letter)] = letters
        assert letter.code == "quota_exceeded"
        assert len(emulator.deliveries) == 1
        assert channel_event(gw, "push_over_quota") == 1
