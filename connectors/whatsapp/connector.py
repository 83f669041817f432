"""WhatsApp through Twilio: signed form webhooks in, the Messages API out, status callbacks.

Inbound, ``POST /whatsapp/webhook`` (:mod:`connectors.whatsapp.edge`): the form's ``To``
(or ``MessagingServiceSid``) picks the channel, ``X-Twilio-Signature`` is checked against
the URL Twilio called (see :mod:`connectors.whatsapp.signature`), the verified form is made
durable (deduped on ``MessageSid``) and Twilio gets an empty TwiML ``<Response />`` at once.
The worker turns it into a message (:mod:`connectors.whatsapp.parse`).

Outbound goes through the twilio SDK's async client. Inside the 24-hour customer-service
window (since the conversation's last inbound message) replies are free-form: text split at
1,600 characters, quick replies, option lists and cards as Twilio Content resources created
once per tenant (:mod:`connectors.whatsapp.render`, :mod:`connectors.whatsapp.content`),
attachments one per message as ``MediaUrl`` (a signed link to the kept file). When a part
does not fit, or the Content API refuses a definition, the whole reply is its numbered
plain text. Outside the window the persona's approved template (ContentSid) is sent, or the
message is dead-lettered with reason "window closed". Each create that Twilio accepted is
recorded before the next, so a retry never sends a part twice.

Inbound files are fetched in the worker with the channel's credentials, only from its
configured Twilio API (:mod:`connectors.whatsapp.inbound_media`); the typing indicator is
Twilio's WhatsApp one, on the customer's message.

Status callbacks, ``POST /whatsapp/status`` (signed the same way,
:mod:`connectors.whatsapp.status`), become :class:`~gateway.models.DeliveryReceipt` entries
on the conversation; ``failed`` and ``undelivered`` also land in the dead-letter list with
Twilio's ErrorCode.
"""

from __future__ import annotations

import contextlib
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar
from urllib.parse import urlencode

from twilio.rest import Client

from connectors.base import (
    FORM,
    ChannelCapabilities,
    ConnectorContext,
    Pacing,
    Route,
)
from connectors.send_policy import DeliveryFailure, record_until_stored
from connectors.whatsapp.channels import ChannelTable
from connectors.whatsapp.channels import WhatsAppChannel as _Channel
from connectors.whatsapp.config import WhatsAppChannelConfig, WhatsAppTemplate
from connectors.whatsapp.content import ContentLibrary, ContentRefused
from connectors.whatsapp.edge import WebhookEdge
from connectors.whatsapp.inbound_media import media_fetch_for
from connectors.whatsapp.parse import parse_message
from connectors.whatsapp.render import BODY_LIMIT, ContentSpec, Part, split_body
from connectors.whatsapp.render import native_plan as _native_plan
from connectors.whatsapp.render import plain_plan as _plain_plan
from connectors.whatsapp.status import RECEIPT_STATUS as _RECEIPT_STATUS
from connectors.whatsapp.status import WINDOW_CLOSED_CODE as _WINDOW_CLOSED_CODE
from connectors.whatsapp.status import StatusCallbacks
from connectors.whatsapp.twilio_http import TwilioHttpClient, twilio_call
from gateway.config import ChannelConfig, TenantConfig
from gateway.envelope import RawEvent
from gateway.errors import (
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.media import MediaUnavailable
from gateway.media.keeper import MediaFetch
from gateway.models import (
    Attachment,
    Channel,
    ConversationKey,
    DeliveryReceipt,
    InboundMessage,
    OutboundMessage,
    WhatsAppReplyContext,
    utcnow,
)
from gateway.observability import get_logger
from gateway.state import ConversationState

__all__ = [
    "BODY_LIMIT",
    "WhatsAppChannelConfig",
    "WhatsAppConnector",
    "WhatsAppTemplate",
    "render",
    "split_body",
]

log = get_logger(__name__)

WEBHOOK_PATH = "/whatsapp/webhook"
STATUS_PATH = "/whatsapp/status"

# Twilio error codes whose meaning the HTTP status does not tell (it says 4xx for some).
_FAILURE_BY_TWILIO_CODE = {
    "20429": DeliveryFailure.RATE_LIMITED,
    "30001": DeliveryFailure.RATE_LIMITED,  # queue overflow: sent faster than it drains
    "63018": DeliveryFailure.RATE_LIMITED,  # the channel's rate limit
    "20500": DeliveryFailure.PLATFORM_UNAVAILABLE,
    "20503": DeliveryFailure.PLATFORM_UNAVAILABLE,
    str(_WINDOW_CLOSED_CODE): DeliveryFailure.WINDOW_CLOSED,  # outside 24 h, no template
}


@dataclass(frozen=True, slots=True)
class _Create:
    """One Messages API create, its content resolved to a SID."""

    body: str | None = None
    media_url: str | None = None
    content_sid: str | None = None
    content_variables: str | None = None
    persistent_action: str | None = None
    media: int = 0  # files Twilio fetches for it (a MediaUrl, a card's image)


class WhatsAppConnector:
    channel: ClassVar[Channel] = Channel.WHATSAPP
    capabilities: ClassVar[ChannelCapabilities] = ChannelCapabilities(
        buttons=True,  # inside the window, as Content (quick replies, list pickers, cards)
        threads=False,
        max_text_length=BODY_LIMIT,
        markdown=True,  # WhatsApp renders *bold*, _italic_, ~strike~
        attachments=True,
        cards=True,
        quick_replies=True,
        options=True,
        media_out=("image", "video", "audio", "file", "location"),
    )
    config_model: ClassVar[type[ChannelConfig]] = WhatsAppChannelConfig

    def __init__(
        self,
        *,
        context: ConnectorContext,
        channels: Sequence[tuple[TenantConfig, ChannelConfig]],
    ) -> None:
        self.context = context
        table = ChannelTable(channels, public_base_url=context.config.http.public_base_url)
        self._table = table
        self._channels: list[_Channel] = table.channels
        self._edge = WebhookEdge(table)
        self._status = StatusCallbacks(context, table, self._edge)
        self._http: TwilioHttpClient | None = None
        self._contents = ContentLibrary(context)
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------------
    def routes(self) -> Sequence[Route]:
        return [
            Route("POST", WEBHOOK_PATH, self._edge.receive, "whatsapp.webhook", content_types=FORM),
            Route("POST", STATUS_PATH, self._status.receive, "whatsapp.status", content_types=FORM),
        ]

    async def start(self) -> None:
        self._ensure_clients()

    async def stop(self) -> None:
        self._stopped = True
        if self._http is not None:
            await self._http.close()
            self._http = None
            for channel in self._channels:
                channel.client = None

    def _ensure_clients(self) -> None:
        """Build the SDK clients; must run inside the event loop (aiohttp session)."""
        if self._http is not None:
            return
        if self._stopped:
            # A send racing shutdown must not open a session nobody will close; the entry
            # stays pending and is delivered after the restart or by another process.
            raise TransientDeliveryError(
                "the WhatsApp connector is shutting down", code=DeliveryFailure.STOPPING
            )
        self._http = TwilioHttpClient()
        for channel in self._channels:
            config = channel.config
            client = Client(
                config.account_sid,
                config.auth_token.get_secret_value(),
                http_client=self._http,
                environment={},  # never pick up TWILIO_* variables meant for something else
            )
            if config.api_base_url:
                # Domain.absolute_url joins base_url and /2010-04-01/…, /v1/Content,
                # /v2/Indicators/…: the emulator, or a proxy serving all three Twilio hosts.
                base = config.api_base_url.rstrip("/")
                client.api.base_url = base
                client.content.base_url = base
                client.messaging.base_url = base
            channel.client = client

    async def parse(self, event: RawEvent) -> InboundMessage | None:
        """The message of a stored inbound-message form (connectors/whatsapp/parse.py)."""
        return parse_message(event, self._table, self.context.metrics)

    async def media_fetch(
        self, message: InboundMessage, attachment: Attachment
    ) -> MediaFetch | None:
        """The authenticated GET of a ``MediaUrlN`` of this channel's account on its Twilio
        API; None for anything else (connectors/whatsapp/inbound_media.py)."""
        channel = self._channel_for(message.conversation.tenant, message.reply_context)
        if channel is None:
            return None
        return media_fetch_for(channel.config, attachment)

    async def show_typing(self, message: InboundMessage) -> bool:
        """Twilio's WhatsApp typing indicator on the customer's message; the worker runs
        this beside the agent and counts what it did. False: no channel serves the message
        any more (a tenant changed meanwhile)."""
        channel = self._channel_for(message.conversation.tenant, message.reply_context)
        if channel is None or not message.event_id:
            return False
        self._ensure_clients()
        async with twilio_call("Typing indicator", idempotent=True):
            await channel.client.messaging.v2.typing_indicator.create_async(
                channel="whatsapp", message_id=message.event_id
            )
        return True

    def pacing(self, message: OutboundMessage) -> Pacing | None:
        channel = self._channel_for_outbound(message)
        if channel is None or channel.config.max_sends_per_second is None:
            return None
        rate = channel.config.max_sends_per_second
        sender = channel.config.messaging_service_sid or channel.config.from_number or ""
        key = self.context.keyspace.whatsapp_pace(sender)
        return Pacing(key=key, rate=rate, burst=max(1.0, rate))

    # -- outbound --------------------------------------------------------------------------------
    def _channel_for_outbound(self, message: OutboundMessage) -> _Channel | None:
        return self._channel_for(message.conversation.tenant, message.reply_context)

    def _channel_for(self, tenant: str, context: object) -> _Channel | None:
        candidates = [c for c in self._channels if c.tenant == tenant]
        if isinstance(context, WhatsAppReplyContext):
            for channel in candidates:
                if context.to_address == channel.config.from_number or (
                    context.messaging_service_sid is not None
                    and context.messaging_service_sid == channel.config.messaging_service_sid
                ):
                    return channel
        return candidates[0] if candidates else None

    async def _window_open(self, conv: ConversationKey, config: WhatsAppChannelConfig) -> bool:
        """Inside the customer-service window: a customer message less than 24 h ago."""
        current = await self.context.store.get_state(self.context.keyspace.state(conv.key))
        if current is None:
            return False
        last: datetime | None = ConversationState.model_validate_json(current.value).last_inbound_at
        return last is not None and utcnow() - last < timedelta(hours=config.window_hours)

    def _template_part(self, message: OutboundMessage, channel: _Channel) -> _Create:
        template = channel.config.templates.get(message.persona.name)
        if template is None:
            self.context.metrics.channel_events.labels("whatsapp", "window_closed").inc()
            raise PermanentDeliveryError(
                "window closed: no customer message in the last "
                f"{channel.config.window_hours:g} h and no approved template for persona "
                f"{message.persona.name!r}",
                code=DeliveryFailure.WINDOW_CLOSED,
            )
        context = message.reply_context
        profile = context.profile_name if isinstance(context, WhatsAppReplyContext) else None
        values = {
            "profile_name": profile or "",
            "persona": message.persona.name,
            "display_name": message.persona.display_name,
            "tenant": message.conversation.tenant,
            "text": message.plain_text(with_attachments=True),  # no buttons in a template
        }
        variables = {
            k: string.Template(v).safe_substitute(values) for k, v in template.variables.items()
        }
        self.context.metrics.channel_events.labels("whatsapp", "template_sent").inc()
        return _Create(
            content_sid=template.content_sid,
            content_variables=json.dumps(variables) if variables else None,
        )

    def _status_callback_url(self, channel: _Channel, message: OutboundMessage) -> str | None:
        if not channel.config.status_callback or channel.public_base_url is None:
            return None
        query = urlencode(
            {"tenant": channel.tenant, "channel": channel.config.name, "ob": message.id}
        )
        return f"{channel.public_base_url.rstrip('/')}{STATUS_PATH}?{query}"

    async def send(self, message: OutboundMessage) -> DeliveryReceipt:
        conv = message.conversation
        channel = self._channel_for_outbound(message)
        if channel is None:
            raise PermanentDeliveryError(
                f"no WhatsApp channel for tenant {conv.tenant!r}", code=DeliveryFailure.NO_CHANNEL
            )
        self._ensure_clients()  # worker-only processes never call start()
        context = message.reply_context
        to = context.from_address if isinstance(context, WhatsAppReplyContext) else None
        to = to or conv.conversation_id
        window_open = await self._window_open(conv, channel.config)
        if window_open:
            parts = await self._session_parts(message, channel)
        else:
            parts = [self._template_part(message, channel)]
        ctx = self.context
        ttl = ctx.config.store.dedupe_ttl_seconds
        await ctx.store.put_record(
            ctx.keyspace.whatsapp_outbound(message.id),
            json.dumps(
                {
                    "outbound_id": message.id,
                    "idempotency_key": message.idempotency_key,
                    "conversation": conv.model_dump(mode="json"),
                    "message": message.model_dump(mode="json"),
                }
            ).encode(),
            ttl=ttl,
        )
        callback = self._status_callback_url(channel, message)
        sids: list[str] = []
        statuses: list[str] = []
        for n, part in enumerate(parts):
            # A retry after a partial success must not post the parts that went out already.
            sent_key = ctx.keyspace.whatsapp_part(conv.key, message.idempotency_key, n)
            already = await ctx.store.get_record(sent_key)
            if already is not None:
                sids.append(already.decode())
                continue
            sid, status = await self._create(channel, to=to, part=part, status_callback=callback)
            if part.media:
                ctx.metrics.media.labels("whatsapp", "out", "sent").inc(part.media)
            # Twilio has the part now: a store error here must not make the retry send it again.
            await record_until_stored(
                partial(ctx.store.put_record, sent_key, sid.encode(), ttl=ttl),
                event="whatsapp.record_retry",
            )
            await record_until_stored(
                partial(
                    ctx.store.put_record,
                    ctx.keyspace.whatsapp_sid(sid),
                    message.id.encode(),
                    ttl=ttl,
                ),
                event="whatsapp.record_retry",
            )
            sids.append(sid)
            statuses.append(status)
        return DeliveryReceipt(
            outbound_id=message.id,
            idempotency_key=message.idempotency_key,
            channel=Channel.WHATSAPP,
            status=_RECEIPT_STATUS.get(statuses[-1] if statuses else "queued", "queued"),
            platform_message_id=sids[0] if sids else None,
            detail={
                "message_sids": sids,
                "window": "open" if window_open else "closed",
                "content_sid": parts[0].content_sid if parts else None,
            },
        )

    async def _session_parts(self, message: OutboundMessage, channel: _Channel) -> list[_Create]:
        """The creates of a reply inside the window: its rich parts as Content where they
        fit (connectors/whatsapp/render.py), else — and when Twilio refuses a content
        definition — the whole reply as numbered text."""
        links: dict[int, str | None] = {}
        media = self.context.media

        def link(attachment: Attachment) -> str | None:
            if id(attachment) not in links:
                try:
                    links[id(attachment)] = media.link(attachment)
                except MediaUnavailable:
                    links[id(attachment)] = None
            return links[id(attachment)]

        plan = _native_plan(message, link)
        creates: list[_Create] | None = None
        if plan is not None:
            # A refusal is logged and counted by the library; the text form says the same.
            with contextlib.suppress(ContentRefused):
                creates = [await self._resolve(part, message, channel) for part in plan]
        used = list(message.attachments)
        if creates is None:
            plan = _plain_plan(message, link)
            creates = [await self._resolve(part, message, channel) for part in plan]
        else:
            used += [card.image for card in message.cards if card.image is not None]
        # What could not be linked went as its text form (the sent ones count as they go).
        degraded = sum(1 for a in used if id(a) in links and links[id(a)] is None)
        if degraded:
            self.context.metrics.media.labels("whatsapp", "out", "degraded").inc(degraded)
        return creates

    async def _resolve(self, part: Part, message: OutboundMessage, channel: _Channel) -> _Create:
        if part.content is None:
            return _Create(
                body=part.body,
                media_url=part.media_url,
                persistent_action=part.persistent_action,
                media=1 if part.media_url else 0,
            )
        spec: ContentSpec = part.content
        sid = await self._contents.sid(
            channel.client,
            tenant=message.conversation.tenant,
            account_sid=channel.config.account_sid,
            spec=spec,
        )
        return _Create(
            content_sid=sid, content_variables=json.dumps(spec.variables), media=spec.media
        )

    async def _create(
        self, channel: _Channel, *, to: str, part: _Create, status_callback: str | None
    ) -> tuple[str, str]:
        """One Messages API create through the SDK; Twilio's failures classified."""
        config = channel.config
        kwargs: dict[str, Any] = {"to": to}
        if config.messaging_service_sid is not None:
            kwargs["messaging_service_sid"] = config.messaging_service_sid
        else:
            kwargs["from_"] = config.from_number
        if part.body is not None:
            kwargs["body"] = part.body
        if part.media_url is not None:
            kwargs["media_url"] = [part.media_url]
        if part.content_sid is not None:
            kwargs["content_sid"] = part.content_sid
        if part.content_variables is not None:
            kwargs["content_variables"] = part.content_variables
        if part.persistent_action is not None:
            kwargs["persistent_action"] = [part.persistent_action]
        if status_callback is not None:
            kwargs["status_callback"] = status_callback
        # No idempotency key at Twilio: a create that broke off is outcome_unknown.
        async with twilio_call("Messages API", idempotent=False, codes=_FAILURE_BY_TWILIO_CODE):
            created = await channel.client.messages.create_async(**kwargs)
        return str(created.sid), str(created.status or "queued")


def render(message: OutboundMessage) -> list[dict[str, Any]]:
    """What :meth:`WhatsAppConnector.send` sends for ``message`` inside the customer-service
    window, for the console's preview: each create's ``body`` and ``media_url``, and for a
    Content part its ``content`` type, the text shown and the ``buttons`` (kept files are
    not linked here: a preview signs no links)."""

    def link(attachment: Attachment) -> str | None:
        url = attachment.url
        return url if url is not None and url.startswith("https://") else None

    plan = _native_plan(message, link) or _plain_plan(message, link)
    return [_preview(part) for part in plan]


def _preview(part: Part) -> dict[str, Any]:
    if part.content is None:
        return {"body": part.body, "media_url": part.media_url, "content": None, "buttons": []}
    kind, body = next(iter(part.content.types.items()))
    variables = part.content.variables
    shown = variables.get("1", "")
    titles = [a.get("title", "") for a in body.get("actions", ())]
    titles += [i.get("item", "") for i in body.get("items", ())]
    for card in body.get("cards", ()):
        titles += [a.get("title", "") for a in card.get("actions", ())]
    return {"body": shown, "media_url": None, "content": kind, "buttons": titles}
