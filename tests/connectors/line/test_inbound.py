"""LINE inbound: signature first, the console's verify request, events, dedupe, redelivery."""

from __future__ import annotations

import asyncio
import json

import pytest
from linebot.v3.webhook import SignatureValidator

from connectors.line.emulator import sign_body
from gateway.deadletters import list_dead_letters
from gateway.envelope import RawEvent
from tests.connectors.line.conftest import (
    ALICE,
    BOB,
    DEST,
    DEST_2,
    GROUP,
    ROOM,
    SECRET,
    SECRET_2,
    channel_event,
    inbox_backlog,
    line_channel,
)
from tests.harness import eventually


async def test_text_message_is_answered_by_reply_with_quick_replies(line_gateway, sender, emulator):
    """A signed text message is acked 200 and answered once by reply, buttons as quick replies."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.via == "reply"
        assert delivery.to == ALICE
        assert delivery.texts == ["Hello Alice!"]  # the name comes from the profile API
        [message] = delivery.messages
        assert message["sender"] == {"name": "Acme Helper"}
        items = message["quickReply"]["items"]
        assert [(i["action"]["label"], i["action"]["data"]) for i in items] == [
            ("Opening hours", "opening hours"),
            ("Pricing", "pricing"),
        ]
        await eventually(lambda: emulator.loading == [(ALICE, 20)])
        assert emulator.calls_to("push") == []


@pytest.mark.parametrize(
    "case", ["wrong-secret", "altered-body", "missing-header", "not-utf8", "other-channel-path"]
)
async def test_bad_signatures_get_401_and_store_nothing(line_gateway, sender, emulator, case):
    """A wrong, missing or mismatched X-Line-Signature: 401, nothing stored, nobody answered."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        body = line.body([line.text("hello", user_id=ALICE)])
        signature: str | None = sign_body(SECRET, body)
        path = None
        if case == "wrong-secret":
            signature = sign_body("not-the-secret", body)
        elif case == "altered-body":
            body = body.replace(b"hello", b"HELLO")
        elif case == "missing-header":
            signature = None
        elif case == "not-utf8":
            body = body.replace(b"hello", b"\xff\xfe")
            signature = sign_body(SECRET, body)
        elif case == "other-channel-path":
            path = "/line/webhook/acme/line"
            signature = sign_body(SECRET_2, body)
        status, text = await line.post_raw(body, signature=signature, path=path)
        assert status == 401, text
        assert json.loads(text)["error"] in {"bad_signature", "missing_signature"}
        assert await inbox_backlog(gw) == 0
        await asyncio.sleep(0.2)
        assert emulator.calls == []


async def test_non_ascii_body_verifies_over_its_utf8_bytes(line_gateway, sender, emulator):
    """Thai, Japanese and emoji: the bytes LINE signs verify through the SDK's str validator."""
    text = "สวัสดี こんにちは 🍎 hello"
    async with line_gateway() as gw:
        line = sender(gw.url)
        event = line.text(text, user_id=ALICE)
        body = line.body([event])
        assert SignatureValidator(SECRET).validate(body.decode("utf-8"), sign_body(SECRET, body))
        assert await line.post([event]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.texts == ["Hello Alice!"]


async def test_console_verify_request_is_answered_200_and_stores_nothing(line_gateway, sender):
    """The console's Verify button (no events) gets 200 and touches nothing."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([]) == 200
        assert await inbox_backlog(gw) == 0
        assert channel_event(gw, "verify_request") == 1


async def test_redelivered_event_is_answered_once(line_gateway, sender, emulator):
    """A redelivery (same webhookEventId, isRedelivery) and concurrent duplicates: one reply."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        event = line.text("hello", user_id=ALICE)
        statuses = await asyncio.gather(*(line.post([event]) for _ in range(3)))
        assert statuses == [200, 200, 200]
        await emulator.wait_for(1)
        assert await line.post([line.redelivery(event)]) == 200
        await asyncio.sleep(0.5)  # time for a wrong second reply to show up
        assert len(emulator.deliveries) == 1
        assert channel_event(gw, "redelivery") == 1
        # The loading indicator starts for the new event only, not for its duplicates.
        assert len(emulator.loading) == 1


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_redelivery_to_another_process_is_deduped(
    line_gateway, sender, emulator, store, request, store_url
):
    """Two gateways on one store: the event at one and its redelivery at the other, one reply."""
    url = store_url if store == "sqlite" else request.getfixturevalue("redis_url")
    async with line_gateway(url=url) as first, line_gateway(url=url) as second:
        event = sender(first.url).text("hello", user_id=ALICE)
        assert await sender(first.url).post([event]) == 200
        assert await sender(second.url).post([sender(second.url).redelivery(event)]) == 200
        await emulator.wait_for(1)
        await asyncio.sleep(0.5)
        assert len(emulator.deliveries) == 1


async def test_follow_is_welcomed_and_unfollow_is_silent(line_gateway, sender, emulator):
    """follow → the persona's welcome by name; unfollow → no answer."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.follow(user_id=BOB)]) == 200
        [welcome] = await emulator.wait_for(1)
        assert (welcome.via, welcome.texts) == ("reply", ["Welcome Bob!"])
        assert await line.post([line.unfollow(user_id=BOB)]) == 200
        await eventually(
            lambda: gw.runtime.metrics.registry.get_sample_value(
                "flowbiz_turns_total", {"outcome": "silent"}
            )
        )
        assert len(emulator.deliveries) == 1


async def test_postback_is_routed_as_an_action(line_gateway, sender, emulator):
    """A quick-reply postback arrives as an action carrying its data and gets that answer."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.postback("pricing", user_id=ALICE)]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.texts == ["Pro costs 29 a month."]


async def test_group_and_room_sources_are_separate_conversations(line_gateway, sender, emulator):
    """Group and room messages are answered in that group/room; join is welcomed, leave is not."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        events = [
            line.join(group_id=GROUP),
            line.text("hello", user_id=ALICE, group_id=GROUP),
            line.text("pricing", user_id=BOB, room_id=ROOM),
        ]
        assert await line.post(events) == 200
        await emulator.wait_for(3)
        # Alice is no member LINE shows in that group (404): the greeting keeps her id.
        assert emulator.texts_to(GROUP) == [f"Welcome {GROUP}!", f"Hello {ALICE}!"]
        assert emulator.texts_to(ROOM) == ["Pro costs 29 a month."]
        assert emulator.loading == []  # the loading indicator exists for 1:1 chats only
        assert await line.post([line.leave(group_id=GROUP)]) == 200
        await asyncio.sleep(0.3)
        assert len(emulator.deliveries) == 3
        state_keys = await gw.runtime.store.scan(gw.config.store.prefix, limit=1000)
        assert any(f"line%3A{GROUP}" in key for key in state_keys)
        assert any(f"line%3A{ROOM}" in key for key in state_keys)


async def test_member_joined_is_welcomed_in_the_group(line_gateway, sender, emulator):
    """memberJoined in a group produces one welcome there."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([line.member_joined(group_id=GROUP, user_ids=[BOB])]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.to == GROUP
        assert delivery.texts[0].startswith("Welcome ")


async def test_unknown_and_incomplete_events_are_counted_or_kept_not_dropped_silently(
    line_gateway, sender, emulator
):
    """An unknown event type is counted at the edge; an event the SDK cannot read is stored,
    then dead-lettered by the worker with its reason and the event whole; the rest is served."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        future = line.event("somethingNew", line.source(ALICE), reply=False, thing={"x": 1})
        incomplete = line.text("hello", user_id=ALICE)
        del incomplete["message"]["quoteToken"]  # the SDK's model requires it
        good = line.text("pricing", user_id=BOB)
        assert await line.post([future, incomplete, good]) == 200
        [delivery] = await emulator.wait_for(1)
        assert delivery.to == BOB
        assert channel_event(gw, "unknown_event") == 1
        rt = gw.runtime
        assert rt.store is not None
        [(_, letter)] = await eventually(lambda: list_dead_letters(rt.store, rt.keyspace))
        assert letter.reason.startswith("malformed_event: ")
        assert (letter.channel, letter.tenant) == ("line", "acme")
        assert letter.raw is not None
        kept = RawEvent.model_validate_json(letter.raw)
        assert kept.event == incomplete
        assert kept.event_id == incomplete["webhookEventId"]
        parse_failed = rt.metrics.registry.get_sample_value(
            "flowbiz_inbound_total", {"channel": "line", "outcome": "parse_failed"}
        )
        assert parse_failed == 1


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "bad_payload"),
        (b'{"destination": "x"}', 400, "bad_payload"),
        (
            b'{"destination": "' + DEST.encode() + b'", "events": [{"type": "message"}]}',
            400,
            "bad_payload",
        ),
        (b'{"destination": "' + DEST_2.encode() + b'", "events": []}', 404, "unknown_tenant"),
    ],
    ids=["not-json", "no-events", "event-missing-common-fields", "foreign-destination"],
)
async def test_signed_but_malformed_bodies_are_refused_clearly(
    line_gateway, sender, body, status, error
):
    """Signed garbage gets 400, a destination no channel owns gets 404; nothing is stored."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        got, text = await line.post_raw(body, signature=sign_body(SECRET, body))
        assert (got, json.loads(text)["error"]) == (status, error)
        assert await inbox_backlog(gw) == 0


async def test_two_channels_of_one_tenant_answer_through_their_own_bot(
    line_gateway, sender, emulator
):
    """The destination picks the channel: each bot answers with its own access token."""
    channels = [
        line_channel(emulator),
        line_channel(
            emulator,
            id="line-th",
            destination=DEST_2,
            channel_secret="env:T_LINE_SECRET_2",
            channel_access_token="env:T_LINE_TOKEN_2",
        ),
    ]
    async with line_gateway(channels=channels) as gw:
        one = sender(gw.url)
        two = sender(gw.url, destination=DEST_2, secret=SECRET_2)
        assert await two.post([two.text("pricing", user_id=ALICE)]) == 200
        assert await one.post([one.text("hello", user_id=ALICE)]) == 200
        await emulator.wait_for(2)
        by_bot = {d.destination: d.texts for d in emulator.deliveries}
        assert by_bot == {DEST_2: ["Pro costs 29 a month."], DEST: ["Hello Alice!"]}
        # The per-channel path takes only that channel's signature.
        path_status = await two.post(
            [two.text("hello", user_id=BOB)], path="/line/webhook/acme/line-th"
        )
        assert path_status == 200


async def test_unknown_channel_path_is_404(line_gateway, sender):
    """A per-channel webhook path naming no configured channel answers 404."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        assert await line.post([], path="/line/webhook/acme/nope") == 404
