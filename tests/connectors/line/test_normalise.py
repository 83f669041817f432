"""LINE events → InboundMessage, through the connector's real edge and parse (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.base import ConnectorContext, InboundRequest
from connectors.line import LineConnector
from connectors.line.emulator import LineWebhookSender, sign_body
from gateway.config import parse_config
from gateway.envelope import RawEvent
from gateway.metrics import Metrics
from gateway.models import EventKind, InboundMessage
from gateway.store import Keyspace
from tests.connectors.line.conftest import ALICE, DEST, GROUP, SECRET, line_config


@pytest.fixture
def connector(personas_dir) -> LineConnector:
    block = {
        "kind": "line",
        "destination": DEST,
        "channel_secret": "env:T_LINE_SECRET",
        "channel_access_token": "env:T_LINE_TOKEN",
        "fetch_profiles": False,
    }
    config = parse_config(line_config("memory://", personas_dir, [block]))
    context = ConnectorContext(config=config, keyspace=Keyspace(), metrics=Metrics())
    return LineConnector(context=context, channels=config.channels_of_kind("line"))


@pytest.fixture
def line() -> LineWebhookSender:
    # Only its event builders are used here: nothing is posted.
    return LineWebhookSender(
        session=None,  # type: ignore[arg-type]  # never used to post in these tests
        gateway_url="http://unused",
        destination=DEST,
        channel_secret=SECRET,
    )


async def _receive(connector: LineConnector, line: LineWebhookSender, events: list) -> list[Any]:
    body = line.body(events)
    request = InboundRequest(
        method="POST",
        path="/line/webhook",
        url="http://gw/line/webhook",
        headers={"x-line-signature": sign_body(SECRET, body)},
        query={},
        body=body,
    )
    result = await connector.receive(request)
    # The edge stores the events as LINE sent them; the worker's parse makes the messages.
    assert result.messages == ()
    parsed = [
        await connector.parse(RawEvent.model_validate_json(encoded.payload))
        for encoded in result.encoded
    ]
    return [message for message in parsed if message is not None]


def _count(connector: LineConnector, event: str) -> float:
    value = connector.context.metrics.registry.get_sample_value(
        "flowbiz_channel_events_total", {"channel": "line", "event": event}
    )
    return value or 0.0


async def test_media_messages_become_attachments_with_a_readable_text(connector, line):
    """Image, video, audio, file, sticker and location each get an attachment and a text form."""
    contents = [
        {"type": "image", "quoteToken": "q1", "contentProvider": {"type": "line"}},
        {
            "type": "video",
            "quoteToken": "q2",
            "duration": 3000,
            "contentProvider": {
                "type": "external",
                "originalContentUrl": "https://example.com/v.mp4",
                "previewImageUrl": "https://example.com/v.jpg",
            },
        },
        {"type": "audio", "duration": 1200, "contentProvider": {"type": "line"}},
        {"type": "file", "fileName": "invoice.pdf", "fileSize": 2048},
        {
            "type": "sticker",
            "quoteToken": "q3",
            "packageId": "446",
            "stickerId": "1988",
            "stickerResourceType": "STATIC",
            "keywords": ["happy", "smile"],
        },
        {
            "type": "location",
            "title": "Tokyo Tower",
            "address": "4-2-8 Shibakoen, Minato-ku",
            "latitude": 35.65861,
            "longitude": 139.74556,
        },
    ]
    messages = await _receive(connector, line, [line.media(c, user_id=ALICE) for c in contents])
    assert [m.text for m in messages] == [
        "[image]",
        "[video]",
        "[audio]",
        "[file: invoice.pdf]",
        "[sticker: happy, smile]",
        "[location: Tokyo Tower, 4-2-8 Shibakoen, Minato-ku (35.658610,139.745560)]",
    ]
    kinds = [m.attachments[0].kind for m in messages]
    assert kinds == ["image", "video", "audio", "file", "sticker", "location"]
    assert messages[1].attachments[0].url == "https://example.com/v.mp4"
    assert messages[3].attachments[0].size == 2048
    place = messages[5].attachments[0].location
    assert place is not None
    assert (place.latitude, place.title) == (35.65861, "Tokyo Tower")
    assert messages[2].attachments[0].extra["duration_ms"] == 1200
    assert all(m.attachments[0].extra["message_id"] for m in messages)


async def test_event_fields_map_to_the_normalised_message(connector, line):
    """webhookEventId is the event id; source and reply token land in the reply context."""
    event = line.text("hi", user_id=ALICE, group_id=GROUP)
    [message] = await _receive(connector, line, [line.redelivery(event)])
    assert isinstance(message, InboundMessage)
    assert message.event_id == event["webhookEventId"]
    assert message.conversation.conversation_id == f"line:{GROUP}"
    assert message.sender.id == ALICE
    context = message.reply_context
    assert context.kind == "line"
    assert (context.source_type, context.source_id, context.user_id) == ("group", GROUP, ALICE)
    assert context.reply_token == event["replyToken"]
    assert context.destination == DEST
    assert context.is_redelivery is True
    assert message.raw["message"]["text"] == "hi"


async def test_event_kinds(connector, line):
    """follow/unfollow/postback/join/leave/memberJoined map to their EventKind."""
    events = [
        line.follow(user_id=ALICE),
        line.unfollow(user_id=ALICE),
        line.postback("action=buy&item=1", user_id=ALICE),
        line.join(group_id=GROUP),
        line.leave(group_id=GROUP),
        line.member_joined(group_id=GROUP, user_ids=["U" + "9" * 32]),
    ]
    messages = await _receive(connector, line, events)
    assert [m.kind for m in messages] == [
        EventKind.FOLLOW,
        EventKind.UNFOLLOW,
        EventKind.ACTION,
        EventKind.JOIN,
        EventKind.LEAVE,
        EventKind.JOIN,
    ]
    assert messages[2].text == "action=buy&item=1"
    assert messages[5].sender.id == "U" + "9" * 32
    assert messages[1].reply_context.reply_token is None


async def test_standby_and_non_conversation_events_are_counted_and_skipped(connector, line):
    """Standby-mode events and known non-turn events (memberLeft) are counted, not answered."""
    standby = line.text("hi", user_id=ALICE) | {"mode": "standby"}
    left = line.event(
        "memberLeft",
        line.source(None, group_id=GROUP),
        reply=False,
        left={"members": [{"type": "user", "userId": ALICE}]},
    )
    assert await _receive(connector, line, [standby, left]) == []
    assert _count(connector, "standby_skipped") == 1
    assert _count(connector, "ignored_memberLeft") == 1
