"""LINE events → :class:`~gateway.models.InboundMessage`, in the worker.

The edge (:mod:`connectors.line.edge`) stored each event as LINE sent it; here the SDK's own
models read it. Guarantees: the message keeps the id, trace id, arrival time and dedupe id
the edge gave the event, and the conversation the edge partitioned it by; an event the SDK
cannot read raises :class:`~gateway.errors.EventParseError` (the worker dead-letters it whole,
for replay).
"""

from __future__ import annotations

from typing import Any

from linebot.v3.webhooks import (
    AudioMessageContent,
    Event,
    FileMessageContent,
    FollowEvent,
    GroupSource,
    ImageMessageContent,
    JoinEvent,
    LeaveEvent,
    LocationMessageContent,
    MemberJoinedEvent,
    MessageEvent,
    PostbackEvent,
    RoomSource,
    StickerMessageContent,
    TextMessageContent,
    UnfollowEvent,
    UserSource,
    VideoMessageContent,
)

from connectors.line.config import LineChannelConfig
from gateway.envelope import RawEvent
from gateway.errors import EventParseError
from gateway.models import (
    Attachment,
    Channel,
    ConversationKey,
    EventKind,
    InboundMessage,
    LineReplyContext,
    Location,
    Participant,
)

__all__ = ["line_message"]

_SOURCE_KIND = {"image": "image", "video": "video", "audio": "audio", "file": "file"}


def line_message(event: RawEvent, *, channel: LineChannelConfig) -> InboundMessage | None:
    """The message of one stored LINE event, or None when it is not a conversation turn."""
    raw = event.event
    if not isinstance(raw, dict):
        raise EventParseError("a LINE event is an object", reason="malformed_event")
    event_type = str(raw.get("type", ""))[:40]
    try:
        parsed = Event.from_dict(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # pydantic's ValidationError is a ValueError: a required field is missing or wrong.
        raise EventParseError(
            f"the SDK cannot read this {event_type} event ({type(exc).__name__})",
            reason="malformed_event",
        ) from exc
    source = parsed.source
    if isinstance(source, UserSource):
        source_type, source_id, user_id = "user", source.user_id, source.user_id
    elif isinstance(source, GroupSource):
        source_type, source_id, user_id = "group", source.group_id, source.user_id
    elif isinstance(source, RoomSource):
        source_type, source_id, user_id = "room", source.room_id, source.user_id
    else:
        raise EventParseError(f"this {event_type} event names no chat", reason="no_source")
    if not source_id:  # the SDK takes a null or empty chat id; a message needs one
        raise EventParseError(f"this {event_type} event names no chat", reason="no_source")
    kind = EventKind.MESSAGE
    text = ""
    attachments: tuple[Attachment, ...] = ()
    sender_id = user_id or source_id
    if isinstance(parsed, MessageEvent):
        text, attachments = _message_content(parsed.message)
    elif isinstance(parsed, PostbackEvent):
        kind, text = EventKind.ACTION, parsed.postback.data
    elif isinstance(parsed, FollowEvent):
        kind = EventKind.FOLLOW
    elif isinstance(parsed, UnfollowEvent):
        kind = EventKind.UNFOLLOW
    elif isinstance(parsed, JoinEvent):
        kind = EventKind.JOIN
    elif isinstance(parsed, MemberJoinedEvent):
        kind = EventKind.JOIN
        joined = [m.user_id for m in parsed.joined.members if m.user_id]
        sender_id = joined[0] if joined else sender_id
    elif isinstance(parsed, LeaveEvent):
        kind = EventKind.LEAVE
    else:
        return None  # the edge stores only turn types; a replayed letter may hold another
    return InboundMessage(
        id=event.id,
        trace_id=event.trace_id,
        received_at=event.received_at,
        event_id=event.event_id,
        conversation=ConversationKey(
            tenant=event.tenant,
            channel=Channel.LINE,
            conversation_id=f"{channel.name}:{source_id}",
        ),
        sender=Participant(id=sender_id),
        kind=kind,
        text=text,
        attachments=attachments,
        reply_context=LineReplyContext(
            destination=channel.destination,
            reply_token=getattr(parsed, "reply_token", None),
            source_type=source_type,
            source_id=source_id,
            user_id=user_id,
            is_redelivery=bool(parsed.delivery_context.is_redelivery),
        ),
        raw=raw,
    )


def _message_content(content: Any) -> tuple[str, tuple[Attachment, ...]]:
    """Text, and attachments with a readable text form, for one message object."""
    if isinstance(content, TextMessageContent):
        return content.text, ()
    message_id = str(getattr(content, "id", ""))
    if isinstance(content, StickerMessageContent):
        keywords = list(content.keywords or [])
        attachment = Attachment(
            kind="sticker",
            extra={
                "message_id": message_id,
                "package_id": content.package_id,
                "sticker_id": content.sticker_id,
                "keywords": keywords,
            },
        )
        label = f"[sticker: {', '.join(keywords[:3])}]" if keywords else "[sticker]"
        return (content.text or label), (attachment,)
    if isinstance(content, LocationMessageContent):
        place = Location(
            latitude=content.latitude,
            longitude=content.longitude,
            title=(content.title or None) and content.title[:100],
            address=(content.address or None) and content.address[:200],
        )
        attachment = Attachment(
            kind="location",
            name=content.title,
            location=place,
            extra={"message_id": message_id},
        )
        return f"[location: {place.as_text()}]", (attachment,)
    if isinstance(content, FileMessageContent):
        attachment = Attachment(
            kind="file",
            name=content.file_name,
            size=content.file_size,
            extra={"message_id": message_id},
        )
        return f"[file: {content.file_name}]", (attachment,)
    if isinstance(content, ImageMessageContent | VideoMessageContent | AudioMessageContent):
        kind = _SOURCE_KIND[content.type]
        provider = content.content_provider
        extra: dict[str, Any] = {"message_id": message_id, "provider": provider.type}
        duration = getattr(content, "duration", None)
        if isinstance(duration, int) and duration > 0:
            extra["duration_ms"] = duration
        attachment = Attachment(
            kind=kind,
            # Only for external providers: where the sender's side keeps it. Never fetched
            # (a stranger chooses it); LINE's own content is fetched by message id.
            url=provider.original_content_url,
            extra=extra,
        )
        return f"[{kind}]", (attachment,)
    kind_name = str(getattr(content, "type", "message"))[:20]
    return f"[{kind_name}]", (Attachment(kind="other", extra={"message_id": message_id}),)
