"""WhatsApp through Twilio: signed form webhooks in, the Messages API out, status callbacks.

Inbound, ``POST /whatsapp/webhook``: the form's ``To`` (or ``MessagingServiceSid``) picks
the channel, ``X-Twilio-Signature`` is checked against the URL Twilio called (see
:mod:`connectors.whatsapp.signature`), the message is made durable (deduped on
``MessageSid``) and Twilio gets an empty TwiML ``<Response />`` at once.

Outbound goes through the twilio SDK's async client. Inside the 24-hour customer-service
window (since the conversation's last inbound message) replies are free-form, split at
1,600 characters; outside it the persona's approved template (ContentSid) is sent, or the
message is dead-lettered with reason "window closed".

Status callbacks, ``POST /whatsapp/status`` (signed the same way), become
:class:`~gateway.models.DeliveryReceipt` entries on the conversation; ``failed`` and
``undelivered`` also land in the dead-letter list with Twilio's ErrorCode.
"""

from __future__ import annotations

import contextvars
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

import aiohttp
from multidict import MultiDict
from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, model_validator
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse

from connectors.base import (
    FORM,
    ChannelCapabilities,
    ConnectorContext,
    InboundRequest,
    InboundResponse,
    InboundResult,
    Pacing,
    Route,
)
from connectors.send_policy import (
    DeliveryFailure,
    map_delivery_errors,
    record_until_stored,
    utf16_fit,
)
from connectors.send_policy.twilio import read_twilio
from connectors.whatsapp.signature import parse_form, signed_url, verify_signature
from gateway.config import ChannelConfig, Secret, TenantConfig
from gateway.deadletters import DeadLetter
from gateway.envelope import RawEvent
from gateway.errors import (
    EventParseError,
    IngestUnavailableError,
    PayloadError,
    PermanentDeliveryError,
    StoreError,
    TransientDeliveryError,
    UnknownTenantError,
)
from gateway.models import (
    Attachment,
    Channel,
    ConversationKey,
    DeliveryReceipt,
    EventKind,
    InboundMessage,
    OutboundMessage,
    Participant,
    WhatsAppReplyContext,
    stored_json,
    utcnow,
)
from gateway.observability import get_logger
from gateway.state import ConversationState
from gateway.store import Admission

__all__ = [
    "BODY_LIMIT",
    "WhatsAppChannelConfig",
    "WhatsAppConnector",
    "WhatsAppTemplate",
    "render",
    "split_body",
]

log = get_logger(__name__)

BODY_LIMIT = 1600  # characters per Messages API Body
WEBHOOK_PATH = "/whatsapp/webhook"
STATUS_PATH = "/whatsapp/status"
_EMPTY_TWIML = str(MessagingResponse().to_xml()).encode()
_ADDRESS = re.compile(r"^whatsapp:\+[1-9][0-9]{6,14}$")
_MAX_MEDIA = 10

_WINDOW_CLOSED_CODE = 63016
# Twilio error codes whose meaning the HTTP status does not tell (it says 4xx for some).
_FAILURE_BY_TWILIO_CODE = {
    "20429": DeliveryFailure.RATE_LIMITED,
    "30001": DeliveryFailure.RATE_LIMITED,  # queue overflow: sent faster than it drains
    "63018": DeliveryFailure.RATE_LIMITED,  # the channel's rate limit
    "20500": DeliveryFailure.PLATFORM_UNAVAILABLE,
    "20503": DeliveryFailure.PLATFORM_UNAVAILABLE,
    str(_WINDOW_CLOSED_CODE): DeliveryFailure.WINDOW_CLOSED,  # outside 24 h, no template
}
_ReceiptStatus = Literal["sent", "queued", "delivered", "read", "failed", "undelivered"]
# Message statuses as Twilio reports them → the receipt's status.
_RECEIPT_STATUS: dict[str, _ReceiptStatus] = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "partially_delivered": "delivered",
    "read": "read",
    "failed": "failed",
    "undelivered": "undelivered",
}
_DEAD_STATUSES = frozenset({"failed", "undelivered"})
_MAX_PARTS = 64  # a reply is never split into more parts than this


class WhatsAppTemplate(BaseModel):
    """An approved Content template, sent when the 24-hour window is closed.

    ``variables`` maps the template's placeholders ("1", "2", …) to text in which
    ``$profile_name``, ``$persona``, ``$display_name``, ``$tenant`` and ``$text`` (the reply
    the persona wanted to send) are filled in.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    content_sid: str = Field(pattern=r"^HX[0-9a-fA-F]{32}$")
    variables: dict[str, str] = Field(default_factory=dict)


class WhatsAppChannelConfig(ChannelConfig):
    kind: Literal["whatsapp"] = "whatsapp"
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: Secret
    from_number: str | None = Field(default=None, pattern=_ADDRESS.pattern)
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    # The scheme://host[:port][/prefix] Twilio calls; the webhook URL in the console is this
    # + /whatsapp/webhook. Falls back to http.public_base_url.
    public_base_url: str | None = Field(default=None, pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
    trusted_proxies: tuple[IPvAnyNetwork, ...] = ()
    status_callback: bool = True
    templates: dict[str, WhatsAppTemplate] = Field(default_factory=dict)  # persona → template
    window_hours: float = Field(default=24, gt=0)
    max_sends_per_second: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _needs_sender(self) -> WhatsAppChannelConfig:
        if self.from_number is None and self.messaging_service_sid is None:
            raise ValueError("give from_number (whatsapp:+…) or messaging_service_sid")
        return self

    def serves(self, reply_context: object) -> bool:
        """A message to this number (or through this Messaging Service)."""
        if not isinstance(reply_context, WhatsAppReplyContext):
            return False
        if self.from_number is not None and reply_context.to_address == self.from_number:
            return True
        sid = reply_context.messaging_service_sid
        return sid is not None and sid == self.messaging_service_sid


@dataclass(slots=True)
class _Channel:
    tenant: str
    config: WhatsAppChannelConfig
    validator: RequestValidator
    public_base_url: str | None
    client: Any = None  # twilio.rest.Client, built inside the running loop


@dataclass(frozen=True, slots=True)
class _Part:
    body: str | None = None
    media_url: str | None = None
    content_sid: str | None = None
    content_variables: str | None = None


# The response of the Twilio call made by the current task: the SDK's exceptions carry no
# headers, and Retry-After is only in the response.
_last_response: contextvars.ContextVar[list[TwilioResponse] | None] = contextvars.ContextVar(
    "whatsapp_last_response", default=None
)


class _HeaderKeepingHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio is untyped
    """The SDK's aiohttp client, also handing the raw response to the calling task."""

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        if auth is not None:
            # aiohttp 3.14 deprecates the BasicAuth object the SDK builds from ``auth``; the
            # same Authorization header, set directly (the SDK never logs that header).
            headers = {**(headers or {}), "Authorization": aiohttp.encode_basic_auth(*auth)}
        response: TwilioResponse = await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
        holder = _last_response.get()
        if holder is not None:
            holder.append(response)
        return response


def split_body(text: str, limit: int = BODY_LIMIT) -> list[str]:
    """Cut ``text`` into ordered parts of at most ``limit`` characters, at a line break or
    space when one is near the limit.

    Characters are counted as UTF-16 code units, as Twilio counts them, so an emoji counts
    twice and a part never goes over the limit however the platform counts.
    """
    parts: list[str] = []
    rest = text
    while (fits := utf16_fit(rest, limit)) < len(rest):
        cut = max(rest.rfind("\n", 0, fits + 1), rest.rfind(" ", 0, fits + 1))
        if cut < fits // 2:
            parts.append(rest[:fits])  # no good break point: cut hard, not into tiny parts
            rest = rest[fits:]
        else:
            parts.append(rest[:cut].rstrip())
            rest = rest[cut + 1 :]
    parts.append(rest)
    return [part for part in parts if part.strip()] or [""]


def _attachment_kind(
    mime: str,
) -> Literal["image", "video", "audio", "file", "sticker", "location", "other"]:
    major = mime.split("/", 1)[0].lower()
    if mime.lower() == "image/webp":
        return "sticker"  # WhatsApp stickers arrive as webp images
    if major in ("image", "video", "audio"):
        return major  # type: ignore[return-value]  # narrowed by the membership test above
    return "file"


class WhatsAppConnector:
    channel: ClassVar[Channel] = Channel.WHATSAPP
    capabilities: ClassVar[ChannelCapabilities] = ChannelCapabilities(
        buttons=False,  # free-form quick replies need a Content template; sent as text lines
        threads=False,
        max_text_length=BODY_LIMIT,
        markdown=True,  # WhatsApp renders *bold*, _italic_, ~strike~
        attachments=True,
    )
    config_model: ClassVar[type[ChannelConfig]] = WhatsAppChannelConfig

    def __init__(
        self,
        *,
        context: ConnectorContext,
        channels: Sequence[tuple[TenantConfig, ChannelConfig]],
    ) -> None:
        self.context = context
        self._channels: list[_Channel] = []
        self._by_sender: dict[str, _Channel] = {}
        self._by_service: dict[str, _Channel] = {}
        for tenant, config in channels:
            if not isinstance(config, WhatsAppChannelConfig):
                continue
            channel = _Channel(
                tenant=tenant.id,
                config=config,
                validator=RequestValidator(config.auth_token.get_secret_value()),
                public_base_url=config.public_base_url or context.config.http.public_base_url,
            )
            self._channels.append(channel)
            for table, key in (
                (self._by_sender, config.from_number),
                (self._by_service, config.messaging_service_sid),
            ):
                if key is not None:
                    table[key] = channel
        self._http: AsyncTwilioHttpClient | None = None
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------------
    def routes(self) -> Sequence[Route]:
        return [
            Route("POST", WEBHOOK_PATH, self.receive, "whatsapp.webhook", content_types=FORM),
            Route("POST", STATUS_PATH, self.status, "whatsapp.status", content_types=FORM),
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
        self._http = _HeaderKeepingHttpClient()
        for channel in self._channels:
            config = channel.config
            client = Client(
                config.account_sid,
                config.auth_token.get_secret_value(),
                http_client=self._http,
                environment={},  # never pick up TWILIO_* variables meant for something else
            )
            if config.api_base_url:
                # Domain.absolute_url joins base_url and /2010-04-01/…: the emulator, a proxy.
                client.api.base_url = config.api_base_url.rstrip("/")
            channel.client = client

    async def parse(self, event: RawEvent) -> InboundMessage | None:
        raise EventParseError("this connector stores parsed messages", reason="not_raw")

    def pacing(self, message: OutboundMessage) -> Pacing | None:
        channel = self._channel_for_outbound(message)
        if channel is None or channel.config.max_sends_per_second is None:
            return None
        rate = channel.config.max_sends_per_second
        sender = channel.config.messaging_service_sid or channel.config.from_number or ""
        key = self.context.keyspace.whatsapp_pace(sender)
        return Pacing(key=key, rate=rate, burst=max(1.0, rate))

    # -- inbound ---------------------------------------------------------------------------------
    def _channel_for_inbound(self, form: MultiDict[str], *, ours: str) -> _Channel:
        """The channel owning the request: our address (``ours``) or the Messaging Service."""
        channel = self._by_sender.get(form.get(ours, ""))
        if channel is None:
            channel = self._by_service.get(form.get("MessagingServiceSid", ""))
        if channel is None:
            raise UnknownTenantError(f"no WhatsApp channel for this {ours} / MessagingServiceSid")
        account = form.get("AccountSid")
        if account is not None and account != channel.config.account_sid:
            raise UnknownTenantError("AccountSid does not match the channel's account")
        return channel

    def verify(self, request: InboundRequest, form: MultiDict[str], channel: _Channel) -> None:
        """X-Twilio-Signature against the URL Twilio called; VerificationError (403) if not."""
        url = signed_url(
            request,
            public_base_url=channel.public_base_url,
            trusted_proxies=channel.config.trusted_proxies,
        )
        verify_signature(
            request, form, validator=channel.validator, url=url, channel=channel.config.name
        )

    async def receive(self, request: InboundRequest) -> InboundResult:
        form = parse_form(request)
        channel = self._channel_for_inbound(form, ours="To")
        self.verify(request, form, channel)
        message = self._parse(channel, form)
        return InboundResult(
            messages=[message],
            response=InboundResponse(body=_EMPTY_TWIML, content_type="text/xml"),
        )

    def _parse(self, channel: _Channel, form: MultiDict[str]) -> InboundMessage:
        sid = form.get("MessageSid") or form.get("SmsMessageSid") or ""
        customer = form.get("From", "")
        ours = form.get("To", "")
        if not re.fullmatch(r"[SM]M[0-9a-fA-F]{32}", sid):
            raise PayloadError("MessageSid is missing or malformed")
        if not _ADDRESS.match(customer) or not _ADDRESS.match(ours):
            raise PayloadError("From and To must be whatsapp:+<number> addresses")
        attachments = self._attachments(form)
        events = self.context.metrics.channel_events
        payload = form.get("ButtonPayload")
        if payload:
            kind, text = EventKind.ACTION, payload
            events.labels("whatsapp", "button_reply").inc()
        else:
            kind, text = EventKind.MESSAGE, form.get("Body", "")
        if attachments:
            events.labels("whatsapp", "media_received").inc()
        profile = form.get("ProfileName") or None
        return InboundMessage(
            event_id=sid,
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
            raw={key: form.getall(key)[0] for key in form},
        )

    @staticmethod
    def _attachments(form: MultiDict[str]) -> tuple[Attachment, ...]:
        try:
            count = int(form.get("NumMedia", "0") or "0")
        except ValueError as exc:
            raise PayloadError("NumMedia is not a number") from exc
        if not 0 <= count <= _MAX_MEDIA:
            raise PayloadError("NumMedia is out of range")
        found: list[Attachment] = []
        for n in range(count):
            url = form.get(f"MediaUrl{n}")
            if not url:
                raise PayloadError(f"MediaUrl{n} is missing")
            mime = form.get(f"MediaContentType{n}", "application/octet-stream")
            found.append(Attachment(kind=_attachment_kind(mime), mime_type=mime, url=url))
        latitude, longitude = form.get("Latitude"), form.get("Longitude")
        if latitude and longitude:
            found.append(
                Attachment(
                    kind="location",
                    name=form.get("Label") or None,
                    extra={
                        "latitude": latitude,
                        "longitude": longitude,
                        "address": form.get("Address") or None,
                    },
                )
            )
        return tuple(found)

    # -- status callbacks ------------------------------------------------------------------------
    async def status(self, request: InboundRequest) -> InboundResult:
        form = parse_form(request)
        channel = self._channel_for_status(request, form)
        self.verify(request, form, channel)
        sid = form.get("MessageSid") or form.get("SmsSid") or ""
        twilio_status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
        if not sid or not twilio_status:
            raise PayloadError("MessageSid and MessageStatus are required")
        events = self.context.metrics.channel_events
        receipt_status = _RECEIPT_STATUS.get(twilio_status)
        ok = InboundResult(response=InboundResponse(body=_EMPTY_TWIML, content_type="text/xml"))
        if receipt_status is None:
            events.labels("whatsapp", "status_other").inc()
            return ok
        events.labels("whatsapp", f"status_{twilio_status}").inc()
        try:
            record = await self._outbound_record(request.query.get("ob"), sid)
            if record is None:
                events.labels("whatsapp", "status_unmatched").inc()
                log.warning("whatsapp.status_unmatched", message_sid=sid, status=twilio_status)
                return ok
            await self._store_status(channel, form, record, sid, twilio_status, receipt_status)
        except StoreError as exc:
            raise IngestUnavailableError("the status could not be stored; retry later") from exc
        return ok

    def _channel_for_status(self, request: InboundRequest, form: MultiDict[str]) -> _Channel:
        tenant, name = request.query.get("tenant"), request.query.get("channel")
        if tenant is not None:
            for channel in self._channels:
                if channel.tenant == tenant and channel.config.name == (name or "whatsapp"):
                    return channel
            raise UnknownTenantError("no WhatsApp channel for this status callback")
        # Callbacks configured on the Messaging Service in the console carry no query.
        return self._channel_for_inbound(form, ours="From")

    async def _outbound_record(self, outbound_id: str | None, sid: str) -> dict[str, Any] | None:
        store, keys = self.context.store, self.context.keyspace
        if outbound_id is None:
            found = await store.get_record(keys.whatsapp_sid(sid))
            if found is None:
                return None
            outbound_id = found.decode()
        raw = await store.get_record(keys.whatsapp_outbound(outbound_id))
        if raw is None:
            return None
        record: dict[str, Any] = json.loads(raw)
        return record

    async def _store_status(
        self,
        channel: _Channel,
        form: MultiDict[str],
        record: Mapping[str, Any],
        sid: str,
        twilio_status: str,
        receipt_status: _ReceiptStatus,
    ) -> None:
        ctx = self.context
        conv = ConversationKey.model_validate(record["conversation"])
        partition = ctx.keyspace.partition(conv.key)
        error_code = form.get("ErrorCode") or None
        receipt = DeliveryReceipt(
            outbound_id=record["outbound_id"],
            idempotency_key=record["idempotency_key"],
            channel=Channel.WHATSAPP,
            status=receipt_status,
            platform_message_id=sid,
            detail={
                "twilio_status": twilio_status,
                "error_code": error_code,
                "source": "status_callback",
            },
        )
        admissions = [
            Admission(
                dedupe_key=ctx.keyspace.status_seen(
                    partition, Channel.WHATSAPP.value, channel.tenant, sid, twilio_status
                ),
                stream=ctx.keyspace.receipts(conv.key),
                payload=stored_json(receipt),
                log_cap=ctx.config.store.receipts_per_conversation,
            )
        ]
        if twilio_status in _DEAD_STATUSES:
            window = error_code == str(_WINDOW_CLOSED_CODE)
            letter = DeadLetter(
                kind="outbound",
                reason=(
                    f"Twilio reported {twilio_status}"
                    + (f" with error {error_code}" if error_code else "")
                    + (" (window closed)" if window else "")
                ),
                code=error_code or twilio_status,
                attempts=1,
                channel=Channel.WHATSAPP.value,
                tenant=conv.tenant,
                conversation=conv.key,
                partition=partition,
                message=record.get("message"),
            )
            admissions.append(
                Admission(
                    dedupe_key=ctx.keyspace.status_dead_letter_seen(
                        partition, Channel.WHATSAPP.value, channel.tenant, sid, twilio_status
                    ),
                    stream=ctx.keyspace.dead_letters(partition),
                    payload=letter.model_dump_json().encode(),
                )
            )
        added = await ctx.store.admit(admissions, dedupe_ttl=ctx.config.store.dedupe_ttl_seconds)
        if len(added) > 1 and added[1] is not None:
            await self._forget_failed_part(conv, str(record["idempotency_key"]), sid)
            ctx.metrics.dead_letters.labels("whatsapp", error_code or twilio_status).inc()
            log.warning(
                "whatsapp.delivery_failed",
                message_sid=sid,
                status=twilio_status,
                error_code=error_code,
                conversation=conv.key,
            )

    async def _forget_failed_part(
        self, conv: ConversationKey, idempotency_key: str, sid: str
    ) -> None:
        """Twilio failed this part after accepting it: let an operator's replay send it again
        (the parts that did arrive stay recorded, so a replay sends only what failed)."""
        store, keys = self.context.store, self.context.keyspace
        for n in range(_MAX_PARTS):
            key = keys.whatsapp_part(conv.key, idempotency_key, n)
            found = await store.get_record(key)
            if found is None:
                return
            if found.decode() == sid:
                await store.delete([key])
                return

    # -- outbound --------------------------------------------------------------------------------
    def _channel_for_outbound(self, message: OutboundMessage) -> _Channel | None:
        tenant = message.conversation.tenant
        context = message.reply_context
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

    def _template_part(self, message: OutboundMessage, channel: _Channel) -> _Part:
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
            "text": message.text,
        }
        variables = {
            k: string.Template(v).safe_substitute(values) for k, v in template.variables.items()
        }
        self.context.metrics.channel_events.labels("whatsapp", "template_sent").inc()
        return _Part(
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
        parts = _session_parts(message) if window_open else [self._template_part(message, channel)]
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

    async def _create(
        self, channel: _Channel, *, to: str, part: _Part, status_callback: str | None
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
        if status_callback is not None:
            kwargs["status_callback"] = status_callback
        responses: list[TwilioResponse] = []
        token = _last_response.set(responses)
        try:
            # No idempotency key at Twilio: a create that broke off is outcome_unknown.
            async with map_delivery_errors(
                "Messages API",
                idempotent=False,
                read=[read_twilio],
                codes=_FAILURE_BY_TWILIO_CODE,
                response_headers=lambda: responses[-1].headers if responses else None,
            ):
                created = await channel.client.messages.create_async(**kwargs)
        finally:
            _last_response.reset(token)
        return str(created.sid), str(created.status or "queued")


def _session_parts(message: OutboundMessage) -> list[_Part]:
    """The messages of a reply inside the customer-service window, in order."""
    text = message.text_with_buttons()
    if message.persona.signature and text:
        text = f"{text}\n\n{message.persona.signature}"
    parts = [_Part(body=chunk) for chunk in split_body(text) if chunk] if text.strip() else []
    # WhatsApp carries one media item per message: each attachment is its own message.
    parts += [_Part(media_url=a.url) for a in message.attachments if a.url]
    return parts


def render(message: OutboundMessage) -> list[dict[str, Any]]:
    """The Messages API creates :meth:`WhatsAppConnector.send` makes for ``message`` inside
    the customer-service window (``body`` and ``media_url`` of each): what the console
    previews."""
    return [{"body": part.body, "media_url": part.media_url} for part in _session_parts(message)]
