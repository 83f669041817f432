"""Slack: the Events API, slash commands and button clicks over HTTP or Socket Mode, and
replies through the Web API (``chat.postMessage`` / ``chat.postEphemeral``) or a command's
``response_url``.

Inbound HTTP routes (one set for every workspace; the payload's ``team_id`` /
``enterprise_id`` picks the tenant):

- ``POST /slack/events``        Events API: url_verification, message, app_mention
- ``POST /slack/commands``      slash commands (acked with an empty 200 at once)
- ``POST /slack/interactivity`` block_actions (a persona button's value comes back)
- ``GET /slack/install/{tenant}``, ``GET /slack/oauth_redirect``  "Add to Slack", for blocks
  with ``install`` (:mod:`connectors.slack.install`)

Inbound is two steps (connectors/base.py). The edge (:mod:`connectors.slack.edge`) verifies
the request, keys the event (dedupe id, tenant, conversation) and appends it as Slack sent
it; Socket Mode (:mod:`connectors.slack.socket`) goes through the same edge and acknowledges
an envelope only after ``context.ingest.submit`` has made it durable. The parse
(:mod:`connectors.slack.parse`, in the worker) makes the message.

Dedupe keys: a message is identified by ``team:channel:ts``, so a retried event
(``X-Slack-Retry-Num``), a Socket Mode redelivery and the ``message`` + ``app_mention`` pair
that Slack sends for one mention all collapse into one inbound message.

Replies: the rich parts in Block Kit within Slack's limits, else the numbered plain text
(:mod:`connectors.slack.render`, :mod:`connectors.slack.blocks`); kept files uploaded after
the posts, each upload a recorded part of the reply like each post, so a retry never sends
either twice (:mod:`connectors.slack.files`). Inbound files are fetched for the worker's
keeper only from the configured files host (:meth:`SlackConnector.media_fetch`); assistant
threads show "is typing…" as the agent starts (:meth:`SlackConnector.show_typing`); a
streaming agent's answer is shown as a draft message that the reply then updates, never a
second post (:meth:`SlackConnector.show_draft`, :mod:`connectors.slack.drafts`).

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
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import Clock
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from connectors.base import (
    FORM,
    JSON,
    ChannelCapabilities,
    ConnectorContext,
    InboundRequest,
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
)
from connectors.send_policy.slack import SLACK_CODES, read_slack
from connectors.slack.blocks import Upload as _Upload
from connectors.slack.blocks import uploads as _uploads
from connectors.slack.config import DEFAULT_MAX_MESSAGE_CHARS, SLACK_MAX_TEXT, SlackChannelConfig
from connectors.slack.desk import ThreadMap, is_slack_ts
from connectors.slack.drafts import SlackDrafts, takes_drafts
from connectors.slack.edge import SlackEdge
from connectors.slack.files import file_fetch, upload_file
from connectors.slack.install import SlackInstaller
from connectors.slack.parse import SlackParser
from connectors.slack.render import SLACK_SECTION_MAX, escape, render, split_text, unescape
from connectors.slack.render import Post as _Post
from connectors.slack.render import post_fields as _post_fields
from connectors.slack.render import render_posts as _render
from connectors.slack.socket import SocketListeners
from connectors.slack.workspace import Workspace as _Workspace
from connectors.slack.workspace import select_workspace
from gateway.config import ChannelConfig, TenantConfig
from gateway.envelope import RawEvent
from gateway.errors import (
    PermanentDeliveryError,
    UnknownTenantError,
)
from gateway.media import MediaFetch, MediaUnavailable
from gateway.models import (
    Attachment,
    Channel,
    DeliveryReceipt,
    InboundMessage,
    OutboundMessage,
    PersonaPresentation,
    SlackReplyContext,
)
from gateway.observability import get_logger

__all__ = [
    "DEFAULT_MAX_MESSAGE_CHARS",
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


class SlackConnector:
    channel: ClassVar[Channel] = Channel.SLACK
    capabilities: ClassVar[ChannelCapabilities] = ChannelCapabilities(
        buttons=True,
        threads=True,
        max_text_length=SLACK_MAX_TEXT,
        markdown=True,
        attachments=True,
        cards=True,
        quick_replies=True,
        options=True,
        media_out=("image", "video", "audio", "file", "location", "contact"),
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
        self._workspaces: list[_Workspace] = []
        self._threads = ThreadMap(context)
        self._drafts = SlackDrafts(context)
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
        self._installer = SlackInstaller(
            context=context, workspaces=self._workspaces, count=self._count, sdk_log=_sdk_log
        )
        self._edge = SlackEdge(
            context=context,
            workspaces=self._workspaces,
            threads=self._threads,
            clock=clock or Clock(),
            count=self._count,
            select=self._installer.select,
            uninstalled=self._installer.uninstalled,
        )
        self._parser = SlackParser(
            context=context,
            workspaces=self._workspaces,
            users_info=self._users_info,
            count=self._count,
            installed=self._installer.installed,
        )
        self._sockets = SocketListeners(
            context=context, edge=self._edge, count=self._count, sdk_log=_sdk_log
        )
        for ws in self._workspaces:
            self._sockets.add(ws)

    # -- lifecycle ---------------------------------------------------------------------------
    def routes(self) -> Sequence[Route]:
        edge = self._edge  # its handlers directly: one coroutine less per request
        return [
            Route("POST", "/slack/events", edge.events, "slack.events", content_types=JSON),
            Route("POST", "/slack/commands", edge.commands, "slack.commands", content_types=FORM),
            Route(
                "POST",
                "/slack/interactivity",
                edge.interactivity,
                "slack.interactivity",
                content_types=FORM,
                json_fields=("payload",),
            ),
            *self._installer.routes(),
        ]

    async def start(self) -> None:
        await asyncio.gather(
            *(
                self._learn_identity(ws)
                for ws in self._workspaces
                if ws.bot_user_id is None and not ws.is_app
            )
        )
        self._sockets.start()

    async def stop(self) -> None:
        await self._sockets.stop()

    # -- inbound: the edge (acknowledged path) and the parse (worker) ---------------------------
    async def events(self, request: InboundRequest) -> InboundResult:
        return await self._edge.events(request)

    async def commands(self, request: InboundRequest) -> InboundResult:
        return await self._edge.commands(request)

    async def interactivity(self, request: InboundRequest) -> InboundResult:
        return await self._edge.interactivity(request)

    async def parse(self, event: RawEvent) -> InboundMessage | None:
        return await self._parser.parse(event)

    async def _users_info(self, ws: _Workspace, user_id: str) -> dict[str, Any] | None:
        ws = await self._installer.fresh(ws)
        result = await self._client(ws).users_info(user=user_id)
        user = result.get("user")
        return user if isinstance(user, dict) else None

    def pacing(self, message: OutboundMessage) -> Pacing | None:
        ctx = message.reply_context
        if not isinstance(ctx, SlackReplyContext):
            return None
        ws = self._paced_by(message.conversation.tenant, ctx)
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
        if ws.client is None or (ws.installed is not None and ws.client.token != ws.token):
            ws.client = AsyncWebClient(
                token=ws.token,
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

    def _paced_by(self, tenant: str, ctx: SlackReplyContext) -> _Workspace | None:
        """The block whose pacing settings apply: the workspace's, or its app's."""
        candidates = [ws for ws in self._workspaces if ws.tenant == tenant]
        try:
            return select_workspace(candidates, ctx.team_id, ctx.enterprise_id)
        except UnknownTenantError:
            return next((ws for ws in candidates if ws.is_app), None)

    async def _workspace_for(self, tenant: str, ctx: SlackReplyContext) -> _Workspace | None:
        """The workspace to send with (an installation's, with a token not about to expire)."""
        candidates = [ws for ws in self._workspaces if ws.tenant == tenant]
        try:
            ws = await self._installer.select(candidates, ctx.team_id, ctx.enterprise_id)
            return await self._installer.fresh(ws)
        except UnknownTenantError:
            return None

    # -- outbound ----------------------------------------------------------------------------
    async def send(self, message: OutboundMessage) -> DeliveryReceipt:
        ctx = message.reply_context
        if not isinstance(ctx, SlackReplyContext):
            raise PermanentDeliveryError(
                "not a Slack reply context", code=DeliveryFailure.BAD_REPLY_CONTEXT
            )
        ws = await self._workspace_for(message.conversation.tenant, ctx)
        if ws is None:
            raise PermanentDeliveryError(
                "no Slack channel configured for this workspace", code=DeliveryFailure.NO_CHANNEL
            )
        posts = _render(message, ws.config.max_message_chars)
        files = _uploads(message)
        ours = message.conversation.thread
        starts_thread = False
        if ours is not None and not is_slack_ts(ours):
            # A thread the gateway names: post into the Slack thread mapped to it, or start it.
            mapped = await self._threads.thread_ts(ws.tenant, ctx.channel_id, ours)
            starts_thread = mapped is None
            ctx = ctx.model_copy(update={"thread_ts": mapped})
            if starts_thread and not posts:  # files alone cannot start a thread
                posts = [_Post(escape(message.persona.display_name))]
        steps = len(posts) + len(files)
        last_ts: str | None = None
        # A streamed answer's draft (connectors/slack/drafts.py) becomes the first post; where
        # no draft can be shown (ephemeral, response_url, a desk thread) none is looked for.
        drafts = bool(posts) and takes_drafts(ctx, ws, ours)
        draft_ts = await self._drafts.recorded(message) if drafts else None
        for index in range(steps):
            # A reply in several parts (posts, then each uploaded file) is resumed after a
            # failure, not restarted: parts that went out are recorded, so a retry never
            # posts them, nor shares a file, twice.
            progress = None
            if steps > 1:
                progress = self.context.keyspace.slack_part(
                    message.conversation.key, message.idempotency_key, index
                )
                done = await self.context.store.get_record(progress)
                if done is not None:
                    if index < len(posts):
                        last_ts = done.decode() or last_ts
                    continue
            said: str | None = None
            if index == 0 and draft_ts is not None:
                client = self._client(ws)
                said = await self._drafts.replace(client, ws, ctx, message, posts[0], draft_ts)
            if said is not None:
                last_ts = said
            elif index < len(posts):
                last_ts = await self._deliver(ws, ctx, message, posts[index], depth=0)
                said = last_ts
            else:
                said = await self._send_file(ws, ctx, message, files[index - len(posts)])
            if starts_thread and ours is not None and last_ts is not None:
                await self._threads.remember(ws.tenant, ctx.channel_id, ours, last_ts)
                self._count("desk_thread_started")
                log.info("slack.desk_thread_started", workspace=ws.label)
                ctx = ctx.model_copy(update={"thread_ts": last_ts})
                starts_thread = False
            if progress is not None:
                # The part is out: a store error here must not make the retry send it again.
                await record_until_stored(
                    partial(
                        self.context.store.put_record,
                        progress,
                        (said or "").encode(),
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
            detail={"parts": len(posts), "files": len(files), "channel_id": ctx.channel_id},
        )

    async def _send_file(
        self, ws: _Workspace, ctx: SlackReplyContext, message: OutboundMessage, upload: _Upload
    ) -> str | None:
        """Upload one kept file, or post its text form when it cannot be: its bytes are gone,
        or the answer is only for one person (a file shared in a channel is everyone's)."""
        metric = self.context.metrics.media.labels(Channel.SLACK.value, "out", "degraded")
        ephemeral = ctx.response_type == "ephemeral" or (
            ctx.response_url is not None and ws.config.command_reply_via == "response_url"
        )
        if not ephemeral:
            try:
                _, data = await self.context.media.read(upload.attachment)
            except MediaUnavailable:
                log.info("slack.file_unavailable", workspace=ws.label)
                data = b""
            if data:  # Slack takes no empty upload
                file_id = await upload_file(
                    client=self._client(ws),
                    http=self.context.http,
                    ws=ws,
                    ctx=ctx,
                    data=data,
                    name=upload.attachment.name or upload.attachment.kind,
                    title=upload.title,
                )
                self.context.metrics.media.labels(Channel.SLACK.value, "out", "sent").inc()
                return file_id
        metric.inc()
        post = _Post(escape(upload.attachment.describe()))
        return await self._deliver(ws, ctx, message, post, depth=0)

    # -- files in and typing ---------------------------------------------------------------------
    async def media_fetch(
        self, message: InboundMessage, attachment: Attachment
    ) -> MediaFetch | None:
        """A Slack file's bytes: a GET with the bot token of the workspace it came from, only
        on the configured files host (gateway/media/keeper.py does the rest)."""
        ctx = message.reply_context
        if not isinstance(ctx, SlackReplyContext):
            return None
        ws = await self._workspace_for(message.conversation.tenant, ctx)
        if ws is None:
            return None
        return file_fetch(ws, attachment)

    async def show_typing(self, message: InboundMessage) -> bool:
        """'is typing…' in a Slack assistant thread (a DM thread); nothing elsewhere, where
        Slack has no indicator a bot may set."""
        ctx = message.reply_context
        if not isinstance(ctx, SlackReplyContext) or ctx.thread_ts is None:
            return False
        if ctx.channel_type != "im" or ctx.response_type == "ephemeral":
            return False
        ws = await self._workspace_for(message.conversation.tenant, ctx)
        if ws is None:
            return False
        await self._client(ws).assistant_threads_setStatus(
            channel_id=ctx.channel_id, thread_ts=ctx.thread_ts, status=ws.config.typing_status
        )
        return True

    async def show_draft(
        self, message: InboundMessage, text: str, persona: PersonaPresentation
    ) -> bool:
        """The answer so far, as the draft the reply will replace (connectors/slack/drafts.py);
        nothing where the reply is not a channel post (ephemeral, response_url, desk)."""
        ctx = message.reply_context
        if not isinstance(ctx, SlackReplyContext):
            return False
        ws = await self._workspace_for(message.conversation.tenant, ctx)
        if ws is None or not takes_drafts(ctx, ws, message.conversation.thread):
            return False
        return await self._drafts.show(self._client(ws), ws, ctx, message, text, persona)

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


def _error_code(exc: SlackApiError) -> str:
    data = exc.response.data
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else f"http_{exc.response.status_code}"
