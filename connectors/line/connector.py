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
accepted once (LINE answers 409 to the repeat, which counts as delivered).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    ImageMessage,
    PostbackAction,
    PushMessageRequest,
    QuickReply,
    QuickReplyItem,
    ReplyMessageRequest,
    Sender,
    ShowLoadingAnimationRequest,
    TextMessage,
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
from connectors.line.edge import SIGNATURE_HEADER, admit_event, signature_matches
from connectors.line.parse import line_message
from gateway.config import ChannelConfig, TenantConfig
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
from gateway.models import (
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
MAX_MESSAGES_PER_CALL = 5
MAX_TEXT_UTF16 = 5000
MAX_QUICK_REPLY_ITEMS = 13
MAX_ACTION_LABEL = 20
MAX_POSTBACK_DATA = 300
MAX_SENDER_NAME = 20
_REPLY_CLAIM_TTL = 2 * REPLY_TOKEN_LIFETIME_SECONDS
_USAGE_TTL = 62 * 86400  # long enough for a monthly quota window
_PROFILE_TTL = 6 * 3600.0
_PROFILE_FAILURE_TTL = 300.0
_PROFILE_CACHE_MAX = 10_000
# Fixed namespace so every process derives the same retry key from an idempotency key.
_RETRY_KEY_NAMESPACE = uuid.UUID("3f0c6a3e-5b1e-4f6c-9a57-7d1f6d0c2b41")

_SOURCE_KIND = {"image": "image", "video": "video", "audio": "audio", "file": "file"}


@dataclass(slots=True)
class _Bot:
    """A configured channel with its SDK objects."""

    tenant: str
    config: LineChannelConfig
    secret: bytes  # the channel secret, for the webhook signature
    client: Any = None  # AsyncApiClient, created inside the running loop
    api: Any = None  # AsyncMessagingApi


def utf16_len(text: str) -> int:
    """Length as LINE counts it: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_TEXT_UTF16) -> list[str]:
    """Split ``text`` in order into chunks of at most ``limit`` UTF-16 units.

    Cuts at the last newline (else space) in the second half of a chunk when there is one,
    never inside a surrogate pair.
    """
    chunks: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        units = 0
        cut = 0
        for index, char in enumerate(rest):
            units += 2 if ord(char) > 0xFFFF else 1
            if units > limit:
                break
            cut = index + 1
        window = rest[:cut]
        soft = window.rfind("\n")
        if soft < cut // 2:
            soft = window.rfind(" ")
        if soft >= cut // 2:
            cut = soft + 1
        chunk = rest[:cut].rstrip()
        if chunk:
            chunks.append(chunk)
        rest = rest[cut:].lstrip("\n")
    if rest.strip():
        chunks.append(rest)
    return chunks


def push_retry_key(idempotency_key: str, batch: int) -> str:
    """The X-Line-Retry-Key of one push call: the same for every retry, in every process."""
    return str(uuid.uuid5(_RETRY_KEY_NAMESPACE, f"{idempotency_key}#{batch}"))


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _body_text(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return str(body or "")


class LineConnector:
    channel: ClassVar[Channel] = Channel.LINE
    capabilities: ClassVar[ChannelCapabilities] = ChannelCapabilities(
        buttons=True,
        threads=False,
        max_text_length=MAX_TEXT_UTF16,
        markdown=False,
        attachments=True,
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
            if channel.destination in self._by_destination:
                # The destination is how a webhook finds its tenant: it must be unambiguous.
                raise ValueError(f"LINE destination {channel.destination} is configured twice")
            bot = _Bot(
                tenant=tenant.id,
                config=channel,
                secret=channel.channel_secret.get_secret_value().encode(),
            )
            self._bots.append(bot)
            self._by_destination[channel.destination] = bot
            self._by_name[(tenant.id, channel.name)] = bot
        self._background: set[asyncio.Task[None]] = set()
        self._profiles: dict[tuple[str, str], tuple[str | None, float]] = {}
        self._quota_policy: QuotaPolicy | None = None

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
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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
        key = self.context.keyspace.channel_record("line", f"pace:{bot.config.destination}")
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

        def respond(flags: Sequence[bool]) -> InboundResponse:
            for event, new in zip(admitted, flags, strict=True):
                if new and event.loading_chat is not None:
                    self._start_loading(bot, event.loading_chat)
            return _EMPTY_OK

        return InboundResult(encoded=[a.encoded for a in admitted], respond=respond)

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
            or message.reply_context.source_type != "user"
            or message.kind in (EventKind.UNFOLLOW, EventKind.LEAVE)
        ):
            return message
        # A display name so personas can greet people by name (cached per process).
        name = await self._display_name(bot, message.sender.id)
        if name is None:
            return message
        sender = message.sender.model_copy(update={"display_name": name})
        return message.model_copy(update={"sender": sender})

    async def _display_name(self, bot: _Bot, user_id: str) -> str | None:
        loop = asyncio.get_running_loop()
        cache_key = (bot.config.destination, user_id)
        cached = self._profiles.get(cache_key)
        if cached is not None and cached[1] > loop.time():
            return cached[0]
        name: str | None = None
        ttl = _PROFILE_FAILURE_TTL
        try:
            profile = await self._api(bot).get_profile(
                user_id,
                _request_timeout=aiohttp.ClientTimeout(total=bot.config.profile_timeout_seconds),
            )
        except (ApiException, aiohttp.ClientError, TimeoutError):
            self._count("profile_failed")  # the reply still goes out, without the name
        else:
            name, ttl = profile.display_name, _PROFILE_TTL
            self._count("profile_fetched")
        if len(self._profiles) >= _PROFILE_CACHE_MAX:
            self._profiles.clear()
        self._profiles[cache_key] = (name, loop.time() + ttl)
        return name

    def _start_loading(self, bot: _Bot, chat_id: str) -> None:
        """Show the typing indicator in a 1:1 chat while the agent works (after the ack)."""
        task = asyncio.get_running_loop().create_task(self._show_loading(bot, chat_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _show_loading(self, bot: _Bot, chat_id: str) -> None:
        request = ShowLoadingAnimationRequest(
            chat_id=chat_id, loading_seconds=bot.config.loading_seconds
        )
        try:
            await self._api(bot).show_loading_animation(
                request,
                _request_timeout=aiohttp.ClientTimeout(total=bot.config.request_timeout_seconds),
            )
        except (ApiException, aiohttp.ClientError, TimeoutError):
            self._count("loading_failed")  # cosmetic: the reply is unaffected
        else:
            self._count("loading_started")

    # -- outbound ----------------------------------------------------------------------------------
    def _bot_for(self, message: OutboundMessage) -> _Bot | None:
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
                "no LINE channel for this conversation's destination", code="no_channel"
            )
        batches = _batches(_line_messages(message))
        if not batches:
            raise PermanentDeliveryError("nothing to send", code="empty")
        store, keyspace = self.context.store, self.context.keyspace
        conv_key = message.conversation.key
        replied_key = keyspace.conversation_record(
            conv_key, f"line_replied:{message.idempotency_key}"
        )
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
        claim_key = self.context.keyspace.conversation_record(
            message.conversation.key, f"line_reply_token:{token}"
        )
        if not await store.claim(claim_key, ttl=_REPLY_CLAIM_TTL):
            self._count("reply_token_used")  # an earlier part of this answer used it
            return False
        request = ReplyMessageRequest(reply_token=token, messages=batch)
        timeout = aiohttp.ClientTimeout(total=bot.config.request_timeout_seconds)
        try:
            response = await self._api(bot).reply_message_with_http_info(
                request, _request_timeout=timeout
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            if status == 400 and "reply token" in _body_text(exc).lower():
                self._count("reply_token_rejected")  # expired or used at LINE: push instead
                return False
            if status == 429:
                # Refused, so the token is still unused: let the retry try it again.
                await store.delete([claim_key])
            raise _classify(exc, "reply") from exc
        except aiohttp.ClientConnectorError as exc:
            await store.delete([claim_key])  # never reached LINE: the token is unused
            raise TransientDeliveryError("LINE unreachable", code="network") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            # A reply has no retry key: LINE may have shown it. Do not risk a second copy.
            raise PermanentDeliveryError(
                f"reply outcome unknown: {type(exc).__name__}", code="outcome_unknown"
            ) from exc
        await _keep_trying(lambda: store.put_record(replied_key, b"1", ttl=ttl))
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
        try:
            response = await self._api(bot).push_message_with_http_info(
                request,
                x_line_retry_key=push_retry_key(message.idempotency_key, index),
                _request_timeout=timeout,
            )
        except ApiException as exc:
            if int(exc.status or 0) == 409:
                # Same retry key already accepted (an earlier attempt timed out): delivered.
                self._count("push_already_accepted")
                await self._count_push(message.conversation.tenant)
                return "push"
            raise _classify(exc, "push") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Safe to retry: LINE accepts one request per retry key and answers 409 after.
            raise TransientDeliveryError(
                f"push failed: {type(exc).__name__}", code="network"
            ) from exc
        await self._count_push(message.conversation.tenant)
        message_ids.extend(m.id for m in response.data.sent_messages or [])
        return "push"

    async def _reserve_push(self, message: OutboundMessage, index: int) -> None:
        """Take one unit of the tenant's paid-push quota, once per batch however often retried."""
        store = self.context.store
        reserved = self.context.keyspace.conversation_record(
            message.conversation.key, f"line_push_reserved:{message.idempotency_key}#{index}"
        )
        if not await store.claim(reserved, ttl=self.context.config.store.dedupe_ttl_seconds):
            return  # an earlier attempt of this push already holds its unit
        if self._quota_policy is None:
            self._quota_policy = QuotaPolicy.from_context(self.context)
        if not await self._quota_policy.allow_paid_push(message.conversation.tenant):
            await store.delete([reserved])
            self._count("push_over_quota")
            raise PermanentDeliveryError(
                "the tenant's monthly LINE push quota is used up", code="push_quota"
            )

    async def _count_push(self, tenant: str) -> None:
        """Pushes are billed to the tenant: a metric and a per-day usage counter for quotas."""
        self._count("push")
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        key = self.context.keyspace.tenant_record(tenant, f"usage:line_push:{day}")
        await self.context.store.incr(key, ttl=_USAGE_TTL)


async def _keep_trying(write: Callable[[], Awaitable[None]]) -> None:
    """A store write recording that LINE already took a reply: retried while the store is
    down, because letting the error out would make the next attempt push a second copy.
    The dispatcher's delivery timeout bounds the wait."""
    delay = 0.1
    while True:
        try:
            await write()
            return
        except StoreError as exc:
            log.warning("line.record_retry", error=str(exc))
        await asyncio.sleep(delay)
        delay = min(2 * delay, 2.0)


def _classify(exc: ApiException, call: str) -> TransientDeliveryError | PermanentDeliveryError:
    status = int(exc.status or 0)
    if status == 429 or status >= 500:
        return TransientDeliveryError(
            f"LINE {call} answered {status}",
            retry_after=_retry_after(exc.headers),
            code=str(status),
        )
    detail = ""
    try:
        detail = str(json.loads(_body_text(exc)).get("message", ""))[:200]
    except (ValueError, AttributeError):
        detail = ""
    return PermanentDeliveryError(
        f"LINE {call} answered {status}" + (f": {detail}" if detail else ""), code=str(status)
    )


# -- building outbound message objects -------------------------------------------------------------
def _sender(message: OutboundMessage) -> Any:
    persona = message.persona
    name: str | None = persona.display_name[:MAX_SENDER_NAME]
    if name is not None and "line" in name.lower():
        name = None  # LINE refuses sender names containing its own name
    icon = persona.icon_url
    if icon is not None and not icon.startswith("https://"):
        icon = None  # LINE shows only https icons
    if name is None and icon is None:
        return None
    return Sender(name=name, icon_url=icon)


def _quick_reply(message: OutboundMessage) -> Any:
    items = [
        QuickReplyItem(
            action=PostbackAction(
                label=button.label[:MAX_ACTION_LABEL],
                data=button.value,
                display_text=button.label,
            )
        )
        for button in message.buttons
    ]
    return QuickReply(items=items)


def _buttons_fit(message: OutboundMessage) -> bool:
    return len(message.buttons) <= MAX_QUICK_REPLY_ITEMS and all(
        0 < len(b.value) <= MAX_POSTBACK_DATA for b in message.buttons
    )


def _line_messages(message: OutboundMessage) -> list[Any]:
    """LINE message objects for one outbound message, in order; buttons as quick replies."""
    quick = bool(message.buttons) and _buttons_fit(message)
    text = message.text if quick or not message.buttons else message.text_with_buttons()
    sender = _sender(message)
    objects: list[Any] = [TextMessage(text=chunk, sender=sender) for chunk in split_text(text)]
    for attachment in message.attachments:
        url = attachment.url
        if attachment.kind == "image" and url and url.startswith("https://"):
            objects.append(
                ImageMessage(original_content_url=url, preview_image_url=url, sender=sender)
            )
        elif url:
            label = attachment.name or attachment.kind
            objects.append(TextMessage(text=f"{label}: {url}", sender=sender))
    if quick and objects:
        objects[-1].quick_reply = _quick_reply(message)
    return objects


def render(message: OutboundMessage) -> list[dict[str, Any]]:
    """The LINE message objects :meth:`LineConnector.send` sends for ``message``, as the
    JSON the Messaging API receives: what the console previews."""
    return [obj.to_dict() for obj in _line_messages(message)]


def _batches(objects: list[Any]) -> list[list[Any]]:
    size = MAX_MESSAGES_PER_CALL
    return [objects[i : i + size] for i in range(0, len(objects), size)]
