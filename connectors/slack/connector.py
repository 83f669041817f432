"""Slack: the Events API, slash commands and button clicks over HTTP or Socket Mode, and
replies through the Web API (``chat.postMessage`` / ``chat.postEphemeral``) or a command's
``response_url``.

Inbound HTTP routes (one set for every workspace; the payload's ``team_id`` /
``enterprise_id`` picks the tenant):

- ``POST /slack/events``        Events API: url_verification, message, app_mention
- ``POST /slack/commands``      slash commands (acked with an empty 200 at once)
- ``POST /slack/interactivity`` block_actions (a persona button's value comes back)

Every request is verified first with slack_sdk's :class:`SignatureVerifier` (v0 HMAC over
``v0:timestamp:body``, five minutes either way) against each configured signing secret; only
then is the body parsed. Socket Mode (slack_sdk's aiohttp client) feeds the same parsers and
acknowledges an envelope only after ``context.ingest.submit`` has made it durable.

Dedupe keys: a message is identified by ``team:channel:ts``, so a retried event
(``X-Slack-Retry-Num``), a Socket Mode redelivery and the ``message`` + ``app_mention`` pair
that Slack sends for one mention all collapse into one inbound message.

Threads the gateway names (the operators' desk, see :mod:`gateway.handoff`): a message to
post whose ``conversation.thread`` is not a Slack timestamp (``handoff-…``) goes into the
Slack thread mapped to that name; the first one posted starts the thread at the channel's
top level, and the map (our thread → ``thread_ts`` and back) is kept in the connector's
channel records. A person's message in such a thread comes back with ``thread`` = our name,
whatever the ``channel_messages`` setting, with the person's Slack user id and display name
(``users.info``, cached) as the sender. The bot's own posts there and edits are ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs

import aiohttp
from pydantic import Field, model_validator
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from connectors.base import (
    FORM,
    JSON,
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
    PlatformAnswer,
    answer_error,
    map_delivery_errors,
    record_until_stored,
    utf16_fit,
    utf16_len,
)
from connectors.send_policy.slack import SLACK_CODES, read_slack
from connectors.slack.desk import ThreadMap, UserNames, is_slack_ts
from gateway.config import ChannelConfig, Secret, TenantConfig
from gateway.envelope import RawEvent
from gateway.errors import (
    EventParseError,
    InboundError,
    IngestUnavailableError,
    PayloadError,
    PermanentDeliveryError,
    UnknownTenantError,
    VerificationError,
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
    SlackReplyContext,
)
from gateway.nesting import value_too_deep
from gateway.observability import get_logger

__all__ = [
    "SLACK_MAX_TEXT",
    "SLACK_SECTION_MAX",
    "SlackChannelConfig",
    "SlackConnector",
    "escape",
    "render",
    "split_text",
    "unescape",
]

log = get_logger(__name__)

# The SDK logs request and response bodies (message text) at DEBUG. Its loggers are pinned
# to INFO so a gateway running at debug level still never writes message text.
_sdk_log = logging.getLogger("connectors.slack.sdk")
_sdk_log.setLevel(logging.INFO)

SLACK_MAX_TEXT = 40_000  # chat.postMessage truncates (or refuses, msg_too_long) above this
SLACK_SECTION_MAX = 3_000  # a section block's text; above it Slack answers invalid_blocks
_MAX_BUTTONS = 25  # elements in one actions block
_BUTTON_LABEL_MAX = 75
_BUTTON_VALUE_MAX = 2_000
_REPLAY_WINDOW = 60 * 5  # what SignatureVerifier enforces; used here only to label rejections
_ACCEPTED_SUBTYPES = frozenset({None, "file_share", "thread_broadcast", "me_message"})
_BUTTON_ACTION_PREFIX = "flowbiz_button_"
DEFAULT_MAX_MESSAGE_CHARS = 4_000


class SlackChannelConfig(ChannelConfig):
    """One Slack workspace (or Enterprise Grid org) of a tenant, with its bot token."""

    kind: Literal["slack"] = "slack"
    team_id: str | None = Field(default=None, pattern=r"^[A-Z0-9]+$")
    enterprise_id: str | None = Field(default=None, pattern=r"^[A-Z0-9]+$")
    signing_secret: Secret | None = None  # required for the HTTP routes
    bot_token: Secret  # xoxb-…
    app_token: Secret | None = None  # xapp-…, for Socket Mode
    socket_mode: bool = False
    # In channels, answer in a thread under the message (DMs stay flat unless the user threads).
    reply_in_thread: bool = True
    # In channels: answer only when mentioned (and in threads already answered), or everything.
    channel_messages: Literal["mentions", "all"] = "mentions"
    command_response: Literal["ephemeral", "in_channel"] = "ephemeral"
    command_reply_via: Literal["response_url", "web_api"] = "response_url"
    handle_edits: bool = False  # treat message_changed as a new message
    bot_user_id: str | None = None  # learned with auth.test at start when not given
    bot_id: str | None = None
    max_message_chars: int = Field(default=DEFAULT_MAX_MESSAGE_CHARS, ge=200, le=SLACK_MAX_TEXT)
    response_url_prefixes: tuple[str, ...] = ("https://hooks.slack.com/",)
    request_timeout_seconds: float = Field(default=10, gt=0)
    messages_per_second: float = Field(default=1.0, gt=0)  # per Slack channel, as Slack asks
    burst: float = Field(default=3.0, ge=1)
    socket_ping_interval_seconds: float = Field(default=5, gt=0)
    # Look up the display name of a person writing in an operators' desk thread (users.info,
    # scope users:read) when the event does not carry it; the customer sees it as a signature.
    fetch_user_names: bool = True
    user_name_timeout_seconds: float = Field(default=1.5, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> SlackChannelConfig:
        if self.team_id is None and self.enterprise_id is None:
            raise ValueError("give team_id (or enterprise_id for an org-wide install)")
        if self.socket_mode and self.app_token is None:
            raise ValueError("socket_mode needs app_token (an xapp- app-level token)")
        if not self.socket_mode and self.signing_secret is None:
            raise ValueError("signing_secret is needed to verify Slack's HTTP requests")
        return self

    def serves(self, reply_context: object) -> bool:
        """A message from this workspace (or, org-wide, this Enterprise Grid org)."""
        if not isinstance(reply_context, SlackReplyContext):
            return False
        if self.team_id is not None:
            return reply_context.team_id == self.team_id
        return reply_context.enterprise_id == self.enterprise_id

    @property
    def web_api_base_url(self) -> str:
        return self.api_base_url or "https://slack.com/api/"


@dataclass(slots=True)
class _Workspace:
    tenant: str
    config: SlackChannelConfig
    bot_user_id: str | None
    bot_id: str | None
    client: AsyncWebClient | None = None

    @property
    def label(self) -> str:
        return f"{self.tenant}/{self.config.name}"

    def matches(self, team_id: str | None, enterprise_id: str | None) -> int:
        """0 = not this workspace; 2 = the same team; 1 = an org-wide install of the org."""
        cfg = self.config
        if cfg.enterprise_id is not None and enterprise_id not in (None, cfg.enterprise_id):
            return 0
        if cfg.team_id is not None:
            return 2 if cfg.team_id == team_id else 0
        return 1 if cfg.enterprise_id == enterprise_id else 0


@dataclass(slots=True)
class _SecretGroup:
    verifier: SignatureVerifier
    workspaces: list[_Workspace] = field(default_factory=list)


@dataclass(slots=True)
class _SocketListener:
    app_token: str
    workspaces: list[_Workspace]
    name: str
    client: SocketModeClient | None = None
    connecting: asyncio.Task[None] | None = None
    watching: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class _Post:
    """One Slack message to post: a chunk of the reply, with blocks on the last one."""

    text: str
    blocks: tuple[Block, ...] = ()


class SlackConnector:
    channel: ClassVar[Channel] = Channel.SLACK
    capabilities: ClassVar[ChannelCapabilities] = ChannelCapabilities(
        buttons=True,
        threads=True,
        max_text_length=SLACK_MAX_TEXT,
        markdown=True,
        attachments=True,
    )
    config_model: ClassVar[type[ChannelConfig]] = SlackChannelConfig

    def __init__(
        self,
        *,
        context: ConnectorContext,
        channels: Sequence[tuple[TenantConfig, ChannelConfig]],
        clock: Clock | None = None,
    ) -> None:
        self.context = context
        self._clock = clock or Clock()
        self._workspaces: list[_Workspace] = []
        self._by_secret: dict[str, _SecretGroup] = {}
        self._sockets: dict[str, _SocketListener] = {}
        self._threads = ThreadMap(context)
        self._names = UserNames()
        for tenant, channel in channels:
            if not isinstance(channel, SlackChannelConfig):
                continue
            ws = _Workspace(
                tenant=tenant.id,
                config=channel,
                bot_user_id=channel.bot_user_id,
                bot_id=channel.bot_id,
            )
            self._workspaces.append(ws)
            if channel.signing_secret is not None:
                secret = channel.signing_secret.get_secret_value()
                group = self._by_secret.get(secret)
                if group is None:
                    group = _SecretGroup(SignatureVerifier(secret, clock=self._clock))
                    self._by_secret[secret] = group
                group.workspaces.append(ws)
            if channel.socket_mode and channel.app_token is not None:
                token = channel.app_token.get_secret_value()
                listener = self._sockets.get(token)
                if listener is None:
                    listener = _SocketListener(token, [], name=f"slack_socket:{ws.label}")
                    self._sockets[token] = listener
                listener.workspaces.append(ws)

    # -- lifecycle ---------------------------------------------------------------------------
    def routes(self) -> Sequence[Route]:
        return [
            Route("POST", "/slack/events", self.events, "slack.events", content_types=JSON),
            Route("POST", "/slack/commands", self.commands, "slack.commands", content_types=FORM),
            Route(
                "POST",
                "/slack/interactivity",
                self.interactivity,
                "slack.interactivity",
                content_types=FORM,
                json_fields=("payload",),
            ),
        ]

    async def start(self) -> None:
        await asyncio.gather(
            *(self._learn_identity(ws) for ws in self._workspaces if ws.bot_user_id is None)
        )
        for listener in self._sockets.values():
            self._start_socket(listener)

    async def stop(self) -> None:
        for listener in self._sockets.values():
            await self._stop_socket(listener)

    async def parse(self, event: RawEvent) -> InboundMessage | None:
        raise EventParseError("this connector stores parsed messages", reason="not_raw")

    def pacing(self, message: OutboundMessage) -> Pacing | None:
        ctx = message.reply_context
        if not isinstance(ctx, SlackReplyContext):
            return None
        ws = self._workspace_for(message.conversation.tenant, ctx)
        if ws is None:
            return None
        return Pacing(
            key=self.context.keyspace.slack_pace(ctx.team_id, ctx.channel_id),
            rate=ws.config.messages_per_second,
            burst=ws.config.burst,
        )

    def _count(self, event: str) -> None:
        self.context.metrics.channel_events.labels(Channel.SLACK.value, event).inc()

    def _client(self, ws: _Workspace) -> AsyncWebClient:
        """The workspace's Web API client, made on first use inside the running loop.

        It rides on the app's shared HTTP session (closed by the app), and has no SDK retry
        handlers: the SDK would resend a chat.postMessage whose connection dropped after the
        request was written, which can post twice. Retries are the dispatcher's decision.
        """
        if ws.client is None:
            ws.client = AsyncWebClient(
                token=ws.config.bot_token.get_secret_value(),
                base_url=ws.config.web_api_base_url,
                session=self.context.http,
                retry_handlers=[],
                logger=_sdk_log,
            )
        return ws.client

    async def _learn_identity(self, ws: _Workspace) -> None:
        """auth.test tells the bot's user id and bot id, to ignore its own messages."""
        try:
            async with asyncio.timeout(ws.config.request_timeout_seconds):
                result = await self._client(ws).auth_test()
        except SlackApiError as exc:
            self._count("auth_test_failed")
            log.warning("slack.auth_test_failed", workspace=ws.label, code=_error_code(exc))
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._count("auth_test_failed")
            log.warning("slack.auth_test_failed", workspace=ws.label, code=type(exc).__name__)
            return
        user_id, bot_id = result.get("user_id"), result.get("bot_id")
        ws.bot_user_id = user_id if isinstance(user_id, str) else None
        ws.bot_id = ws.bot_id or (bot_id if isinstance(bot_id, str) else None)
        log.info("slack.identity_learned", workspace=ws.label, bot_user_id=ws.bot_user_id)

    # -- verification -----------------------------------------------------------------------
    def verify(self, request: InboundRequest) -> list[_Workspace]:
        """The workspaces whose signing secret signed this request; VerificationError if none.

        Runs before anything in the body is read. Every configured secret is tried (each
        check is constant-time), because the team that sent the request is only named inside
        the body.
        """
        timestamp = request.header("x-slack-request-timestamp")
        signature = request.header("x-slack-signature")
        if not timestamp or not signature:
            raise VerificationError("missing Slack signature headers", reason="missing_signature")
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise VerificationError("bad Slack timestamp", reason="bad_timestamp") from None
        if abs(self._clock.now() - sent_at) > _REPLAY_WINDOW:
            raise VerificationError("stale Slack timestamp", reason="stale_timestamp")
        try:
            request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise VerificationError("body is not UTF-8", reason="bad_signature") from None
        matched: list[_Workspace] = []
        for group in self._by_secret.values():
            if group.verifier.is_valid(body=request.body, timestamp=timestamp, signature=signature):
                matched.extend(group.workspaces)
        if not matched:
            raise VerificationError("Slack signature mismatch", reason="bad_signature")
        return matched

    def _select(
        self, candidates: Sequence[_Workspace], team_id: str | None, enterprise_id: str | None
    ) -> _Workspace:
        best: _Workspace | None = None
        score = 0
        for ws in candidates:
            found = ws.matches(team_id, enterprise_id)
            if found > score:
                best, score = ws, found
        if best is None:
            raise UnknownTenantError("no Slack channel is configured for this workspace")
        return best

    def _workspace_for(self, tenant: str, ctx: SlackReplyContext) -> _Workspace | None:
        candidates = [ws for ws in self._workspaces if ws.tenant == tenant]
        try:
            return self._select(candidates, ctx.team_id, ctx.enterprise_id)
        except UnknownTenantError:
            return None

    # -- inbound: HTTP routes ----------------------------------------------------------------
    async def events(self, request: InboundRequest) -> InboundResult:
        candidates = self.verify(request)
        body = _json_object(request.body)
        envelope = body.get("type")
        if envelope == "url_verification":
            challenge = body.get("challenge")
            if not isinstance(challenge, str):
                raise PayloadError("url_verification without a challenge")
            self._count("url_verification")
            return InboundResult(response=InboundResponse.json({"challenge": challenge}))
        if envelope != "event_callback":
            self._count("ignored_envelope")
            return InboundResult()
        if request.header("x-slack-retry-num"):
            self._count("retry_received")
        team_id, enterprise_id = _event_source(body)
        ws = self._select(candidates, team_id, enterprise_id)
        return InboundResult(messages=await self._from_event_callback(ws, body))

    async def commands(self, request: InboundRequest) -> InboundResult:
        fields = _form(request.body)
        if fields.get("ssl_check") == "1":
            return InboundResult()  # Slack's certificate probe: nothing to read or store
        candidates = self.verify(request)
        ws = self._select(candidates, fields.get("team_id"), fields.get("enterprise_id"))
        return InboundResult(messages=[self._command(ws, fields)])

    async def interactivity(self, request: InboundRequest) -> InboundResult:
        candidates = self.verify(request)
        raw = _form(request.body).get("payload")
        if raw is None:
            raise PayloadError("interactivity request without a payload field")
        payload = _json_object(raw.encode())
        team_id, enterprise_id = _interaction_source(payload)
        ws = self._select(candidates, team_id, enterprise_id)
        return InboundResult(messages=self._actions(ws, payload))

    # -- inbound: parsing (shared by HTTP and Socket Mode) -------------------------------------
    async def _from_event_callback(
        self, ws: _Workspace, body: dict[str, Any]
    ) -> list[InboundMessage]:
        event = body.get("event")
        if not isinstance(event, dict):
            raise PayloadError("event_callback without an event object")
        if ws.bot_user_id is None:
            ws.bot_user_id = _authorized_bot_user(body)
        etype = event.get("type")
        if etype == "app_mention":
            if self._from_a_bot(ws, event):
                self._count("ignored_bot")
                return []
            # The message event for the same ts may come second: both must name the same thread.
            desk_thread = await self._desk_thread(ws, event)
            message = self._message(ws, body, event, thread=desk_thread)
            if message is not None and desk_thread is not None:
                message = await self._named(ws, message)
            return [message] if message is not None else []
        if etype != "message":
            self._count("ignored_event")
            return []
        subtype = event.get("subtype")
        edited_ts: str | None = None
        if subtype == "message_changed":
            inner = event.get("message")
            if not ws.config.handle_edits or not isinstance(inner, dict):
                self._count("ignored_edit")
                return []
            edited = inner.get("edited")
            edited_ts = _s(edited, "ts") if isinstance(edited, dict) else None
            if edited_ts is None:  # an unfurl or similar change, not a person's edit
                self._count("ignored_edit")
                return []
            event = {
                **inner,
                "channel": event.get("channel"),
                "channel_type": _s(event, "channel_type"),
            }
            subtype = inner.get("subtype")
        if self._from_a_bot(ws, event):
            self._count("ignored_bot")
            return []
        if subtype not in _ACCEPTED_SUBTYPES:
            self._count("ignored_subtype")
            return []
        desk_thread = await self._desk_thread(ws, event)
        if desk_thread is not None and edited_ts is not None:
            # The customer already has the first version; an edit is not a second message.
            self._count("ignored_desk_edit")
            return []
        if desk_thread is None and not await self._addressed(ws, event):
            self._count("ignored_not_addressed")
            return []
        message = self._message(ws, body, event, edited_ts=edited_ts, thread=desk_thread)
        if message is not None and desk_thread is not None:
            self._count("desk_reply")
            message = await self._named(ws, message)
        return [message] if message is not None else []

    @staticmethod
    def _from_a_bot(ws: _Workspace, event: dict[str, Any]) -> bool:
        # Most bot messages no longer carry subtype bot_message: bot_id is the reliable mark.
        if event.get("bot_id") or event.get("subtype") == "bot_message":
            return True
        return ws.bot_user_id is not None and event.get("user") == ws.bot_user_id

    # -- threads the gateway names (the operators' desk) ------------------------------------------
    async def _desk_thread(self, ws: _Workspace, event: dict[str, Any]) -> str | None:
        """Our name for the Slack thread this reply is in, when the gateway started it."""
        channel_id, ts, thread_ts = _s(event, "channel"), _s(event, "ts"), _s(event, "thread_ts")
        if channel_id is None or thread_ts is None or thread_ts == ts:
            return None
        return await self._threads.thread_name(ws.tenant, channel_id, thread_ts)

    async def _named(self, ws: _Workspace, message: InboundMessage) -> InboundMessage:
        """The message with its sender's display name, when Slack can tell it."""
        if message.sender.display_name is not None or not ws.config.fetch_user_names:
            return message
        name = await self._user_name(ws, message.sender.id)
        if name is None:
            return message
        sender = message.sender.model_copy(update={"display_name": name})
        return message.model_copy(update={"sender": sender})

    async def _user_name(self, ws: _Workspace, user_id: str) -> str | None:
        async def look_up() -> dict[str, Any] | None:
            try:
                async with asyncio.timeout(ws.config.user_name_timeout_seconds):
                    result = await self._client(ws).users_info(user=user_id)
            except SlackApiError as exc:
                code = _error_code(exc)
            except (aiohttp.ClientError, TimeoutError) as exc:
                code = type(exc).__name__
            else:
                user = result.get("user")
                self._count("user_name_fetched")
                return user if isinstance(user, dict) else {}
            self._count("user_name_failed")
            log.info("slack.user_name_failed", workspace=ws.label, code=code)
            return None

        return await self._names.name(ws.label, user_id, look_up)

    async def _addressed(self, ws: _Workspace, event: dict[str, Any]) -> bool:
        """Whether a plain ``message`` event is meant for the bot."""
        channel_type = _s(event, "channel_type")
        channel_id = _s(event, "channel") or ""
        if channel_type == "im" or (channel_type is None and channel_id.startswith("D")):
            return True
        if ws.config.channel_messages == "all":
            return True
        text = _s(event, "text") or ""
        if ws.bot_user_id is not None and f"<@{ws.bot_user_id}" in text:
            return True  # the app_mention for the same ts collapses into this one
        ts, thread_ts = _s(event, "ts"), _s(event, "thread_ts")
        if thread_ts is None or thread_ts == ts or not channel_id:
            return False
        # A follow-up in a thread the bot already answered in: that conversation has state.
        conversation = ConversationKey(
            tenant=ws.tenant,
            channel=Channel.SLACK,
            conversation_id=channel_id,
            thread=thread_ts,
        )
        state = await self.context.store.get_state(self.context.keyspace.state(conversation.key))
        return state is not None

    def _message(
        self,
        ws: _Workspace,
        body: dict[str, Any],
        event: dict[str, Any],
        *,
        edited_ts: str | None = None,
        thread: str | None = None,
    ) -> InboundMessage | None:
        """``thread``: our name for the Slack thread (a desk thread), else its ``thread_ts``."""
        channel_id, ts, user = _s(event, "channel"), _s(event, "ts"), _s(event, "user")
        if channel_id is None or ts is None:
            raise PayloadError("message event without channel or ts")
        if user is None:
            self._count("ignored_no_user")
            return None
        team_id, enterprise_id = _event_source(body)
        team_id = team_id or _s(event, "team") or ws.config.team_id or ""
        channel_type = _s(event, "channel_type") or ("im" if channel_id.startswith("D") else None)
        thread_ts = _s(event, "thread_ts")
        in_dm = channel_type == "im"
        reply_thread = thread_ts or (ts if ws.config.reply_in_thread and not in_dm else None)
        text = _clean_text(_s(event, "text") or "", ws.bot_user_id)
        attachments = _files(event.get("files"))
        if not text and not attachments:
            self._count("ignored_empty")
            return None
        event_id = f"msg:{team_id}:{channel_id}:{ts}"
        if edited_ts is not None:
            event_id += f":edited:{edited_ts}"
        return InboundMessage(
            event_id=event_id,
            conversation=ConversationKey(
                tenant=ws.tenant,
                channel=Channel.SLACK,
                conversation_id=channel_id,
                thread=thread or reply_thread,
            ),
            sender=Participant(id=user, display_name=_profile_name(event)),
            kind=EventKind.MESSAGE,
            text=text,
            attachments=attachments,
            reply_context=SlackReplyContext(
                team_id=team_id,
                enterprise_id=enterprise_id,
                channel_id=channel_id,
                message_ts=ts,
                thread_ts=reply_thread,
                channel_type=channel_type,
            ),
            raw=body,
        )

    def _command(self, ws: _Workspace, fields: dict[str, str]) -> InboundMessage:
        channel_id, user_id = fields.get("channel_id"), fields.get("user_id")
        command = fields.get("command")
        if not channel_id or not user_id or not command:
            raise PayloadError("slash command without channel_id, user_id or command")
        text = fields.get("text", "")
        if command == self.context.config.routing.switch_command:
            text = f"{command} {text}".strip()  # /persona docs … is the persona switch itself
        trigger = fields.get("trigger_id")
        event_id = f"cmd:{trigger}" if trigger else "cmd:" + _digest(fields)
        ephemeral = ws.config.command_response == "ephemeral"
        self._count("slash_command")
        return InboundMessage(
            event_id=event_id,
            conversation=ConversationKey(
                tenant=ws.tenant, channel=Channel.SLACK, conversation_id=channel_id
            ),
            sender=Participant(id=user_id, display_name=fields.get("user_name") or None),
            kind=EventKind.COMMAND,
            text=text,
            reply_context=SlackReplyContext(
                team_id=fields.get("team_id") or ws.config.team_id or "",
                enterprise_id=fields.get("enterprise_id") or None,
                channel_id=channel_id,
                channel_type="im" if channel_id.startswith("D") else None,
                response_url=self._allowed_response_url(ws, fields.get("response_url")),
                command=command,
                ephemeral_user=user_id if ephemeral else None,
                response_type=ws.config.command_response,
            ),
            raw=dict(fields),
        )

    def _actions(self, ws: _Workspace, payload: dict[str, Any]) -> list[InboundMessage]:
        if payload.get("type") != "block_actions":
            self._count("ignored_interaction")
            return []
        actions = payload.get("actions")
        action = next(
            (
                a
                for a in (actions if isinstance(actions, list) else [])
                if isinstance(a, dict) and a.get("type") == "button" and _s(a, "value")
            ),
            None,
        )
        user = payload.get("user")
        user_id = _s(user, "id") if isinstance(user, dict) else None
        if action is None or user_id is None:
            self._count("ignored_interaction")
            return []
        container = payload.get("container")
        container = container if isinstance(container, dict) else {}
        channel = payload.get("channel")
        channel_id = (_s(channel, "id") if isinstance(channel, dict) else None) or _s(
            container, "channel_id"
        )
        if channel_id is None:
            raise PayloadError("block_actions without a channel")
        clicked = payload.get("message")
        clicked = clicked if isinstance(clicked, dict) else {}
        thread_ts = _s(clicked, "thread_ts") or _s(container, "thread_ts")
        team_id, enterprise_id = _interaction_source(payload)
        ephemeral = container.get("is_ephemeral") is True
        trigger = _s(payload, "trigger_id")
        event_id = (
            f"action:{trigger}" if trigger else f"action:{channel_id}:{_s(action, 'action_ts')}"
        )
        name = (_s(user, "name") or _s(user, "username")) if isinstance(user, dict) else None
        self._count("button_click")
        return [
            InboundMessage(
                event_id=event_id,
                conversation=ConversationKey(
                    tenant=ws.tenant,
                    channel=Channel.SLACK,
                    conversation_id=channel_id,
                    thread=thread_ts,
                ),
                sender=Participant(id=user_id, display_name=name),
                kind=EventKind.ACTION,
                text=_s(action, "value") or "",
                reply_context=SlackReplyContext(
                    team_id=team_id or ws.config.team_id or "",
                    enterprise_id=enterprise_id,
                    channel_id=channel_id,
                    message_ts=_s(container, "message_ts"),
                    thread_ts=thread_ts,
                    channel_type="im" if channel_id.startswith("D") else None,
                    response_url=(
                        self._allowed_response_url(ws, _s(payload, "response_url"))
                        if ephemeral
                        else None
                    ),
                    ephemeral_user=user_id if ephemeral else None,
                    response_type="ephemeral" if ephemeral else None,
                ),
                raw=payload,
            )
        ]

    def _allowed_response_url(self, ws: _Workspace, url: str | None) -> str | None:
        """A response_url is only posted to when it is Slack's (or a configured emulator's)."""
        if url is None:
            return None
        if url.startswith(ws.config.response_url_prefixes):
            return url
        self._count("response_url_refused")
        return None

    # -- inbound: Socket Mode ----------------------------------------------------------------
    def _start_socket(self, listener: _SocketListener) -> None:
        first = listener.workspaces[0].config
        listener.client = SocketModeClient(
            app_token=listener.app_token,
            web_client=AsyncWebClient(base_url=first.web_api_base_url, logger=_sdk_log),
            logger=_sdk_log,
            ping_interval=first.socket_ping_interval_seconds,
            auto_reconnect_enabled=True,
        )
        listener.client.socket_mode_request_listeners.append(
            partial(self._on_socket_request, listener)
        )
        # connect() retries until it succeeds; startup must not wait for Slack.
        # The SDK leaves connect()/close() unannotated; naming their type keeps mypy strict.
        connect: Callable[[], Coroutine[Any, Any, None]] = listener.client.connect
        listener.connecting = asyncio.create_task(connect())
        listener.watching = asyncio.create_task(self._watch_socket(listener))

    async def _watch_socket(self, listener: _SocketListener) -> None:
        """Publish the socket's health; the SDK reconnects by itself."""
        gauge = self.context.metrics.listener_up.labels(listener.name)
        gauge.set(0)
        up = False
        while True:
            assert listener.client is not None  # set before this task starts
            now_up = await listener.client.is_connected()
            if now_up != up:
                up = now_up
                gauge.set(1 if up else 0)
                self._count("socket_connected" if up else "socket_disconnected")
                log.info("slack.socket_state", listener=listener.name, up=up)
            await asyncio.sleep(0.2)

    async def _stop_socket(self, listener: _SocketListener) -> None:
        client = listener.client
        tasks: list[asyncio.Future[Any]] = [
            t for t in (listener.connecting, listener.watching) if t is not None
        ]
        for task in tasks:
            task.cancel()
        if client is not None:
            close: Callable[[], Coroutine[Any, Any, None]] = client.close
            await close()
            tasks += [
                t
                for t in (
                    client.message_processor,
                    client.current_session_monitor,
                    client.message_receiver,
                )
                if isinstance(t, asyncio.Future)
            ]
        # Wait for the cancelled tasks so none outlives the loop.
        await asyncio.gather(*tasks, return_exceptions=True)
        self.context.metrics.listener_up.labels(listener.name).set(0)
        listener.client = listener.connecting = listener.watching = None

    async def _on_socket_request(
        self,
        listener: _SocketListener,
        client: AsyncBaseSocketModeClient,
        request: SocketModeRequest,
    ) -> None:
        """Parse, make durable, then ack; without the ack Slack redelivers the envelope."""
        try:
            messages = await self._from_socket(listener, request)
            if messages:
                await self.context.ingest.submit(messages)
        except IngestUnavailableError:
            self._count("socket_not_acked")
            return
        except InboundError as exc:
            # Unusable envelopes are acked anyway, or Slack would resend them forever.
            self._count("socket_rejected")
            log.warning("slack.socket_rejected", reason=exc.reason, detail=str(exc))
        try:
            await client.send_socket_mode_response(
                SocketModeResponse(envelope_id=request.envelope_id)
            )
        except (ConnectionError, aiohttp.ClientError):
            self._count("socket_ack_failed")  # Slack redelivers; the dedupe absorbs it

    async def _from_socket(
        self, listener: _SocketListener, request: SocketModeRequest
    ) -> list[InboundMessage]:
        payload = request.payload
        if not isinstance(payload, dict):
            raise PayloadError("socket envelope without a payload object")
        # The HTTP edge refuses the same depth (gateway.edge): an entry the worker cannot
        # read back from the inbox would be acknowledged here and then dead-lettered.
        depth = self.context.config.http.max_json_depth
        if value_too_deep(payload, depth):
            raise PayloadError(f"JSON nested deeper than {depth} levels", reason="too_deep")
        if request.retry_attempt:
            self._count("retry_received")
        if request.type == "events_api":
            if payload.get("type") != "event_callback":
                self._count("ignored_envelope")
                return []
            team_id, enterprise_id = _event_source(payload)
            ws = self._select(listener.workspaces, team_id, enterprise_id)
            return await self._from_event_callback(ws, payload)
        if request.type == "slash_commands":
            fields = {k: v for k, v in payload.items() if isinstance(v, str)}
            ws = self._select(
                listener.workspaces, fields.get("team_id"), fields.get("enterprise_id")
            )
            return [self._command(ws, fields)]
        if request.type == "interactive":
            team_id, enterprise_id = _interaction_source(payload)
            ws = self._select(listener.workspaces, team_id, enterprise_id)
            return self._actions(ws, payload)
        self._count("ignored_envelope")
        return []

    # -- outbound ----------------------------------------------------------------------------
    async def send(self, message: OutboundMessage) -> DeliveryReceipt:
        ctx = message.reply_context
        if not isinstance(ctx, SlackReplyContext):
            raise PermanentDeliveryError(
                "not a Slack reply context", code=DeliveryFailure.BAD_REPLY_CONTEXT
            )
        ws = self._workspace_for(message.conversation.tenant, ctx)
        if ws is None:
            raise PermanentDeliveryError(
                "no Slack channel configured for this workspace", code=DeliveryFailure.NO_CHANNEL
            )
        posts = _render(message, ws.config.max_message_chars)
        ours = message.conversation.thread
        starts_thread = False
        if ours is not None and not is_slack_ts(ours):
            # A thread the gateway names: post into the Slack thread mapped to it, or start it.
            mapped = await self._threads.thread_ts(ws.tenant, ctx.channel_id, ours)
            starts_thread = mapped is None
            ctx = ctx.model_copy(update={"thread_ts": mapped})
        last_ts: str | None = None
        for index, post in enumerate(posts):
            # A reply in several parts is resumed after a failure, not restarted: parts that
            # went out are recorded, so a retry never posts them twice.
            progress = None
            if len(posts) > 1:
                progress = self.context.keyspace.slack_part(
                    message.conversation.key, message.idempotency_key, index
                )
                done = await self.context.store.get_record(progress)
                if done is not None:
                    last_ts = done.decode() or last_ts
                    continue
            last_ts = await self._deliver(ws, ctx, message, post, depth=0)
            if starts_thread and ours is not None and last_ts is not None:
                await self._threads.remember(ws.tenant, ctx.channel_id, ours, last_ts)
                self._count("desk_thread_started")
                log.info("slack.desk_thread_started", workspace=ws.label)
                ctx = ctx.model_copy(update={"thread_ts": last_ts})
                starts_thread = False
            if progress is not None:
                # The part is posted: a store error here must not make the retry post it again.
                await record_until_stored(
                    partial(
                        self.context.store.put_record,
                        progress,
                        (last_ts or "").encode(),
                        ttl=self.context.config.store.dedupe_ttl_seconds,
                    ),
                    event="slack.record_retry",
                )
        return DeliveryReceipt(
            outbound_id=message.id,
            idempotency_key=message.idempotency_key,
            channel=Channel.SLACK,
            status="sent",
            platform_message_id=last_ts,
            detail={"parts": len(posts), "channel_id": ctx.channel_id},
        )

    async def _deliver(
        self,
        ws: _Workspace,
        ctx: SlackReplyContext,
        message: OutboundMessage,
        post: _Post,
        *,
        depth: int,
    ) -> str | None:
        try:
            if ctx.response_url is not None and ws.config.command_reply_via == "response_url":
                await self._post_response_url(ws, ctx, post)
                return None
            return await self._post_web_api(ws, ctx, message, post)
        except PermanentDeliveryError as exc:
            if exc.code is DeliveryFailure.OUTCOME_UNKNOWN:
                self._count("outcome_unknown")
            if exc.platform_code != "msg_too_long" or depth >= 3 or len(post.text) < 2:
                raise
        # Slack refused the size (its limit is lower than documented). Nothing was posted, so
        # sending the same content in smaller pieces is safe.
        self._count("msg_too_long_resplit")
        if post.blocks:  # the blocks carry the text; only the notification fallback shrinks
            shorter = _Post(post.text[:SLACK_SECTION_MAX], post.blocks)
            return await self._deliver(ws, ctx, message, shorter, depth=depth + 1)
        last: str | None = None
        for half in split_text(post.text, (len(post.text) + 1) // 2):
            last = await self._deliver(ws, ctx, message, _Post(half), depth=depth + 1)
        return last

    async def _post_web_api(
        self, ws: _Workspace, ctx: SlackReplyContext, message: OutboundMessage, post: _Post
    ) -> str | None:
        client = self._client(ws)
        common: dict[str, Any] = {
            "channel": ctx.channel_id,
            **_post_fields(message, post),
            "thread_ts": ctx.thread_ts,
        }
        # Slack has no idempotency key: a post that broke off is outcome_unknown, not resent.
        async with (
            map_delivery_errors("Slack", idempotent=False, read=[read_slack], codes=SLACK_CODES),
            asyncio.timeout(ws.config.request_timeout_seconds),
        ):
            if ctx.response_type == "ephemeral" and ctx.ephemeral_user is not None:
                result = await client.chat_postEphemeral(user=ctx.ephemeral_user, **common)
                ts = result.get("message_ts")
            else:
                result = await client.chat_postMessage(
                    **common,
                    metadata={
                        "event_type": "flowbiz_reply",
                        "event_payload": {"idempotency_key": message.idempotency_key},
                    },
                )
                ts = result.get("ts")
        return ts if isinstance(ts, str) else None

    async def _post_response_url(self, ws: _Workspace, ctx: SlackReplyContext, post: _Post) -> None:
        assert ctx.response_url is not None  # checked by the caller
        hook = AsyncWebhookClient(
            ctx.response_url,
            session=self.context.http,
            retry_handlers=[],
            logger=_sdk_log,
        )
        async with (
            map_delivery_errors("response_url", idempotent=False),
            asyncio.timeout(ws.config.request_timeout_seconds),
        ):
            response = await hook.send(
                text=post.text,
                blocks=list(post.blocks) or None,
                response_type=ctx.response_type or "ephemeral",
                replace_original=False,
            )
        status = response.status_code
        if status == 200:
            return
        # 404 expired_url, 410 used_url, …: Slack's word for it is the body.
        said = response.body.strip()[:64] if response.body else ""
        raise answer_error(
            "response_url",
            PlatformAnswer(status, said or str(status), headers=response.headers),
            codes=SLACK_CODES,
        )


# -- rendering ---------------------------------------------------------------------------------
def escape(text: str) -> str:
    """Slack's required escaping of the three control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def split_text(text: str, limit: int) -> list[str]:
    """Cut (escaped) text into pieces of at most ``limit`` UTF-16 code units, in order.

    Slack does not say how it counts its limits; UTF-16 units (an emoji counts 2) are never
    fewer than characters, so a piece fits however it counts. Prefers a line break, then a
    space, in the second half of the window; never cuts inside an ``&amp;``-style entity or
    a surrogate pair. Nothing is dropped: ``"".join(parts) == text``.
    """
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        fit = max(1, utf16_fit(rest, limit))
        window = rest[:fit]
        cut = -1
        for sep in ("\n", " "):
            at = window.rfind(sep)
            if at >= fit // 2:
                cut = at + 1
                break
        if cut == -1:
            cut = fit
        amp = window.rfind("&", max(0, cut - 5), cut)
        if amp > 0 and ";" not in window[amp:cut]:
            cut = amp
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest or not parts:
        parts.append(rest)
    return parts


def _render(message: OutboundMessage, limit: int) -> list[_Post]:
    """The Slack messages for one reply: text chunks, the last one with blocks if needed."""
    text = escape(message.text)
    links = [_link(a) for a in message.attachments if a.url]
    if links:
        text = "\n".join([text, *links]) if text else "\n".join(links)
    chunks = split_text(text, limit)
    signature = message.persona.signature
    if not message.buttons and not signature:
        return [_Post(chunk) for chunk in chunks]
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=piece))
        for piece in split_text(chunks[-1], SLACK_SECTION_MAX)
        if piece.strip()
    ]
    if signature:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=escape(signature))]))
    if message.buttons:
        blocks.append(
            ActionsBlock(
                block_id="flowbiz_buttons",
                elements=[
                    ButtonElement(
                        text=button.label[:_BUTTON_LABEL_MAX],
                        action_id=f"{_BUTTON_ACTION_PREFIX}{n}",
                        value=button.value[:_BUTTON_VALUE_MAX],
                    )
                    for n, button in enumerate(message.buttons[:_MAX_BUTTONS])
                ],
            )
        )
    posts = [_Post(chunk) for chunk in chunks[:-1]]
    posts.append(_Post(chunks[-1] or escape(message.persona.display_name), tuple(blocks)))
    return posts


def _post_fields(message: OutboundMessage, post: _Post) -> dict[str, Any]:
    """What a post says and who it is from: the fields of ``chat.postMessage`` that do not
    depend on where it goes."""
    return {
        "text": post.text,
        "blocks": list(post.blocks) or None,
        "username": message.persona.display_name,
        "icon_url": message.persona.icon_url,
    }


def render(
    message: OutboundMessage, limit: int = DEFAULT_MAX_MESSAGE_CHARS
) -> list[dict[str, Any]]:
    """The ``chat.postMessage`` bodies :meth:`SlackConnector.send` posts for ``message``
    (without the channel and thread), blocks as JSON: what the console previews."""
    return [
        {
            **fields,
            "blocks": [b.to_dict() for b in fields["blocks"]] if fields["blocks"] else None,
        }
        for fields in (_post_fields(message, post) for post in _render(message, limit))
    ]


def _link(attachment: Attachment) -> str:
    url = attachment.url or ""
    name = attachment.name or url
    if any(c in url for c in "<>| "):
        return escape(url)
    return f"<{url}|{escape(name)}>"


def _error_code(exc: SlackApiError) -> str:
    data = exc.response.data
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else f"http_{exc.response.status_code}"


# -- payload helpers ---------------------------------------------------------------------------
_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


def _s(data: Any, key: str) -> str | None:
    """``data[key]`` when it is a non-empty string; Slack payloads are not trusted to match docs."""
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise PayloadError("body is not JSON") from exc
    if not isinstance(data, dict):
        raise PayloadError("body is not a JSON object")
    return data


def _form(body: bytes) -> dict[str, str]:
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError("body is not a form") from exc
    return {key: values[0] for key, values in parsed.items() if values}


def _event_source(body: dict[str, Any]) -> tuple[str | None, str | None]:
    team_id, enterprise_id = _s(body, "team_id"), _s(body, "enterprise_id")
    auths = body.get("authorizations")
    if isinstance(auths, list) and auths and isinstance(auths[0], dict):
        enterprise_id = enterprise_id or _s(auths[0], "enterprise_id")
        team_id = team_id or _s(auths[0], "team_id")
    return team_id, enterprise_id


def _interaction_source(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    team, user, enterprise = payload.get("team"), payload.get("user"), payload.get("enterprise")
    team_id = _s(team, "id") or _s(user, "team_id")
    return team_id, _s(enterprise, "id")


def _authorized_bot_user(body: dict[str, Any]) -> str | None:
    auths = body.get("authorizations")
    if isinstance(auths, list):
        for auth in auths:
            if isinstance(auth, dict) and auth.get("is_bot") is True:
                return _s(auth, "user_id")
    return None


def _clean_text(text: str, bot_user_id: str | None) -> str:
    """Drop the mention of the bot (so routing sees the words) and Slack's escaping."""
    if bot_user_id is not None:
        text = _MENTION.sub(lambda m: "" if m.group(1) == bot_user_id else m.group(0), text)
    else:
        text = _MENTION.sub("", text, count=1) if text.lstrip().startswith("<@") else text
    return unescape(text.strip())


def _profile_name(event: dict[str, Any]) -> str | None:
    profile = event.get("user_profile")
    if isinstance(profile, dict):
        return _s(profile, "display_name") or _s(profile, "real_name") or _s(profile, "name")
    return None


_FILE_KINDS: dict[str, Literal["image", "video", "audio", "file"]] = {
    "image": "image",
    "video": "video",
    "audio": "audio",
}


def _files(files: Any) -> tuple[Attachment, ...]:
    if not isinstance(files, list):
        return ()
    out: list[Attachment] = []
    for f in files:
        if not isinstance(f, dict):
            continue
        mime = _s(f, "mimetype")
        kind = _FILE_KINDS.get(mime.split("/", 1)[0] if mime else "", "file")
        size = f.get("size")
        out.append(
            Attachment(
                kind=kind,
                name=_s(f, "name") or _s(f, "title"),
                mime_type=mime,
                size=size if isinstance(size, int) else None,
                url=_s(f, "url_private"),
                extra={
                    k: f[k]
                    for k in ("id", "filetype", "permalink", "url_private_download")
                    if isinstance(f.get(k), str)
                },
            )
        )
    return tuple(out)


def _digest(fields: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
