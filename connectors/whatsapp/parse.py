"""The worker's half of an inbound WhatsApp message: a stored Twilio form becomes a message.

The edge (:mod:`connectors.whatsapp.edge`) stored the verified form as a JSON object of
each field's first value. Here:

- ``Body`` is the text; a quick-reply or card button tap (``ButtonPayload``) and a list
  picker's pick (``ListId``) are an ``action`` whose text is the payload or the item id —
  the value the reply offered;
- ``NumMedia`` / ``MediaUrlN`` / ``MediaContentTypeN`` become ordered attachments (image,
  video, audio, ``sticker`` for ``image/webp``, else file) whose ``url`` the connector
  fetches only on its configured Twilio API (:mod:`connectors.whatsapp.inbound_media`);
  a shared location (``Latitude``, ``Longitude``, ``Address``, ``Label``) a ``location``
  attachment carrying a :class:`~gateway.parts.Location`;
- ``ProfileName`` is the sender's display name; ``From``, ``To``, ``MessagingServiceSid``,
  ``WaId`` and ``ProfileName`` make the :class:`~gateway.models.WhatsAppReplyContext`
  replies go out with.

Guarantees: the message's id, trace id, receipt time and event id (``MessageSid``) are the
envelope's, so a redelivered entry parses to the same message, and the window the replies
see opens at the time the edge received it. Its conversation is the customer's address in
the tenant, the key the edge partitioned by. A form that cannot be a message (a
``NumMedia`` that is not a count of present media, a channel no longer configured) raises
:class:`~gateway.errors.EventParseError` with a short reason: the worker dead-letters the
event whole, replayable.
"""

from __future__ import annotations

from typing import Any, Literal

from connectors.whatsapp.channels import ChannelTable
from connectors.whatsapp.config import ADDRESS
from gateway.envelope import RawEvent
from gateway.errors import EventParseError
from gateway.metrics import Metrics
from gateway.models import (
    Attachment,
    Channel,
    ConversationKey,
    EventKind,
    InboundMessage,
    Participant,
    WhatsAppReplyContext,
)
from gateway.parts import Location

__all__ = ["MAX_MEDIA", "parse_message"]

MAX_MEDIA = 10  # Twilio forwards at most ten media items per WhatsApp message


def parse_message(event: RawEvent, table: ChannelTable, metrics: Metrics) -> InboundMessage:
    """The message in a stored inbound-message form; EventParseError if it holds none."""
    channel = table.named(event.tenant, event.source)
    if channel is None:
        raise EventParseError(
            f"no WhatsApp channel {event.source!r} in tenant {event.tenant!r}",
            reason="no_channel",
        )
    form = _form(event.event)
    customer, ours = form.get("From", ""), form.get("To", "")
    if ADDRESS.fullmatch(customer) is None or ADDRESS.fullmatch(ours) is None:
        raise EventParseError(
            "From and To must be whatsapp:+<number> addresses", reason="bad_address"
        )
    attachments = _attachments(form)
    events = metrics.channel_events
    payload = form.get("ButtonPayload")
    picked = form.get("ListId")
    if payload:
        kind, text = EventKind.ACTION, payload
        events.labels("whatsapp", "button_reply").inc()
    elif picked:
        kind, text = EventKind.ACTION, picked
        events.labels("whatsapp", "list_reply").inc()
    else:
        kind, text = EventKind.MESSAGE, form.get("Body", "")
    if attachments:
        events.labels("whatsapp", "media_received").inc()
    profile = form.get("ProfileName") or None
    return InboundMessage(
        id=event.id,
        trace_id=event.trace_id,
        received_at=event.received_at,
        event_id=event.event_id,
        conversation=ConversationKey(
            tenant=channel.tenant, channel=Channel.WHATSAPP, conversation_id=customer
        ),
        sender=Participant(id=customer, display_name=profile),
        kind=kind,
        text=text,
        attachments=attachments,
        reply_context=WhatsAppReplyContext(
            from_address=customer,
            to_address=ours,
            messaging_service_sid=form.get("MessagingServiceSid") or None,
            wa_id=form.get("WaId") or None,
            profile_name=profile,
        ),
        raw=form,
    )


def _form(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise EventParseError("the stored event is not a Twilio form", reason="not_a_form")
    return value


def _attachments(form: dict[str, str]) -> tuple[Attachment, ...]:
    try:
        count = int(form.get("NumMedia", "0") or "0")
    except ValueError as exc:
        raise EventParseError("NumMedia is not a number", reason="bad_media") from exc
    if not 0 <= count <= MAX_MEDIA:
        raise EventParseError(f"NumMedia is not between 0 and {MAX_MEDIA}", reason="bad_media")
    found: list[Attachment] = []
    for n in range(count):
        url = form.get(f"MediaUrl{n}")
        if not url:
            raise EventParseError(f"MediaUrl{n} is missing", reason="bad_media")
        mime = form.get(f"MediaContentType{n}", "application/octet-stream")
        found.append(Attachment(kind=_attachment_kind(mime), mime_type=mime, url=url))
    latitude, longitude = form.get("Latitude"), form.get("Longitude")
    if latitude and longitude:
        found.append(_place(latitude, longitude, form))
    return tuple(found)


def _place(latitude: str, longitude: str, form: dict[str, str]) -> Attachment:
    label, address = form.get("Label") or None, form.get("Address") or None
    try:
        place = Location(
            latitude=float(latitude),
            longitude=float(longitude),
            title=label[:100] if label else None,
            address=address[:200] if address else None,
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise EventParseError(
            "Latitude/Longitude are not a place on the map", reason="bad_location"
        ) from exc
    return Attachment(kind="location", name=place.title, location=place)


def _attachment_kind(
    mime: str,
) -> Literal["image", "video", "audio", "file", "sticker", "location", "other"]:
    major = mime.split("/", 1)[0].lower()
    if mime.lower() == "image/webp":
        return "sticker"  # WhatsApp stickers arrive as webp images
    if major in ("image", "video", "audio"):
        return major  # type: ignore[return-value]  # narrowed by the membership test above
    return "file"
