"""The LINE webhook's acknowledged path: verify the request, name each event, store it as sent.

Guarantees:

- ``X-Line-Signature`` is checked on the raw bytes before anything reads them, with one HMAC
  per configured secret (:func:`signature_matches` gives the SDK's ``SignatureValidator``
  verdict: tests/connectors/line/test_edge.py holds the two together).
- Each event that can start a turn is appended as LINE sent it, named by its
  ``webhookEventId`` (the dedupe key) and partitioned by its chat. Nothing here builds the
  SDK's event models or an ``InboundMessage``: that is :mod:`connectors.line.parse`, in the
  worker, after the acknowledgement.
- Events that never start a turn (standby mode, unsend, beacons, unknown types, no chat) are
  counted here and not stored; an event that is not an object, has no type or no
  ``webhookEventId`` refuses the whole request (400), as the SDK's parser did.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from typing import Any

from connectors.line.config import LineChannelConfig
from gateway.envelope import encode_raw_event
from gateway.errors import PayloadError
from gateway.models import Channel, EncodedInbound, conversation_key_of

__all__ = ["SIGNATURE_HEADER", "admit_event", "chat_of", "signature_matches"]

SIGNATURE_HEADER = "x-line-signature"

# Event types that can become a turn; the rest of what LINE sends is counted and left.
TURN_TYPES = frozenset(
    {"message", "postback", "follow", "unfollow", "join", "memberJoined", "leave"}
)
# Known to the Messaging API but not a conversation turn.
OTHER_TYPES = frozenset(
    {
        "accountLink",
        "activated",
        "beacon",
        "botResumed",
        "botSuspended",
        "deactivated",
        "delivery",
        "memberLeft",
        "membership",
        "messageEdited",
        "module",
        "things",
        "unsend",
        "videoPlayComplete",
    }
)
_CHAT_ID_FIELD = {"user": "userId", "group": "groupId", "room": "roomId"}


def signature_matches(secret: bytes, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is base64(HMAC-SHA256(channel secret, body)), as LINE signs."""
    expected = base64.b64encode(hmac.digest(secret, body, "sha256"))
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def chat_of(source: object) -> tuple[str, str] | None:
    """``(source type, chat id)`` of an event's ``source``, or None when it names no chat."""
    if not isinstance(source, dict):
        return None
    source_type = source.get("type")
    field = _CHAT_ID_FIELD.get(source_type) if isinstance(source_type, str) else None
    chat_id = source.get(field) if field is not None else None
    if not isinstance(chat_id, str) or not chat_id:
        return None
    return str(source_type), chat_id


def admit_event(
    event: Any, *, tenant: str, channel: LineChannelConfig, count: Callable[[str], None]
) -> EncodedInbound | None:
    """The envelope of one webhook event, or None (counted) when it needs no turn."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise PayloadError("malformed LINE event: an event is an object with a type")
    event_type: str = event["type"]
    if event_type not in TURN_TYPES:
        count(f"ignored_{event_type}" if event_type in OTHER_TYPES else "unknown_event")
        return None
    if event.get("mode") == "standby":
        count("standby_skipped")  # another module channel owns the chat now
        return None
    event_id = event.get("webhookEventId")
    if not isinstance(event_id, str) or not event_id:
        # Every LINE event carries one; without it a redelivery could not be recognised.
        raise PayloadError("malformed LINE event: no webhookEventId")
    chat = chat_of(event.get("source"))
    if chat is None:
        count("no_source")
        return None
    delivery = event.get("deliveryContext")
    if isinstance(delivery, dict) and delivery.get("isRedelivery") is True:
        count("redelivery")
    _, chat_id = chat
    return encode_raw_event(
        event_id=event_id,
        tenant=tenant,
        channel=Channel.LINE,
        source=channel.name,
        conversation_key=conversation_key_of(
            tenant, Channel.LINE.value, f"{channel.name}:{chat_id}", None
        ),
        event=event,
    )
