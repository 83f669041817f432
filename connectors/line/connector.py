"""LINE Official Account channel (Messaging API), built on line-bot-sdk v3.

Inbound: ``POST /line/webhook`` (any configured channel) or
``POST /line/webhook/{tenant}/{channel}`` (one named channel). The ``X-Line-Signature`` is
checked against the channel secret(s) before the body is even decoded as JSON; the
signature-verified body's ``destination`` (the bot's user id) then selects the tenant's
channel. Each event that can start a turn is stored as LINE sent it, named by its
``webhookEventId`` (the dedupe key, so a redelivery never produces a second reply)
(:mod:`connectors.line.edge`); the worker reads it with the SDK's models
(:mod:`connectors.line.parse`) and adds the sender's display name.

Outbound: at send time, the event's reply token is used when it is still fresh (received less
than ``60 - reply_token_margin_seconds`` seconds ago) and this process wins the store claim on
it (single use across processes); otherwise the message is pushed with an
``X-Line-Retry-Key`` derived from the message's idempotency key, so a retried push is
accepted once (LINE answers 409 to the repeat, which counts as delivered). Every part of a
message goes in its LINE form or its shared text form (:mod:`connectors.line.render`); kept
files go out as signed links LINE fetches from the gateway.

Files people send are fetched by the worker from LINE's content API, at a URL built from the
message id (:meth:`LineConnector.media_fetch`, :mod:`connectors.line.content`); the loading
animation is shown in one-to-one chats as the agent starts (:meth:`LineConnector.show_typing`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    PushMessageRequest,
    ReplyMessageRequest,
    ShowLoadingAnimationRequest,
)
from pydantic_core import from_json

from connectors.base import (
    JSON,
    ChannelCapabilities,
    ConnectorContext,
    InboundRequest,
    InboundResponse,
    InboundResult,
    Pacing,
    Route,
)
from connectors.line.config import REPLY_TOKEN_LIFETIME_SECONDS, LineChannelConfig
from connectors.line.content import content_fetch
from connectors.line.edge import SIGNATURE_HEADER, admit_event, signature_matches
from connectors.line.parse import line_message
from connectors.line.render import (
    MAX_MESSAGES_PER_CALL,
    MAX_TEXT_UTF16,
    line_messages,
    render,
    split_text,
)
from connectors.line.render import batches as message_batches
from connectors.send_policy import (
    DeliveryFailure,
    map_delivery_errors,
    record_until_stored,
    utf16_len,
)
from connectors.send_policy.line import line_body_text, read_line
from gateway.config import ChannelConfig, TenantConfig
from gateway.contacts.names import Profile
from gateway.envelope import RawEvent
from gateway.errors import (
    EventParseError,
    PayloadError,
    PermanentDeliveryError,
    StoreError,
    TransientDeliveryError,
    UnknownTenantError,
    VerificationError,
)
from gateway.media import MediaFetch
from gateway.models import (
    Attachment,
    Channel,
    DeliveryReceipt,
    EventKind,
    InboundMessage,
    LineReplyContext,
    OutboundMessage,
    utcnow,
)
from gateway.observability import get_logger
from gateway.quotas import QuotaPolicy

__all__ = [
    "MAX_MESSAGES_PER_CALL",
    "MAX_TEXT_UTF16",
    "REPLY_TOKEN_LIFETIME_SECONDS",
    "LineChannelConfig",
    "LineConnector",
    "push_retry_key",
    "render",
    "split_text",
    "utf16_len",
]

log = get_logger(__name__)

_EMPTY_OK = InboundResponse.json({})
_REPLY_CLAIM_TTL = 2 * REPLY_TOKEN_LIFETIME_SECONDS
_UNUSED_CLAIMS_KEPT = 10_000  # a token lives 60 s; this bounds what a long outage leaves
_REPLY_FAILED = b"failed"  # the reply token claim's holder after LINE refused the reply
_USAGE_TTL = 62 * 86400  # long enough for a monthly quota window
# Fixed namespace so every process derives the same retry key from an idempotency key.
_RETRY_KEY_NAMESPACE = uuid.UUID("3f0c6a3e-5b1e-4f6c-9a57-7d1f6d0c2b41")


@dataclass(slots=True)
class _Bot:
    """A configured channel with its SDK objects."""

    tenant: str
    config: LineChannelConfig
    secret: bytes  # the channel secret, for the webhook signature
    client: Any = None  # AsyncApiClient, created inside the running loop
    api: Any = None  # AsyncMessagingApi


def push_retry_key(idempotency_key: str, batch: int) -> str:
    """The X-Line-Retry-Key of one push call: the same for every retry, in every process."""
    return str(uuid.uuid5(_RETRY_KEY_NAMESPACE, f"{idempotency_key}#{batch}"))


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class LineConnector:
    channel: ClassVar[Channel] = Channel.LINE
    capabilities: ClassVar[ChannelCapabilities] = ChannelCapabilities(
        buttons=True,
        threads=False,
        max_text_length=MAX_TEXT_UTF16,
        markdown=False,
        attachments=True,
        cards=True,
        quick_replies=True,
        options=True,
        media_out=("image", "video", "audio", "sticker", "location"),
    )
    config_model: ClassVar[type[ChannelConfig]] = LineChannelConfig

    def __init__(
        self,
        *,
        context: ConnectorContext,
        channels: Sequence[tuple[TenantConfig, ChannelConfig]],
    ) -> None:
        self.context = context
        self._bots: list[_Bot] = []
        self._by_destination: dict[str, _Bot] = {}
        self._by_name: dict[tuple[str, str], _Bot] = {}
        for tenant, channel in channels:
            if not isinstance(channel, LineChannelConfig):
                continue
            bot = _Bot(
                tenant=tenant.id,
                config=channel,
                secret=channel.channel_secret.get_secret_value().encode(),
            )
            self._bots.append(bot)
            self._by_destination[channel.destination] = bot
            self._by_name[(tenant.id, channel.name)] = bot
        self._names = context.name_cache()
        self._quota_policy: QuotaPolicy | None = None
        # Reply-token claims this process holds and knows it never sent with (the store
        # failed around the claim, or the reply never reached LINE): its own retry may use
        # them. Another process cannot know that, and dead-letters instead.
        self._unused_claims: dict[str, None] = {}

    def _remember_unused(self, claim_key: str) -> None:
        self._unused_claims[claim_key] = None
        while len(self._unused_claims) > _UNUSED_CLAIMS_KEPT:
            del self._unused_claims[next(iter(self._unused_claims))]

    # -- lifecycle -------------------------------------------------------------------------------
    def routes(self) -> Sequence[Route]:
        return [
            Route("POST", "/line/webhook", self.receive, "line.webhook", content_types=JSON),
            Route(
                "POST",
                "/line/webhook/{tenant}/{channel}",
                self.receive,
                "line.webhook_channel",
                content_types=JSON,
            ),
        ]

    async def start(self) -> None:
        for bot in self._bots:
            self._api(bot)

    async def stop(self) -> None:
        for bot in self._bots:
            if bot.client is not None:
                await bot.client.close()
                bot.client = bot.api = None
        if self._quota_policy is not None:
            await self._quota_policy.aclose()
            self._quota_policy = None

    @property
    def open_clients(self) -> int:
        """Messaging API clients currently open (one per channel that has made a call)."""
        return sum(1 for bot in self._bots if bot.client is not None)

    def pacing(self, message: OutboundMessage) -> Pacing | None:
        bot = self._bot_for(message)
        if bot is None or bot.config.sends_per_second is None:
            return None
        rate = bot.config.sends_per_second
        key = self.context.keyspace.line_pace(bot.config.destination)
        return Pacing(key=key, rate=rate, burst=max(1.0, rate))

    def _api(self, bot: _Bot) -> Any:
        """The channel's Messaging API client, created on first use inside the running loop."""
        if bot.api is None:
            configuration = Configuration(
                host=bot.config.api_base_url.rstrip("/") if bot.config.api_base_url else None,
                access_token=bot.config.channel_access_token.get_secret_value(),
            )
            bot.client = AsyncApiClient(configuration)
            bot.api = AsyncMessagingApi(bot.client)
        return bot.api

    def _count(self, event: str) -> None:
        self.context.metrics.channel_events.labels("line", event).inc()

    # -- inbound: the edge (connectors/line/edge.py) ----------------------------------------
    def verify(self, request: InboundRequest) -> list[_Bot]:
        """Check X-Line-Signature before anything reads the body; the channels it matches."""
        signature = request.header(SIGNATURE_HEADER)
        if not signature:
            raise VerificationError("missing X-Line-Signature", reason="missing_signature")
        tenant, name = request.match_info.get("tenant"), request.match_info.get("channel")
        if tenant is not None and name is not None:
            named = self._by_name.get((tenant, name))
            if named is None:
                raise UnknownTenantError(f"no LINE channel {name!r} for tenant {tenant!r}")
            candidates = [named]
        else:
            candidates = self._bots
        matched = [b for b in candidates if signature_matches(b.secret, request.body, signature)]
        if not matched:
            raise VerificationError("X-Line-Signature does not match", reason="bad_signature")
        return matched

    async def receive(self, request: InboundRequest) -> InboundResult:
        matched = self.verify(request)
        try:
            # pydantic-core's parser: several times faster than json.loads, per request.
            data = from_json(request.body)
        except ValueError as exc:
            if not _is_utf8(request.body):
                # LINE signs UTF-8 text: a signed body that is not cannot be LINE's.
                raise VerificationError("body is not UTF-8", reason="bad_signature") from exc
            raise PayloadError("body is not JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get("events"), list):
            raise PayloadError("a LINE webhook body is an object with an events array")
        destination = data.get("destination")
        bot = next((b for b in matched if b.config.destination == destination), None)
        if bot is None:
            raise UnknownTenantError("no configured LINE channel has this destination")
        events: list[Any] = data["events"]
        if not events:
            self._count("verify_request")  # the console's "Verify" button
            return InboundResult(response=InboundResponse.json({}))
        admitted = [
            a
            for a in (
                admit_event(e, tenant=bot.tenant, channel=bot.config, count=self._count)
                for e in events
            )
            if a is not None
        ]

        return InboundResult(encoded=admitted, response=_EMPTY_OK)

    # -- inbound: in the worker (connectors/line/parse.py) --------------------------------------
    async def parse(self, event: RawEvent) -> InboundMessage | None:
        bot = self._by_name.get((event.tenant, event.source))
        if bot is None:
            raise EventParseError(
                f"no LINE channel {event.source!r} for tenant {event.tenant!r}",
                reason="no_channel",
            )
        message = line_message(event, channel=bot.config)
        if (
            message is None
            or not bot.config.fetch_profiles
            or not isinstance(message.reply_context, LineReplyContext)
            or message.reply_context.user_id is None  # a group event naming nobody
            or message.kind in (EventKind.UNFOLLOW, EventKind.LEAVE)
        ):
            return message
        # A display name so personas can greet people by name (cached in the store).
        context = message.reply_context
        user_id = message.sender.id
        profile = await self._names.resolve(
            bot.tenant,
            Channel.LINE.value,
            user_id,
            lambda: self._profile(bot, context.source_type, context.source_id, user_id),
            timeout=bot.config.profile_timeout_seconds,
        )
        if profile is None or profile.name is None:
            return message
        sender = message.sender.model_copy(update={"display_name": profile.name})
        return message.model_copy(update={"sender": sender})

    async def _profile(
        self, bot: _Bot, source_type: str, chat_id: str, user_id: str
    ) -> Profile | None:
        """The user's profile as LINE shows it where they wrote: their own profile in a
        one-to-one chat (only for friends of the bot), the member profile in a group or
        room. None when LINE does not know them there (404); other errors are raised."""
        api = self._api(bot)
        timeout = aiohttp.ClientTimeout(total=bot.config.profile_timeout_seconds)
        try:
            if source_type == "group":
                found = await api.get_group_member_profile(
                    chat_id, user_id, _request_timeout=timeout
                )
            elif source_type == "room":
                found = await api.get_room_member_profile(
                    chat_id, user_id, _request_timeout=timeout
                )
            else:
                found = await api.get_profile(user_id, _request_timeout=timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            self._count("profile_failed")  # the reply still goes out, without the name
            raise
        except (aiohttp.ClientError, TimeoutError):
            self._count("profile_failed")
            raise
        self._count("profile_fetched")
        return Profile(name=found.display_name)

    async def media_fetch(
        self, message: InboundMessage, attachment: Attachment
    ) -> MediaFetch | None:
        """LINE's content API for a file someone sent (connectors/line/content.py)."""
        bot = self._bot_for(message)
        return None if bot is None else content_fetch(bot.config, attachment)

    async def show_typing(self, message: InboundMessage) -> bool:
        """LINE's loading animation while the agent answers: one-to-one chats only (LINE
        has none for groups and rooms). Called by the worker in a task of its own."""
        context = message.reply_context
        bot = self._bot_for(message)
        if (
            bot is None
            or not bot.config.loading_indicator
            or not isinstance(context, LineReplyContext)
            or context.source_type != "user"
        ):
            return False
        request = ShowLoadingAnimationRequest(
            chat_id=context.source_id, loading_seconds=bot.config.loading_seconds
        )
        await self._api(bot).show_loading_animation(
            request,
            _request_timeout=aiohttp.ClientTimeout(total=bot.config.request_timeout_seconds),
        )
        return True

    # -- outbound ----------------------------------------------------------------------------------
    def _bot_for(self, message: OutboundMessage | InboundMessage) -> _Bot | None:
        context = message.reply_context
        if not isinstance(context, LineReplyContext):
            return None
        bot = self._by_destination.get(context.destination)
        if bot is None or bot.tenant != message.conversation.tenant:
            return None
        return bot

    async def send(self, message: OutboundMessage) -> DeliveryReceipt:
        context = message.reply_context
        bot = self._bot_for(message)
        if bot is None or not isinstance(context, LineReplyContext):
            raise PermanentDeliveryError(
                "no LINE channel for this conversation's destination",
                code=DeliveryFailure.NO_CHANNEL,
            )
        batches = message_batches(
            line_messages(message, link=self.context.media.link, on_media=self._count_media)
        )
        if not batches:
            raise PermanentDeliveryError("nothing to send", code=DeliveryFailure.EMPTY)
        store, keyspace = self.context.store, self.context.keyspace
        conv_key = message.conversation.key
        replied_key = keyspace.line_replied(conv_key, message.idempotency_key)
        message_ids: list[str] = []
        via: list[str] = []
        start = 0
        if await store.get_record(replied_key) is not None:
            via.append("reply")  # an earlier attempt already answered batch 0 by reply
            start = 1
        elif await self._reply_first(bot, message, context, batches[0], replied_key, message_ids):
            via.append("reply")
            start = 1
        for index in range(start, len(batches)):
            via.append(await self._push(bot, message, context, index, batches[index], message_ids))
        return DeliveryReceipt(
            outbound_id=message.id,
            idempotency_key=message.idempotency_key,
            channel=Channel.LINE,
            status="sent",
            platform_message_id=message_ids[0] if message_ids else None,
            detail={"via": via, "calls": len(batches), "message_ids": message_ids},
        )

    def _count_media(self, outcome: str) -> None:
        self.context.metrics.media.labels("line", "out", outcome).inc()

    def _reply_token_fresh(self, bot: _Bot, message: OutboundMessage, token: str | None) -> bool:
        if not token or message.inbound_received_at is None:
            return False
        age = (utcnow() - message.inbound_received_at).total_seconds()
        return age < REPLY_TOKEN_LIFETIME_SECONDS - bot.config.reply_token_margin_seconds

    async def _reply_first(
        self,
        bot: _Bot,
        message: OutboundMessage,
        context: LineReplyContext,
        batch: list[Any],
        replied_key: str,
        message_ids: list[str],
    ) -> bool:
        """Send batch 0 with the reply token if usable; False means: push it instead."""
        token = context.reply_token
        if token is None:
            return False
        if not self._reply_token_fresh(bot, message, token):
            self._count("reply_token_stale")
            return False
        store, ttl = self.context.store, self.context.config.store.dedupe_ttl_seconds
        claim_key = self.context.keyspace.line_reply_token(message.conversation.key, token)
        holder = message.idempotency_key.encode()
        try:
            won = await store.claim(claim_key, ttl=_REPLY_CLAIM_TTL, holder=holder)
        except StoreError:
            # The claim may have been written; this process knows it sent nothing with it.
            self._remember_unused(claim_key)
            raise
        if not won and claim_key in self._unused_claims:
            del self._unused_claims[claim_key]
            won = await store.get_record(claim_key) == holder  # ours, and never used
        if not won:
            ours = await store.get_record(claim_key) == holder
            if ours and message.replayed:
                # The operator replayed the outcome_unknown letter: whatever happened to
                # the reply, the token is spent either way. Push it.
                self._count("reply_replayed_as_push")
                return False
            if ours:
                # This very message took the token in an attempt that never recorded how
                # its reply went (the process died, or the record failed): LINE may have
                # shown it, and a push now could answer twice.
                self._count("reply_outcome_unknown")
                raise PermanentDeliveryError(
                    "an earlier attempt sent this reply and its outcome was not recorded; "
                    "it may have been shown",
                    code=DeliveryFailure.OUTCOME_UNKNOWN,
                )
            self._count("reply_token_used")  # an earlier part of this answer used it
            return False
        request = ReplyMessageRequest(reply_token=token, messages=batch)
        timeout = aiohttp.ClientTimeout(total=bot.config.request_timeout_seconds)
        try:
            # A reply has no retry key: one that broke off may have been shown (outcome_unknown).
            async with map_delivery_errors("LINE reply", idempotent=False, read=[read_line]):
                try:
                    response = await self._api(bot).reply_message_with_http_info(
                        request, _request_timeout=timeout
                    )
                except ApiException as exc:
                    if int(exc.status or 0) == 400 and "reply token" in line_body_text(exc).lower():
                        self._count("reply_token_rejected")  # expired or used at LINE: push
                        return False
                    raise
        except TransientDeliveryError as exc:
            if exc.code in (DeliveryFailure.RATE_LIMITED, DeliveryFailure.NETWORK):
                # Refused, or never reached LINE: the token is unused, so the retry may use it.
                self._remember_unused(claim_key)
                await store.delete([claim_key])
                self._unused_claims.pop(claim_key, None)
            else:
                # LINE answered with an error (5xx): nothing was shown, but the token may be
                # spent. The retry pushes; the claim no longer names this message, so the
                # retry does not take it for a reply whose outcome was never recorded.
                await store.put_record(claim_key, _REPLY_FAILED, ttl=_REPLY_CLAIM_TTL)
            raise
        await record_until_stored(
            lambda: store.put_record(replied_key, b"1", ttl=ttl), event="line.record_retry"
        )
        self._count("reply")
        message_ids.extend(m.id for m in response.data.sent_messages or [])
        return True

    async def _push(
        self,
        bot: _Bot,
        message: OutboundMessage,
        context: LineReplyContext,
        index: int,
        batch: list[Any],
        message_ids: list[str],
    ) -> str:
        await self._reserve_push(message, index)
        request = PushMessageRequest(to=context.source_id, messages=batch)
        timeout = aiohttp.ClientTimeout(total=bot.config.request_timeout_seconds)
        # Safe to retry whatever broke: LINE accepts one request per retry key, 409 after.
        async with map_delivery_errors("LINE push", idempotent=True, read=[read_line]):
            try:
                response = await self._api(bot).push_message_with_http_info(
                    request,
                    x_line_retry_key=push_retry_key(message.idempotency_key, index),
                    _request_timeout=timeout,
                )
            except ApiException as exc:
                if int(exc.status or 0) != 409:
                    raise
                # Same retry key already accepted (an earlier attempt timed out): delivered.
                self._count("push_already_accepted")
                await self._count_push(message.conversation.tenant)
                return "push"
        await self._count_push(message.conversation.tenant)
        message_ids.extend(m.id for m in response.data.sent_messages or [])
        return "push"

    async def _reserve_push(self, message: OutboundMessage, index: int) -> None:
        """Take one unit of the tenant's paid-push quota, once per batch however often retried."""
        store = self.context.store
        reserved = self.context.keyspace.line_push_reserved(
            message.conversation.key, message.idempotency_key, index
        )
        if not await store.claim(reserved, ttl=self.context.config.store.dedupe_ttl_seconds):
            return  # an earlier attempt of this push already holds its unit
        if self._quota_policy is None:
            self._quota_policy = QuotaPolicy.from_context(self.context)
        if not await self._quota_policy.allow_paid_push(message.conversation.tenant):
            await store.delete([reserved])
            self._count("push_over_quota")
            raise PermanentDeliveryError(
                "the tenant's monthly LINE push quota is used up",
                code=DeliveryFailure.QUOTA_EXCEEDED,
            )

    async def _count_push(self, tenant: str) -> None:
        """Pushes are billed to the tenant: a metric and a per-day usage counter for quotas."""
        self._count("push")
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        key = self.context.keyspace.line_push_usage(tenant, day)
        await self.context.store.incr(key, ttl=_USAGE_TTL)
