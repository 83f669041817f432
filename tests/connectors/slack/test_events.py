"""The Events API path through the real gateway: DMs, mentions, threads, retries, loops."""

from __future__ import annotations

import asyncio
import json

from connectors.slack.emulator import (
    ACME_FILE,
    app_mention_event,
    event_callback,
    message_event,
)
from tests.connectors.slack.conftest import (
    ACME,
    NOW,
    FixedClock,
    inbox_entries,
    make_connector,
    parsed,
    sender_for,
    signed_request,
)


async def test_url_verification_answers_the_challenge(slack_gateway, session) -> None:
    """A signed url_verification gets its challenge back as JSON, and nothing is stored."""
    async with slack_gateway() as gw:
        status, body = await sender_for(session, gw).url_verification("3eZbrw1aBm2rZgRNFdxV2595")
        assert status == 200
        assert json.loads(body) == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595"}
        assert await inbox_entries(gw) == 0


async def test_ssl_check_is_answered(slack_gateway, session) -> None:
    """Slack's ssl_check probe on the command URL gets an empty 200."""
    async with slack_gateway() as gw:
        status, body = await sender_for(session, gw).post(
            "/slack/commands",
            b"ssl_check=1&token=legacy-verification-token",
            content_type="application/x-www-form-urlencoded",
            sign=False,
        )
        assert (status, body) == (200, "")


async def test_dm_is_answered_with_persona_and_buttons(slack_gateway, emulator, session) -> None:
    """A DM gets a reply in the DM, as the persona (name, icon, signature), buttons as blocks."""
    async with slack_gateway() as gw:
        status, body = await sender_for(session, gw).event(
            event_callback(message_event(text="hello there", channel="D0ALICE"))
        )
        assert (status, body) == (200, "")
        [post] = await emulator.wait_for_posts(1)
    assert post.via == "chat.postMessage"
    assert post.channel == "D0ALICE"
    assert post.thread_ts is None  # DMs stay flat
    assert post.username == "Acme Helper"
    assert post.icon_url == "https://cdn.example.com/acme-helper.png"
    assert post.shown_text == "Hello U0CUSTOMER!"
    assert post.buttons == [("Opening hours", "opening hours"), ("Pricing", "pricing")]
    context = [b for b in post.blocks if b["type"] == "context"]
    assert context[0]["elements"][0]["text"] == "— Acme Helper"


async def test_mention_in_channel_is_answered_in_its_thread(slack_gateway, emulator, session):
    """An app_mention is answered in a thread under it, with the mention stripped for routing."""
    async with slack_gateway() as gw:
        event = app_mention_event(text="what is your pricing?", channel="C0SALES")
        await sender_for(session, gw).event(event_callback(event))
        [post] = await emulator.wait_for_posts(1)
    assert (post.channel, post.thread_ts) == ("C0SALES", event["ts"])
    assert post.shown_text == "Pro costs 29 a month."


async def test_thread_follow_up_without_mention_is_answered(slack_gateway, emulator, session):
    """Once the bot answered in a thread, replies there need no mention; other chatter is left."""
    async with slack_gateway() as gw:
        sender = sender_for(session, gw)
        mention = app_mention_event(text="hello", channel="C0SALES")
        await sender.event(event_callback(mention))
        await emulator.wait_for_posts(1)
        # Top-level chatter in the channel, not addressed to the bot: ignored.
        await sender.event(
            event_callback(
                message_event(text="pricing?", channel="C0SALES", channel_type="channel")
            )
        )
        follow_up = message_event(
            text="and the pricing?",
            channel="C0SALES",
            channel_type="channel",
            thread_ts=mention["ts"],
        )
        await sender.event(event_callback(follow_up))
        posts = await emulator.wait_for_posts(2)
        await asyncio.sleep(0.2)
    assert len(emulator.posted) == 2
    assert posts[1].thread_ts == mention["ts"]
    assert posts[1].shown_text == "Pro costs 29 a month."


async def test_slack_retries_produce_exactly_one_reply(slack_gateway, emulator, session) -> None:
    """The same event re-sent with X-Slack-Retry-Num 1..3 is acked 200 and answered once."""
    async with slack_gateway() as gw:
        sender = sender_for(session, gw)
        envelope = event_callback(message_event(text="hello"))
        assert (await sender.event(envelope))[0] == 200
        for attempt in (1, 2, 3):
            assert (await sender.event(envelope, retry_num=attempt))[0] == 200
        await emulator.wait_for_posts(1)
        await asyncio.sleep(0.3)
        assert await inbox_entries(gw) == 1
    assert len(emulator.posted) == 1


async def test_mention_and_message_events_for_one_post_reply_once(
    slack_gateway, emulator, session
) -> None:
    """Slack's app_mention and message events for the same ts (two event_ids) → one reply."""
    async with slack_gateway() as gw:
        sender = sender_for(session, gw)
        mention = app_mention_event(text="hello", channel="C0SALES")
        twin = message_event(
            text=mention["text"], channel="C0SALES", channel_type="channel", ts=mention["ts"]
        )
        assert (await sender.event(event_callback(twin)))[0] == 200
        assert (await sender.event(event_callback(mention)))[0] == 200
        await emulator.wait_for_posts(1)
        await asyncio.sleep(0.3)
    assert len(emulator.posted) == 1


async def test_bots_edits_and_deletions_are_not_answered(slack_gateway, emulator, session):
    """Own posts, other bots, message_changed/deleted and join notices get no reply."""
    async with slack_gateway() as gw:
        sender = sender_for(session, gw)
        ignored = [
            # The bot's own reply as Slack echoes it back (bot_id, no bot_message subtype).
            message_event(text="Hello!", user=ACME.bot_user_id, bot_id=ACME.bot_id),
            # Another app's bot.
            message_event(
                text="build passed",
                subtype="bot_message",
                bot_id="B0CI",
                username="ci",
                user=None,
            ),
            message_event(text="deploy done", bot_id="B0OTHER", user="U0OTHERBOT"),
            {
                "type": "message",
                "subtype": "message_changed",
                "channel": "D0DIRECT",
                "channel_type": "im",
                "hidden": True,
                "ts": "1700000001.000200",
                "message": {
                    "type": "message",
                    "user": "U0CUSTOMER",
                    "text": "hello (edited)",
                    "ts": "1700000000.000100",
                    "edited": {"user": "U0CUSTOMER", "ts": "1700000001.000000"},
                },
                "previous_message": {"type": "message", "user": "U0CUSTOMER", "text": "hello"},
                "event_ts": "1700000001.000200",
            },
            {
                "type": "message",
                "subtype": "message_deleted",
                "channel": "D0DIRECT",
                "channel_type": "im",
                "hidden": True,
                "ts": "1700000002.000300",
                "deleted_ts": "1700000000.000100",
                "previous_message": {"type": "message", "user": "U0CUSTOMER", "text": "hello"},
                "event_ts": "1700000002.000300",
            },
            message_event(text="<@U0CUSTOMER> has joined the channel", subtype="channel_join"),
        ]
        for event in ignored:
            assert (await sender.event(event_callback(event)))[0] == 200
        await sender.event(event_callback(message_event(text="what is your pricing")))
        await emulator.wait_for_posts(1)
        await asyncio.sleep(0.3)
        assert await inbox_entries(gw) == 1
    assert [p.shown_text for p in emulator.posted] == ["Pro costs 29 a month."]


async def test_edits_are_answered_when_configured(slack_gateway, emulator, session) -> None:
    """With handle_edits, a person's edit is a new message (keyed on the edit's ts)."""
    async with slack_gateway(handle_edits=True) as gw:
        edit = {
            "type": "message",
            "subtype": "message_changed",
            "channel": "D0DIRECT",
            "channel_type": "im",
            "hidden": True,
            "ts": "1700000001.000200",
            "message": {
                "type": "message",
                "user": "U0CUSTOMER",
                "text": "pricing please",
                "ts": "1700000000.000100",
                "edited": {"user": "U0CUSTOMER", "ts": "1700000001.000000"},
            },
            "event_ts": "1700000001.000200",
        }
        await sender_for(session, gw).event(event_callback(edit))
        [post] = await emulator.wait_for_posts(1)
    assert post.shown_text == "Pro costs 29 a month."


async def test_files_arrive_as_attachment_metadata(personas_dir) -> None:
    """Shared files become attachments with name, MIME type, size and private URL."""
    connector = make_connector(personas_dir, clock=FixedClock(NOW))
    event = message_event(
        text="here is the invoice", subtype="file_share", files=[ACME_FILE], ts="1700000000.1"
    )
    body = json.dumps(event_callback(event)).encode()
    result = await connector.events(signed_request("/slack/events", body, timestamp=NOW))
    [message] = await parsed(connector, result)
    [attachment] = message.attachments
    assert attachment.kind == "image"
    assert attachment.name == "invoice.png"
    assert attachment.mime_type == "image/png"
    assert attachment.size == 52_344
    assert attachment.url == ACME_FILE["url_private"]
    assert attachment.extra["filetype"] == "png"
    assert message.event_id == "msg:T0FLOWBIZ:D0DIRECT:1700000000.1"


async def test_hostile_bodies_are_refused_without_crashing(slack_gateway, session) -> None:
    """Signed but malformed bodies get 400 (not 500), and nothing is stored."""
    async with slack_gateway() as gw:
        sender = sender_for(session, gw)
        bodies = [
            (b"not json", "application/json", "/slack/events"),
            (b"[1, 2]", "application/json", "/slack/events"),
            (
                json.dumps({"type": "event_callback", "team_id": "T0FLOWBIZ", "event": 5}).encode(),
                "application/json",
                "/slack/events",
            ),
            (b"payload=%7Bnope", "application/x-www-form-urlencoded", "/slack/interactivity"),
            (b"team_id=T0FLOWBIZ", "application/x-www-form-urlencoded", "/slack/commands"),
        ]
        for body, content_type, path in bodies:
            status, _ = await sender.post(path, body, content_type=content_type)
            assert status == 400, body
        assert await inbox_entries(gw) == 0
