"""Slack's parse, in the worker: one stored Slack payload becomes one message, or none.

The edge (connectors/slack/edge.py) stored the payload as Slack sent it, with its dedupe id,
its conversation key and, for a reply in an operators' desk thread, the desk's thread name.
Here it becomes an :class:`~gateway.models.InboundMessage` with that id and key:

- Events API ``message`` / ``app_mention``: the bot's mention stripped and Slack's escaping
  undone, files as attachment metadata, the sender's display name and verified email (from
  ``users.info``, cached in the store: :mod:`gateway.contacts.names`; a failed look-up
  leaves the name the event carried, or the raw id), and a :class:`SlackReplyContext` that
  answers in the right thread. A follow-up in a channel thread without a mention is
  answered only when the bot already has a conversation there.
- slash commands (``COMMAND``) and button clicks (``ACTION``, the button's value as text),
  with a ``response_url`` kept only when it is Slack's own (``response_url_prefixes``).

An event it cannot read raises :class:`EventParseError` (dead-lettered, replayable).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError

from connectors.base import ConnectorContext
from connectors.slack.payloads import (
    EVENTS_API,
    INTERACTIVE,
    SLASH_COMMANDS,
    action_value,
    addressed_by_fields,
    authorized_bot_user,
    clicked_button,
    event_source,
    in_dm,
    interaction_source,
    reply_thread,
    screen,
    string_field,
)
from connectors.slack.render import unescape
from connectors.slack.workspace import Workspace
from gateway.contacts.names import Profile
from gateway.envelope import RawEvent
from gateway.errors import EventParseError
from gateway.models import (
    Attachment,
    Channel,
    ConversationKey,
    EventKind,
    InboundMessage,
    Participant,
    SlackReplyContext,
)
from gateway.observability import get_logger

__all__ = ["SlackParser", "clean_text", "file_url", "on_host"]

log = get_logger(__name__)

_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")
_FILE_KINDS: dict[str, Literal["image", "video", "audio", "file"]] = {
    "image": "image",
    "video": "video",
    "audio": "audio",
}
UsersInfo = Callable[[Workspace, str], Awaitable[dict[str, Any] | None]]


Installed = Callable[[Workspace, str | None, str | None], Awaitable[Workspace | None]]
"""An app block's installation in a workspace (or org), if it has one."""


class SlackParser:
    def __init__(
        self,
        *,
        context: ConnectorContext,
        workspaces: Sequence[Workspace],
        users_info: UsersInfo,
        count: Callable[[str], None],
        installed: Installed | None = None,
    ) -> None:
        self.context = context
        self._by_source = {(ws.tenant, ws.config.name): ws for ws in workspaces}
        self._installed = installed
        self._users_info = users_info
        self._names = context.name_cache()
        self._count = count

    async def parse(self, event: RawEvent) -> InboundMessage | None:
        ws = self._by_source.get((event.tenant, event.source))
        if ws is None:
            raise EventParseError("no such Slack channel is configured", reason="no_channel")
        payload = event.event
        if not isinstance(payload, dict):
            raise EventParseError("the stored payload is not an object", reason="not_an_object")
        kind = event.context.get("type")
        if ws.is_app:
            ws = await self._installation(ws, kind, payload)
        if kind == EVENTS_API:
            return await self._event_callback(ws, event, payload)
        if kind == SLASH_COMMANDS:
            return await self._named(ws, self._command(ws, event, payload))
        if kind == INTERACTIVE:
            action = self._action(ws, event, payload)
            return None if action is None else await self._named(ws, action)
        raise EventParseError("not a Slack payload this connector stores", reason="unknown_type")

    async def _installation(
        self, app: Workspace, kind: object, payload: dict[str, Any]
    ) -> Workspace:
        """The installation of ``app`` in the workspace the payload came from."""
        if kind == EVENTS_API:
            team_id, enterprise_id = event_source(payload)
        elif kind == INTERACTIVE:
            team_id, enterprise_id = interaction_source(payload)
        else:
            team_id, enterprise_id = payload.get("team_id"), payload.get("enterprise_id")
        team = team_id if isinstance(team_id, str) else None
        org = enterprise_id if isinstance(enterprise_id, str) else None
        found = None if self._installed is None else await self._installed(app, team, org)
        if found is None:
            raise EventParseError(
                "the Slack app is not installed in this workspace", reason="not_installed"
            )
        return found

    # -- Events API -----------------------------------------------------------------------------
    async def _event_callback(
        self, ws: Workspace, event: RawEvent, body: dict[str, Any]
    ) -> InboundMessage | None:
        inner = body.get("event")
        if not isinstance(inner, dict):
            raise EventParseError("event_callback without an event object", reason="no_event")
        if ws.bot_user_id is None:
            ws.bot_user_id = authorized_bot_user(body)
        config = ws.config
        screened = screen(inner, bot_user_id=ws.bot_user_id, handle_edits=config.handle_edits)
        if isinstance(screened, str):
            self._count(screened)
            return None
        # The conversation's thread as the edge keyed it: a desk thread's name, or the Slack
        # thread the answer goes to.
        thread = event.context.get("thread")
        if not (thread is None or isinstance(thread, str)):
            raise EventParseError("the stored thread is not a string", reason="bad_context")
        desk_thread = thread if event.context.get("desk") is True else None
        if desk_thread is not None and screened.edited_ts is not None:
            self._count("ignored_desk_edit")
            return None
        if (
            desk_thread is None
            and not screened.mention
            and not await self._addressed(ws, event, screened.event)
        ):
            self._count("ignored_not_addressed")
            return None
        message = self._message(ws, event, body, screened.event, thread=thread, desk=desk_thread)
        if message is None:
            return None
        if desk_thread is not None and not screened.mention:
            self._count("desk_reply")
        return await self._named(ws, message)

    async def _addressed(self, ws: Workspace, event: RawEvent, message: dict[str, Any]) -> bool:
        addressed = addressed_by_fields(ws.config, ws.bot_user_id, message)
        if addressed is not None:
            return addressed
        # A follow-up in a thread the bot already answered in: that conversation has state.
        # (The edge keyed the event by that very conversation.)
        state = await self.context.store.get_state(self.context.keyspace.state(event.conversation))
        return state is not None

    def _message(
        self,
        ws: Workspace,
        event: RawEvent,
        body: dict[str, Any],
        message: dict[str, Any],
        *,
        thread: str | None,
        desk: str | None,
    ) -> InboundMessage | None:
        """``thread``: the conversation's thread, as the edge keyed it; ``desk``: the same,
        when it is our name for a desk thread rather than a Slack ``thread_ts``."""
        channel_id = string_field(message, "channel")
        ts, user = string_field(message, "ts"), string_field(message, "user")
        if channel_id is None or ts is None:
            raise EventParseError("message event without channel or ts", reason="no_channel")
        if user is None:
            self._count("ignored_no_user")
            return None
        team_id, enterprise_id = event_source(body)
        team_id = team_id or string_field(message, "team") or ws.team_id or ""
        channel_type = in_dm(message, channel_id)[0]
        reply = thread if desk is None else reply_thread(ws.config, message, channel_id)
        text = clean_text(string_field(message, "text") or "", ws.bot_user_id)
        attachments = _files(message.get("files"), ws.config.files_base_url)
        refused = sum(a.refused == "host_not_allowed" for a in attachments)
        if refused:
            metrics = self.context.metrics
            metrics.channel_events.labels(Channel.SLACK.value, "file_host_refused").inc(refused)
            metrics.media.labels(Channel.SLACK.value, "in", "host_not_allowed").inc(refused)
        if not text and not attachments:
            self._count("ignored_empty")
            return None
        return InboundMessage(
            id=event.id,
            trace_id=event.trace_id,
            received_at=event.received_at,
            event_id=event.event_id,
            conversation=ConversationKey(
                tenant=ws.tenant,
                channel=Channel.SLACK,
                conversation_id=channel_id,
                thread=thread,
            ),
            sender=Participant(id=user, display_name=_profile_name(message)),
            kind=EventKind.MESSAGE,
            text=text,
            attachments=attachments,
            reply_context=SlackReplyContext(
                team_id=team_id,
                enterprise_id=enterprise_id,
                channel_id=channel_id,
                message_ts=ts,
                thread_ts=reply,
                channel_type=channel_type,
            ),
            raw=body,
        )

    async def _named(self, ws: Workspace, message: InboundMessage) -> InboundMessage:
        """The message with its sender's display name and verified email from
        ``users.info`` (cached in the store); as it came when Slack cannot tell them."""
        if not ws.config.fetch_user_names:
            return message
        user_id = message.sender.id
        profile = await self._names.resolve(
            ws.tenant,
            Channel.SLACK.value,
            user_id,
            lambda: self._look_up(ws, user_id),
            timeout=ws.config.user_name_timeout_seconds,
        )
        if profile is None:
            return message
        sender = message.sender.model_copy(
            update={
                "display_name": profile.name or message.sender.display_name,
                "verified_email": profile.verified_email,
            }
        )
        return message.model_copy(update={"sender": sender})

    async def _look_up(self, ws: Workspace, user_id: str) -> Profile | None:
        """``users.info``: the profile's display name, else its real name, and its email
        (Slack confirms a workspace member's address). Raises what the call raises."""
        try:
            user = await self._users_info(ws, user_id)
        except SlackApiError as exc:
            data = exc.response.data
            error = data.get("error") if isinstance(data, dict) else None
            code = error if isinstance(error, str) else f"http_{exc.response.status_code}"
            if code == "user_not_found":
                return None
            self._count("user_name_failed")
            log.info("slack.user_name_failed", workspace=ws.label, code=code)
            raise
        except (aiohttp.ClientError, TimeoutError):
            self._count("user_name_failed")
            raise
        self._count("user_name_fetched")
        if user is None:
            return None
        return Profile(name=_name_of(user), verified_email=_email_of(user))

    # -- slash commands and buttons -------------------------------------------------------------
    def _command(self, ws: Workspace, event: RawEvent, payload: dict[str, Any]) -> InboundMessage:
        fields = {k: v for k, v in payload.items() if isinstance(v, str)}
        channel_id, user_id = fields.get("channel_id"), fields.get("user_id")
        command = fields.get("command")
        if not channel_id or not user_id or not command:
            raise EventParseError(
                "slash command without channel_id, user_id or command", reason="no_command"
            )
        text = fields.get("text", "")
        if command == self.context.config.routing.switch_command:
            text = f"{command} {text}".strip()  # /persona docs … is the persona switch itself
        ephemeral = ws.config.command_response == "ephemeral"
        self._count("slash_command")
        return InboundMessage(
            id=event.id,
            trace_id=event.trace_id,
            received_at=event.received_at,
            event_id=event.event_id,
            conversation=ConversationKey(
                tenant=ws.tenant, channel=Channel.SLACK, conversation_id=channel_id
            ),
            sender=Participant(id=user_id, display_name=fields.get("user_name") or None),
            kind=EventKind.COMMAND,
            text=text,
            reply_context=SlackReplyContext(
                team_id=fields.get("team_id") or ws.team_id or "",
                enterprise_id=fields.get("enterprise_id") or None,
                channel_id=channel_id,
                channel_type="im" if channel_id.startswith("D") else None,
                response_url=self._allowed_response_url(ws, fields.get("response_url")),
                command=command,
                ephemeral_user=user_id if ephemeral else None,
                response_type=ws.config.command_response,
            ),
            raw=fields,
        )

    def _action(
        self, ws: Workspace, event: RawEvent, payload: dict[str, Any]
    ) -> InboundMessage | None:
        clicked = clicked_button(payload)
        if clicked is None:
            self._count("ignored_interaction")
            return None
        action, user_id = clicked
        container = payload.get("container")
        container = container if isinstance(container, dict) else {}
        channel_id = string_field(payload.get("channel"), "id") or string_field(
            container, "channel_id"
        )
        if channel_id is None:
            raise EventParseError("block_actions without a channel", reason="no_channel")
        thread_ts = string_field(payload.get("message"), "thread_ts") or string_field(
            container, "thread_ts"
        )
        team_id, enterprise_id = interaction_source(payload)
        ephemeral = container.get("is_ephemeral") is True
        user = payload.get("user")
        name = string_field(user, "name") or string_field(user, "username")
        self._count("select_choice" if action.get("type") == "static_select" else "button_click")
        return InboundMessage(
            id=event.id,
            trace_id=event.trace_id,
            received_at=event.received_at,
            event_id=event.event_id,
            conversation=ConversationKey(
                tenant=ws.tenant,
                channel=Channel.SLACK,
                conversation_id=channel_id,
                thread=thread_ts,
            ),
            sender=Participant(id=user_id, display_name=name),
            kind=EventKind.ACTION,
            text=action_value(action) or "",
            reply_context=SlackReplyContext(
                team_id=team_id or ws.team_id or "",
                enterprise_id=enterprise_id,
                channel_id=channel_id,
                message_ts=string_field(container, "message_ts"),
                thread_ts=thread_ts,
                channel_type="im" if channel_id.startswith("D") else None,
                response_url=(
                    self._allowed_response_url(ws, string_field(payload, "response_url"))
                    if ephemeral
                    else None
                ),
                ephemeral_user=user_id if ephemeral else None,
                response_type="ephemeral" if ephemeral else None,
            ),
            raw=payload,
        )

    def _allowed_response_url(self, ws: Workspace, url: str | None) -> str | None:
        """A response_url is only posted to when it is Slack's (or a configured emulator's)."""
        if url is None:
            return None
        if url.startswith(ws.config.response_url_prefixes):
            return url
        self._count("response_url_refused")
        return None


def clean_text(text: str, bot_user_id: str | None) -> str:
    """Drop the mention of the bot (so routing sees the words) and Slack's escaping."""
    if bot_user_id is not None:
        text = _MENTION.sub(lambda m: "" if m.group(1) == bot_user_id else m.group(0), text)
    else:
        text = _MENTION.sub("", text, count=1) if text.lstrip().startswith("<@") else text
    return unescape(text.strip())


def _profile_name(event: dict[str, Any]) -> str | None:
    profile = event.get("user_profile")
    if isinstance(profile, dict):
        return (
            string_field(profile, "display_name")
            or string_field(profile, "real_name")
            or string_field(profile, "name")
        )
    return None


def _name_of(user: dict[str, Any]) -> str | None:
    profile = user.get("profile")
    for source, name in (
        (profile, "display_name"),
        (profile, "real_name"),
        (user, "real_name"),
        (user, "name"),
    ):
        value = source.get(name) if isinstance(source, dict) else None
        if isinstance(value, str) and value:
            return value
    return None


def _email_of(user: dict[str, Any]) -> str | None:
    """The profile's email, unless Slack says the member has not confirmed it."""
    if user.get("is_bot") is True or user.get("is_email_confirmed") is False:
        return None
    return string_field(user.get("profile"), "email")


def file_url(attachment: Attachment) -> str | None:
    """Where Slack keeps an inbound file's bytes: its download URL, else its private URL."""
    download = attachment.extra.get("url_private_download")
    return download if isinstance(download, str) else attachment.url


def on_host(url: str, host: str) -> bool:
    """Whether ``url`` is on ``host`` (a ``scheme://host[:port]`` base): the same scheme and
    the same authority, spelled exactly (no user info, no other port)."""
    try:
        parts, base = urlsplit(url), urlsplit(host)
    except ValueError:
        return False
    return (parts.scheme, parts.netloc.lower()) == (base.scheme, base.netloc.lower())


def _files(files: Any, host: str) -> tuple[Attachment, ...]:
    if not isinstance(files, list):
        return ()
    out: list[Attachment] = []
    for f in files:
        if not isinstance(f, dict):
            continue
        mime = string_field(f, "mimetype")
        kind = _FILE_KINDS.get(mime.split("/", 1)[0] if mime else "", "file")
        size = f.get("size")
        attachment = Attachment(
            kind=kind,
            name=string_field(f, "name") or string_field(f, "title"),
            mime_type=mime,
            size=size if isinstance(size, int) else None,
            url=string_field(f, "url_private"),
            extra={
                k: f[k]
                for k in ("id", "filetype", "permalink", "url_private_download")
                if isinstance(f.get(k), str)
            },
        )
        url = file_url(attachment)
        if url is not None and not on_host(url, host):
            # Only Slack's own file host gets the bot token: a file said to be anywhere
            # else is never fetched, and its address is not kept.
            log.warning("slack.file_host_refused", file_id=attachment.extra.get("id"))
            attachment = attachment.model_copy(
                update={
                    "url": None,
                    "extra": {"id": attachment.extra.get("id")},
                    "refused": "host_not_allowed",
                }
            )
        out.append(attachment)
    return tuple(out)
