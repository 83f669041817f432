"""The inbox entry of a verified platform event, kept as the platform sent it.

A connector's edge (the acknowledged path) verifies the platform's signature, reads only what
admission needs — the event id to dedupe on, the tenant and channel block, the conversation
to partition by — and appends the event's own JSON inside this envelope. The worker turns it
into an :class:`~gateway.models.InboundMessage` with the connector's ``parse`` (where the
platform SDK's models are welcome), and moves an event it cannot parse to the dead-letter list
with the reason and the envelope, so an operator can replay it once the parser is fixed.

Guarantees:

- An envelope is told from a parsed message by its first bytes (:func:`is_raw_event`): an
  ``InboundMessage``'s JSON starts with its ``id`` field, an envelope with ``{"raw":1,``.
- ``id``, ``trace_id`` and ``received_at`` are fixed at the edge, so parsing the same entry
  twice (a redelivery after a crash) gives the same message, and the logs of the edge and the
  worker share one trace id.
- ``conversation`` is the conversation key at the top level, as in every other entry the
  GDPR erase scans for (gateway/conversations.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_json

from gateway.models import Channel, EncodedInbound, new_id, trace_id_of, utcnow

__all__ = ["RAW_PREFIX", "RawEvent", "encode_raw_event", "is_raw_event"]

RAW_PREFIX = b'{"raw":1,'


class RawEvent(BaseModel):
    """What the worker reads back from an envelope."""

    model_config = ConfigDict(frozen=True)

    raw: Literal[1]
    id: str
    trace_id: str
    event_id: str
    tenant: str
    channel: Channel
    source: str  # the channel block's name (ChannelConfig.name) within the tenant
    conversation: str  # ConversationKey.key, for partitioning and erasure
    received_at: datetime
    context: dict[str, Any]  # what the edge saw outside the event (headers, the destination)
    event: Any  # the platform's event, as it sent it


def is_raw_event(payload: bytes) -> bool:
    return payload.startswith(RAW_PREFIX)


def encode_raw_event(
    *,
    event_id: str,
    tenant: str,
    channel: Channel,
    source: str,
    conversation_key: str,
    event: Any = None,
    event_json: bytes | None = None,
    context: dict[str, Any] | None = None,
) -> EncodedInbound:
    """The envelope of one event, ready for :meth:`gateway.ingest.Ingestor.submit`.

    Give the event as a JSON-compatible value, or as ``event_json``: JSON text the edge has
    already checked is well formed (a Slack body it parsed), spliced in without re-encoding.
    """
    message_id = new_id()
    trace_id = trace_id_of(message_id)
    head = to_json(
        {
            "raw": 1,
            "id": message_id,
            "trace_id": trace_id,
            "event_id": event_id,
            "tenant": tenant,
            "channel": channel.value,
            "source": source,
            "conversation": conversation_key,
            "received_at": utcnow(),
            "context": context if context is not None else {},
        }
    )
    body = event_json if event_json is not None else to_json(event)
    return EncodedInbound(
        id=message_id,
        event_id=event_id,
        tenant=tenant,
        channel=channel,
        conversation_key=conversation_key,
        trace_id=trace_id,
        payload=head[:-1] + b',"event":' + body + b"}",
    )
