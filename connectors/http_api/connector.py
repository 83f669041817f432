"""Inbound: ``POST /v1/channels/http/{tenant}/messages``, authenticated by a tenant API key
(``Authorization: Bearer …``) or an ``X-FlowBiz-Signature`` HMAC over the method, path,
query, timestamp and body (v2, :mod:`gateway.signing`; docs/connectors/http.md).

A signed request is good for one use within the replay window: a message without
``event_id`` takes its dedupe key from the signed request, so a replay is acknowledged as a
duplicate and never queued (no extra store round trip on the ingest path), and a reply poll
claims the signature once in the store. Body-only v1 signatures count only when the channel
sets ``accept_v1_signatures``.

Replies reach the client two ways, both always available:

- as signed webhooks to the tenant's ``callback_url`` (``X-FlowBiz-Signature`` v2 over
  ``POST``, the callback URL's path and query and the body — plus v1 entries while
  ``callback_signature_v1`` is on — and ``X-FlowBiz-Idempotency-Key`` to dedupe retries), and
- by long-poll: ``GET /v1/channels/http/{tenant}/conversations/{id}/replies?after=CURSOR&wait=S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic_core import from_json, to_json

from connectors.base import (
    ALL_MEDIA,
    JSON,
    ChannelCapabilities,
    ConnectorContext,
    InboundRequest,
    InboundResponse,
    InboundResult,
    Pacing,
    Route,
)
from connectors.http_api.schemas import HttpMessage
from connectors.send_policy import (
    DeliveryFailure,
    PlatformAnswer,
    answer_error,
    map_delivery_errors,
)
from gateway.channel_config import given_in_schema
from gateway.config import ChannelConfig, Secret, TenantConfig
from gateway.envelope import RawEvent
from gateway.errors import (
    EventParseError,
    PayloadError,
    PermanentDeliveryError,
    UnknownTenantError,
    VerificationError,
)
from gateway.media import MediaService
from gateway.models import (
    Attachment,
    Channel,
    ConversationKey,
    DeliveryReceipt,
    EventKind,
    InboundMessage,
    OutboundMessage,
    encode_inbound,
    new_id,
)
from gateway.netguard import check_url, guarded_session
from gateway.signing import (
    SIGNATURE_HEADER,
    SignedRequest,
    sign_request,
    verify_request,
)
from gateway.store import Admission

__all__ = ["HttpApiConnector", "HttpChannelConfig"]

IDEMPOTENCY_HEADER = "X-FlowBiz-Idempotency-Key"
_MAX_WAIT = 30.0
_POLL_INTERVAL = 0.2


class HttpChannelConfig(ChannelConfig):
    """The signed HTTP API channel for websites and apps (docs/connectors/http.md)."""

    # What ``_needs_auth`` requires, told to the JSON Schema too: inbound is authenticated.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                given_in_schema("api_keys", "array"),
                given_in_schema("signing_secrets", "array"),
            ]
        }
    )

    kind: Literal["http"] = "http"
    api_keys: tuple[Secret, ...] = Field(
        default=(),
        description="Keys a client sends as `Authorization: Bearer …` (server to server).",
    )
    signing_secrets: tuple[Secret, ...] = Field(
        default=(),
        description="Secrets of the `X-FlowBiz-Signature` on inbound requests, newest first "
        "(two during a rotation). api_keys or signing_secrets are required.",
    )
    callback_url: str | None = Field(
        default=None, description="Where replies are posted as signed webhooks; optional."
    )
    callback_secrets: tuple[Secret, ...] = Field(
        default=(), description="Sign the callbacks, newest first; required with callback_url."
    )
    callback_allow_private: bool = Field(
        default=False,
        description="Let callback_url be a private or loopback address (the SSRF guard is on "
        "otherwise).",
    )
    replay_window_seconds: float = Field(
        default=300, gt=0, description="How old (or how far ahead) a signature may be."
    )
    accept_v1_signatures: bool = Field(
        default=False,
        description="Also accept body-only v1 signatures, replayable against any path of the "
        "tenant: only for clients mid-migration.",
    )
    callback_signature_v1: bool = Field(
        default=True,
        description="Callbacks carry v1 entries beside v2; turn off once the receiver verifies v2.",
    )
    reply_retention: int = Field(
        default=1000, ge=1, description="Replies kept per conversation for polling."
    )
    # Below the dispatcher's delivery timeout, so that a receiver that does not answer is a
    # retried ``network`` failure (the receiver dedupes), not an ``outcome_unknown``.
    callback_timeout_seconds: float = Field(
        default=10,
        gt=0,
        le=25,
        description="A callback unanswered this long is retried.",
    )

    @model_validator(mode="after")
    def _needs_auth(self) -> HttpChannelConfig:
        if not self.api_keys and not self.signing_secrets:
            raise ValueError("give api_keys or signing_secrets: inbound must be authenticated")
        if self.callback_url is not None and not self.callback_secrets:
            raise ValueError("callback_url needs callback_secrets to sign the webhooks")
        if self.callback_url is not None:
            check_url(
                self.callback_url,
                allow_private=self.callback_allow_private,
                field="callback_url",
                opt_out="callback_allow_private",
            )
        return self


class HttpApiConnector:
    channel: ClassVar[Channel] = Channel.HTTP
    # The client's site shows whatever it likes: every part is in the reply's JSON.
    capabilities: ClassVar[ChannelCapabilities] = ChannelCapabilities(
        buttons=True,
        threads=True,
        max_text_length=20_000,
        markdown=True,
        attachments=True,
        cards=True,
        quick_replies=True,
        options=True,
        media_out=ALL_MEDIA,
    )
    config_model: ClassVar[type[ChannelConfig]] = HttpChannelConfig

    def __init__(
        self,
        *,
        context: ConnectorContext,
        channels: Sequence[tuple[TenantConfig, ChannelConfig]],
    ) -> None:
        self.context = context
        self._channels: dict[str, HttpChannelConfig] = {}
        for tenant, channel in channels:
            if isinstance(channel, HttpChannelConfig) and tenant.id not in self._channels:
                self._channels[tenant.id] = channel
        self._new_reply = asyncio.Event()
        self._guarded_http: aiohttp.ClientSession | None = None  # for guarded callback URLs

    # -- lifecycle -------------------------------------------------------------------------------
    def routes(self) -> Sequence[Route]:
        return [
            Route(
                "POST",
                "/v1/channels/http/{tenant}/messages",
                self.receive,
                "http.receive",
                content_types=JSON,
            ),
            Route(
                "GET",
                "/v1/channels/http/{tenant}/conversations/{conversation_id}/replies",
                self.replies,
                "http.replies",
            ),
        ]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._new_reply.set()  # wake long-polls so shutdown is not held up
        if self._guarded_http is not None:
            await self._guarded_http.close()

    async def parse(self, event: RawEvent) -> InboundMessage | None:
        # The HTTP channel is the gateway's own API: its edge validates the body (a client
        # must hear about a bad request in the response) and appends the message parsed.
        raise EventParseError("the HTTP channel stores parsed messages", reason="not_raw")

    def pacing(self, message: OutboundMessage) -> Pacing | None:
        return None

    # -- inbound ---------------------------------------------------------------------------------
    def _channel_for(self, request: InboundRequest) -> tuple[str, HttpChannelConfig]:
        tenant = request.match_info.get("tenant", "")
        channel = self._channels.get(tenant)
        if channel is None:
            raise UnknownTenantError(f"no HTTP channel for tenant {tenant!r}")
        return tenant, channel

    def verify(self, request: InboundRequest, channel: HttpChannelConfig) -> SignedRequest | None:
        """Accept a matching API key (None) or a fresh, matching signature; nothing else."""
        auth = request.header("authorization")
        if auth.lower().startswith("bearer "):
            presented = auth[7:].strip().encode()
            if any(
                hmac.compare_digest(presented, key.get_secret_value().encode())
                for key in channel.api_keys
            ):
                return None
            raise VerificationError("invalid API key", reason="bad_api_key")
        if not channel.signing_secrets:
            raise VerificationError("missing API key", reason="missing_credentials")
        path, query = _signed_target(request)
        signed = verify_request(
            request.header(SIGNATURE_HEADER) or None,
            request.method,
            path,
            query,
            request.body,
            [s.get_secret_value() for s in channel.signing_secrets],
            tolerance=channel.replay_window_seconds,
            accept_v1=channel.accept_v1_signatures,
        )
        if signed.scheme == "v1":
            # Counted so operators can see who still needs to move to v2 before the
            # switch is removed (docs/connectors/http.md, "Migrating from v1").
            self.context.metrics.channel_events.labels("http", "v1_signature").inc()
        return signed

    async def receive(self, request: InboundRequest) -> InboundResult:
        tenant, channel = self._channel_for(request)
        signed = self.verify(request, channel)
        try:
            body = HttpMessage.model_validate_json(request.body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise PayloadError(f"invalid message: {where}: {first['msg']}") from exc
        if not body.text and body.action is None:
            raise PayloadError("a message needs text or an action")
        # The inbox entry is written directly: every input was validated just above, and
        # building the InboundMessage model only to serialise it cost ~30 us of CPU per
        # request (docs/performance.md). encode_inbound writes the same JSON the model would.
        action = body.action
        event_id = body.event_id
        if event_id is None:
            # Named by the signed request itself, so a replay inside the window is the same
            # event: acknowledged as a duplicate by the dedupe claim admit makes anyway.
            event_id = f"sig-{signed.replay_key}" if signed is not None else new_id()
        message = encode_inbound(
            event_id=event_id,
            tenant=tenant,
            channel=Channel.HTTP,
            conversation_id=body.conversation_id,
            thread=body.thread,
            sender_id=body.user.id,
            sender_name=body.user.name,
            kind=EventKind.ACTION if action is not None else EventKind.MESSAGE,
            text=action if action is not None else body.text,
            # pydantic-core's parser: the body is already known to be valid JSON, and this
            # runs per request (json.loads costs about four times as much).
            raw=from_json(request.body),
        )

        def respond(flags: Sequence[bool]) -> InboundResponse:
            answer = {"id": message.id, "event_id": message.event_id, "duplicate": not flags[0]}
            return InboundResponse(
                status=202, body=to_json(answer), content_type="application/json"
            )

        return InboundResult(encoded=[message], respond=respond)

    async def replies(self, request: InboundRequest) -> InboundResult:
        tenant, channel = self._channel_for(request)
        signed = self.verify(request, channel)
        if signed is not None:
            await self._claim_once(tenant, channel, signed)
        key = ConversationKey(
            tenant=tenant,
            channel=Channel.HTTP,
            conversation_id=request.match_info.get("conversation_id", ""),
            thread=request.query.get("thread") or None,
        ).key
        after = request.query.get("after") or None
        try:
            wait = min(_MAX_WAIT, max(0.0, float(request.query.get("wait", "0"))))
        except ValueError as exc:
            raise PayloadError("wait must be a number of seconds") from exc
        stream = self.context.keyspace.replies(key)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            self._new_reply.clear()
            entries = await self.context.store.read_log(stream, after=after, count=100)
            remaining = deadline - loop.time()
            if entries or remaining <= 0:
                break
            # Woken at once by replies sent from this process; others are seen by polling.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_reply.wait(), min(_POLL_INTERVAL, remaining))
        replies = [json.loads(e.payload) for e in entries]
        cursor = entries[-1].id if entries else after
        return InboundResult(response=InboundResponse.json({"replies": replies, "next": cursor}))

    async def _claim_once(
        self, tenant: str, channel: HttpChannelConfig, signed: SignedRequest
    ) -> None:
        """Refuse a signed poll seen before: a captured one must not read later replies."""
        # Kept until the signature is stale anyway (its timestamp may lie ahead of ours).
        ttl = max(1.0, signed.timestamp + channel.replay_window_seconds - time.time() + 1)
        nonce = self.context.keyspace.signature_nonce("http", tenant, signed.replay_key)
        if not await self.context.store.claim(nonce, ttl=ttl):
            raise VerificationError(
                "this signed request was already used: sign each request afresh",
                reason="replayed_signature",
            )

    # -- outbound --------------------------------------------------------------------------------
    def _payload(self, message: OutboundMessage) -> dict[str, Any]:
        conv = message.conversation
        return {
            "id": message.id,
            "tenant": conv.tenant,
            "conversation_id": conv.conversation_id,
            "thread": conv.thread,
            "in_reply_to": message.in_reply_to,
            "persona": message.persona.model_dump(mode="json"),
            "text": message.text,
            "buttons": [b.model_dump() for b in message.buttons],
            "attachments": [self._attachment(a, count=True) for a in message.attachments],
            "quick_replies": [b.model_dump() for b in message.quick_replies],
            "cards": [
                {
                    **card.model_dump(mode="json", exclude={"image"}),
                    "image": None if card.image is None else self._attachment(card.image),
                }
                for card in message.cards
            ],
            "options": None if message.options is None else message.options.model_dump(),
            "created_at": message.created_at.isoformat(),
            "idempotency_key": message.idempotency_key,
        }

    def _attachment(self, attachment: Attachment, *, count: bool = False) -> dict[str, Any]:
        """A file as the client's site gets it: a kept one with a signed, expiring link served
        by the gateway, an agent's https URL as it is; what a platform keeps it by (``extra``)
        is never passed on."""
        try:
            media: MediaService | None = self.context.media
        except RuntimeError:  # no media service in this process: no links to give
            media = None
        if media is not None:
            data = media.describe(attachment)
        else:
            data = attachment.model_dump(mode="json", exclude_none=True)
            if not (attachment.url or "").startswith("https://"):
                data.pop("url", None)
        data.pop("extra", None)
        if count:
            sendable = "url" in data or attachment.location or attachment.contact
            outcome = "sent" if sendable else "degraded"
            self.context.metrics.media.labels("http", "out", outcome).inc()
        return data

    async def send(self, message: OutboundMessage) -> DeliveryReceipt:
        conv = message.conversation
        channel = self._channels.get(conv.tenant)
        if channel is None:
            raise PermanentDeliveryError(
                f"no HTTP channel for tenant {conv.tenant!r}", code=DeliveryFailure.NO_CHANNEL
            )
        body = to_json(self._payload(message))  # compact UTF-8: smaller on the wire and kept
        ctx = self.context
        # Kept for polling once, however often this send is retried: the claim and the
        # append are one store call (one script on Redis), so a crash between the two
        # cannot lose the reply or keep it twice.
        kept = Admission(
            dedupe_key=ctx.keyspace.http_posted(conv.key, message.idempotency_key),
            stream=ctx.keyspace.replies(conv.key),
            payload=body,
            log_cap=channel.reply_retention,
        )
        (entry_id,) = await ctx.store.admit([kept], dedupe_ttl=ctx.config.store.dedupe_ttl_seconds)
        if entry_id is not None:
            self._new_reply.set()
        receipt = DeliveryReceipt(
            outbound_id=message.id,
            idempotency_key=message.idempotency_key,
            channel=Channel.HTTP,
            status="queued",
        )
        if channel.callback_url is None:
            return receipt
        await self._post_callback(channel, body, message.idempotency_key)
        return receipt.model_copy(update={"status": "delivered"})

    def _callback_session(self, channel: HttpChannelConfig) -> aiohttp.ClientSession:
        """The app's session for a callback URL marked allow_private, else a guarded one."""
        if channel.callback_allow_private:
            return self.context.http
        if self._guarded_http is None:
            self._guarded_http = guarded_session()
        return self._guarded_http

    async def _post_callback(self, channel: HttpChannelConfig, body: bytes, key: str) -> None:
        assert channel.callback_url is not None  # checked by the caller
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_request(
                [s.get_secret_value() for s in channel.callback_secrets],
                "POST",
                channel.callback_url,
                body,
                v1=channel.callback_signature_v1,
            ),
            IDEMPOTENCY_HEADER: key,
            "User-Agent": "FlowBiz-Gateway",
        }
        # The receiver dedupes on the idempotency key, so a retry is always safe here.
        async with (
            map_delivery_errors("callback", idempotent=True),
            self._callback_session(channel).post(
                channel.callback_url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=channel.callback_timeout_seconds),
            ) as response,
        ):
            status = response.status
            response_headers = response.headers
        if 200 <= status < 300:
            return
        raise answer_error(
            "callback", PlatformAnswer(status, str(status), headers=response_headers)
        )


def _signed_target(request: InboundRequest) -> tuple[str, str]:
    """The path and raw query string the client signed, as cheaply as they can be had.

    The edge gives the decoded path, whose canonical form equals the raw one's unless it
    still holds a ``%`` (a ``%25`` was decoded); then, and when there is a query at all, the
    raw form comes from the URL (a few microseconds the query-less ingest path skips).
    """
    path = request.path
    if "%" not in path and not request.query:
        return path, ""
    url = urlsplit(request.url)
    return url.path, url.query
