"""The Slack edge (verify, key, append) and the parse behind it, seen from outside.

- The hand-written v0 check gives slack_sdk's ``SignatureVerifier`` verdict.
- What never needs a turn is acknowledged and not stored; what only the worker can judge (a
  thread follow-up without a mention) is stored, then acknowledged there without a turn.
- A retry of an event already stored is acknowledged as a duplicate.
- An event the worker cannot parse is dead-lettered whole, and replays as it came.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from slack_sdk.signature import Clock, SignatureVerifier

from connectors.slack.edge import signature_matches
from connectors.slack.emulator import (
    SlackEmulator,
    app_mention_event,
    event_callback,
    message_event,
)
from gateway.deadletters import list_dead_letters, replay
from gateway.errors import PayloadError
from tests.connectors.slack.conftest import (
    NOW,
    FixedClock,
    inbox_entries,
    make_connector,
    sender_for,
    signed_request,
    slack_config,
)
from tests.harness import RunningGateway, eventually, running_gateway

# Secrets and bodies as Slack has them: text (the SDK signs str), no lone surrogates.
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
secrets = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40).filter(
    str.strip
)


class _At(Clock):
    def __init__(self, now: float) -> None:
        self.value = now

    def now(self) -> float:
        return self.value


def _sdk_verdict(secret: str, timestamp: str, body: str, signature: str) -> bool:
    return SignatureVerifier(secret, clock=_At(int(timestamp))).is_valid(
        body=body, timestamp=timestamp, signature=signature
    )


@given(
    secret=secrets,
    body=text,
    timestamp=st.integers(0, 2**40).map(str),
    tamper=st.sampled_from(["none", "body", "timestamp", "secret", "case"]),
)
def test_signature_check_gives_the_sdk_verdict(
    secret: str, body: str, timestamp: str, tamper: str
) -> None:
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    assert signature is not None
    signed_body, signed_ts = body, timestamp
    if tamper == "body":
        signed_body = body + " "
    elif tamper == "timestamp":
        signed_ts = str(int(timestamp) + 1)
    elif tamper == "secret":
        signature = SignatureVerifier(secret + "x").generate_signature(
            timestamp=timestamp, body=body
        )
        assert signature is not None
    elif tamper == "case":
        signature = signature.upper()
    ours = signature_matches(secret.encode(), signed_ts, signed_body.encode(), signature)
    assert ours == _sdk_verdict(secret, signed_ts, signed_body, signature)
    assert ours == (tamper == "none" or (tamper == "case" and signature == signature.lower()))


@given(secret=secrets, signature=st.text(max_size=80))
def test_any_header_text_is_judged_without_error(secret: str, signature: str) -> None:
    """Whatever arrives in X-Slack-Signature: a verdict, never an exception (the SDK's own
    check raises on non-ASCII text; ours calls it a mismatch)."""
    ours = signature_matches(secret.encode(), "1700000000", b"{}", signature)
    if signature.isascii():
        assert ours == _sdk_verdict(secret, "1700000000", "{}", signature)
    else:
        assert ours is False


def _counted(gw: RunningGateway, metric: str, **labels: str) -> float:
    value = gw.runtime.metrics.registry.get_sample_value(metric, {"channel": "slack", **labels})
    return value or 0.0


async def test_thread_chatter_is_stored_then_acknowledged_without_a_turn(
    slack_gateway, emulator: SlackEmulator, session: aiohttp.ClientSession
) -> None:
    """A reply in a channel thread the bot never answered in, without a mention: only the
    worker can tell (it reads the thread's state), so it is stored, parsed to nothing, and
    acknowledged with outcome ``ignored`` — no reply, nothing left pending."""
    async with slack_gateway() as gw:
        chatter = message_event(
            text="lunch?",
            channel="C0SALES",
            channel_type="channel",
            ts="1700000000.000200",
            thread_ts="1700000000.000100",
        )
        assert (await sender_for(session, gw).event(event_callback(chatter)))[0] == 200
        assert await inbox_entries(gw) == 1
        await eventually(lambda: _counted(gw, "flowbiz_inbound_total", outcome="ignored") == 1)
        assert _counted(gw, "flowbiz_channel_events_total", event="ignored_not_addressed") == 1
        rt = gw.runtime
        assert rt.store is not None
        for partition in range(rt.keyspace.partitions):
            assert await rt.store.backlog(rt.keyspace.inbox(partition), "workers") == 0
        await asyncio.sleep(0.2)
    assert emulator.posted == []


async def test_a_retry_of_a_stored_event_is_acknowledged_as_a_duplicate(
    slack_gateway, emulator: SlackEmulator, session: aiohttp.ClientSession
) -> None:
    async with slack_gateway() as gw:
        sender = sender_for(session, gw)
        first = event_callback(message_event(text="pricing", ts="1700000000.000100"))
        assert (await sender.event(first))[0] == 200
        assert (await sender.event(first, retry_num=1, retry_reason="http_timeout"))[0] == 200
        # A retry of an attempt that never got stored (the first answer was a 503) is new.
        second = event_callback(message_event(text="hours", ts="1700000000.000300"))
        assert (await sender.event(second, retry_num=2, retry_reason="http_error"))[0] == 200
        await emulator.wait_for_posts(2)
        assert _counted(gw, "flowbiz_channel_events_total", event="retry_received") == 2
        assert _counted(gw, "flowbiz_channel_events_total", event="retry_duplicate") == 1
        assert _counted(gw, "flowbiz_channel_events_total", event="retry_stored") == 1
        assert _counted(gw, "flowbiz_inbound_total", outcome="duplicate") == 1
        assert await inbox_entries(gw) == 2
        await asyncio.sleep(0.2)
    assert sorted(p.shown_text for p in emulator.posted) == [
        "Pro costs 29 a month.",
        "We are open 9 to 18.",
    ]


async def test_an_event_the_worker_cannot_place_is_dead_lettered_and_replays(
    store_url: str,
    personas_dir: Path,
    emulator: SlackEmulator,
    session: aiohttp.ClientSession,
) -> None:
    """Stored by the web role for the block ``slack``; the worker that reads it was started
    with the block renamed, so no channel of its configuration owns the event. It is not
    lost: dead-lettered with the reason and the envelope, it is answered once replayed under
    a configuration that owns it again."""
    data = slack_config(store_url, personas_dir, emulator)
    async with running_gateway(data, role="web") as gw:
        status, _ = await sender_for(session, gw).event(
            event_callback(message_event(text="pricing", channel="D0ALICE"))
        )
        assert status == 200
        assert await inbox_entries(gw) == 1

    renamed: dict[str, Any] = slack_config(store_url, personas_dir, emulator)
    renamed["tenants"][0]["channels"][0]["id"] = "slack-main"
    async with running_gateway(renamed) as gw:
        rt = gw.runtime
        assert rt.store is not None
        [(handle, letter)] = await eventually(lambda: list_dead_letters(rt.store, rt.keyspace))
        assert letter.reason.startswith("no_channel")
        assert letter.code == "unparsable_event"
        assert (letter.tenant, letter.channel) == ("acme", "slack")
        assert letter.raw is not None
        assert '"event_id":"msg:T0FLOWBIZ:D0ALICE:' in letter.raw
        assert _counted(gw, "flowbiz_inbound_total", outcome="parse_failed") == 1
    assert emulator.posted == []

    async with running_gateway(data) as gw:
        rt = gw.runtime
        assert rt.store is not None
        assert await replay(rt.store, rt.keyspace, handle)
        [post] = await emulator.wait_for_posts(1)
        assert await list_dead_letters(rt.store, rt.keyspace) == []
    assert (post.channel, post.shown_text) == ("D0ALICE", "Pro costs 29 a month.")


async def test_attack_a_body_the_worker_could_not_read_back_is_refused_at_the_edge(
    personas_dir: Path,
) -> None:
    """A lone surrogate escape is JSON text ``json.loads`` takes, but the envelope holding it
    could not be read back by the worker: refused 400 before it is acknowledged."""
    connector = make_connector(personas_dir, clock=FixedClock(NOW))
    body = json.dumps(event_callback(message_event(text="hi \ud800", ts="1.2"))).encode()
    assert b"\\ud800" in body
    with pytest.raises(PayloadError) as caught:
        await connector.events(signed_request("/slack/events", body, timestamp=NOW))
    assert caught.value.status == 400


async def test_a_setting_changed_after_the_ack_does_not_orphan_a_stored_event(
    store_url: str,
    personas_dir: Path,
    emulator: SlackEmulator,
    session: aiohttp.ClientSession,
) -> None:
    """The edge keyed a channel mention by the thread under it (``reply_in_thread: true``);
    the worker that reads it runs with ``reply_in_thread: false``. The message keeps the
    conversation the edge gave it — answered in that thread, not dead-lettered as belonging
    to another conversation."""
    mention = app_mention_event(text="pricing?", channel="C0SALES", ts="1700000000.000500")
    async with running_gateway(slack_config(store_url, personas_dir, emulator), role="web") as gw:
        assert (await sender_for(session, gw).event(event_callback(mention)))[0] == 200
    flat = slack_config(store_url, personas_dir, emulator, reply_in_thread=False)
    async with running_gateway(flat) as gw:
        [post] = await emulator.wait_for_posts(1)
        rt = gw.runtime
        assert rt.store is not None
        assert await list_dead_letters(rt.store, rt.keyspace) == []
    assert (post.channel, post.thread_ts) == ("C0SALES", "1700000000.000500")
