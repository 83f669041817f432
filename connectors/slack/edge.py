"""Slack's acknowledged path: verify, find the workspace, key the event, append it as sent.

Every HTTP request is verified before its body is read: Slack's v0 signature, an HMAC-SHA256
of ``v0:<timestamp>:<body>`` under a signing secret (``hmac.digest`` and
``hmac.compare_digest``, checked against slack_sdk's ``SignatureVerifier`` by the tests), with
the timestamp no more than five minutes off either way. Every configured secret is tried,
because the team that sent the request is only named inside the body.

Then the edge reads only what admission needs, from plain dicts: the workspace (``team_id`` /
``enterprise_id``, among those whose secret signed), the dedupe id and the conversation key.
It appends the verified payload unchanged (gateway/envelope.py), with the thread it keyed
the conversation by in the envelope's context; the worker's parse
(connectors/slack/parse.py) makes the message under that same conversation. Events that
never need a turn — the bot's own posts, other bots, edits (unless ``handle_edits``), join
notices, channel chatter that does not address the bot — are acknowledged and not stored.

Dedupe ids are the ones messages always had: ``msg:<team>:<channel>:<ts>`` (so a retried
event, a Socket Mode redelivery and the ``message`` + ``app_mention`` pair Slack sends for
one mention collapse into one), ``cmd:<trigger_id>``, ``action:<trigger_id>``. A retry
(``X-Slack-Retry-Num``) of an event already stored is acknowledged as a duplicate.

The one store read on this path: a reply in a thread (``thread_ts`` not its own ``ts``) is
looked up in the operators' desk thread map, because a desk thread's replies belong to the
conversation the gateway named, not to the Slack thread.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import PydanticSerializationError, from_json
from slack_sdk.signature import Clock
from slack_sdk.socket_mode.request import SocketModeRequest

from connectors.base import ConnectorContext, InboundRequest, InboundResponse, InboundResult
from connectors.slack.desk import ThreadMap
from connectors.slack.payloads import (
    EVENTS_API,
    INTERACTIVE,
    SLASH_COMMANDS,
    addressed_by_fields,
    authorized_bot_user,
    clicked_button,
    event_source,
    form_digest,
    form_fields,
    interaction_source,
    reply_thread,
    screen,
    string_field,
)
from connectors.slack.workspace import Workspace, select_workspace
from gateway.envelope import encode_raw_event
from gateway.errors import PayloadError, VerificationError
from gateway.models import Channel, EncodedInbound, conversation_key_of
from gateway.nesting import value_too_deep
from gateway.observability import get_logger

__all__ = ["Select", "SlackEdge", "signature_matches"]

log = get_logger(__name__)

_REPLAY_WINDOW = 60 * 5  # seconds either way, as Slack documents and SignatureVerifier checks
_SLACK = Channel.SLACK
_COMMAND_CONTEXT: dict[str, Any] = {"type": SLASH_COMMANDS}
_ACTION_CONTEXT: dict[str, Any] = {"type": INTERACTIVE}
_OK = InboundResponse()


_UNINSTALL_EVENTS = frozenset({"app_uninstalled", "tokens_revoked"})

Select = Callable[[Sequence[Workspace], str | None, str | None], Awaitable[Workspace]]
"""Which of the workspaces a payload of that team (and org) is for."""


async def _select_configured(
    candidates: Sequence[Workspace], team_id: str | None, enterprise_id: str | None
) -> Workspace:
    return select_workspace(candidates, team_id, enterprise_id)


@dataclass(slots=True)
class _SecretGroup:
    key: bytes
    workspaces: list[Workspace] = field(default_factory=list)


class SlackEdge:
    """The Slack routes' handlers and the Socket Mode listener's admission."""

    def __init__(
        self,
        *,
        context: ConnectorContext,
        workspaces: Sequence[Workspace],
        threads: ThreadMap,
        clock: Clock,
        count: Callable[[str], None],
        select: Select | None = None,
        uninstalled: Callable[[Workspace], Awaitable[None]] | None = None,
    ) -> None:
        self.context = context
        self._select = select or _select_configured
        self._uninstalled = uninstalled
        self._threads = threads
        self._clock = clock
        self._count = count
        groups: dict[str, _SecretGroup] = {}
        for ws in workspaces:
            if ws.config.signing_secret is not None:
                secret = ws.config.signing_secret.get_secret_value()
                groups.setdefault(secret, _SecretGroup(secret.encode())).workspaces.append(ws)
        self._groups = list(groups.values())

    # -- verification ---------------------------------------------------------------------------
    def verify(self, request: InboundRequest) -> list[Workspace]:
        """The workspaces whose signing secret signed this request; VerificationError if none.

        Runs before anything in the body is read. Each comparison is constant-time.
        """
        headers = request.headers
        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if not timestamp or not signature:
            raise VerificationError("missing Slack signature headers", reason="missing_signature")
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise VerificationError("bad Slack timestamp", reason="bad_timestamp") from None
        if abs(self._clock.now() - sent_at) > _REPLAY_WINDOW:
            raise VerificationError("stale Slack timestamp", reason="stale_timestamp")
        body = request.body
        matched: list[Workspace] = []
        for group in self._groups:
            if signature_matches(group.key, timestamp, body, signature):
                matched.extend(group.workspaces)
        if not matched:
            raise VerificationError("Slack signature mismatch", reason="bad_signature")
        return matched

    # -- HTTP routes ----------------------------------------------------------------------------
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
        retry = request.headers.get("x-slack-retry-num")
        if retry:
            self._count("retry_received")
        team_id, enterprise_id = event_source(body)
        ws = await self._select(candidates, team_id, enterprise_id)
        event = body.get("event")
        if isinstance(event, dict) and event.get("type") in _UNINSTALL_EVENTS:
            # The app left this workspace (or lost its tokens): forget its installation.
            self._count(str(event["type"]))
            if ws.installed is not None and self._uninstalled is not None:
                await self._uninstalled(ws)
            return InboundResult()
        encoded = await self.admit_callback(ws, body, request.body, team_id=team_id)
        if encoded is None:
            return InboundResult()
        if retry:
            return InboundResult(
                encoded=[encoded],
                respond=self._retried(retry, request.header("x-slack-retry-reason")),
            )
        return InboundResult(encoded=[encoded], response=_OK)

    def _retried(self, attempt: str, reason: str) -> Callable[[Sequence[bool]], InboundResponse]:
        def respond(flags: Sequence[bool]) -> InboundResponse:
            # Slack resends when our first answer was late or lost: usually it is stored.
            stored_before = not flags[0]
            self._count("retry_duplicate" if stored_before else "retry_stored")
            log.info(
                "slack.retry",
                attempt=attempt[:8],
                reason=reason[:32],
                duplicate=stored_before,
            )
            return _OK

        return respond

    async def commands(self, request: InboundRequest) -> InboundResult:
        fields = form_fields(request.body)
        if fields.get("ssl_check") == "1":
            return InboundResult()  # Slack's certificate probe: nothing to read or store
        candidates = self.verify(request)
        ws = await self._select(candidates, fields.get("team_id"), fields.get("enterprise_id"))
        return InboundResult(encoded=[self.admit_command(ws, fields)])

    async def interactivity(self, request: InboundRequest) -> InboundResult:
        candidates = self.verify(request)
        raw = form_fields(request.body).get("payload")
        if raw is None:
            raise PayloadError("interactivity request without a payload field")
        payload_json = raw.encode()
        payload = _json_object(payload_json)
        team_id, enterprise_id = interaction_source(payload)
        ws = await self._select(candidates, team_id, enterprise_id)
        encoded = self.admit_action(ws, payload, payload_json)
        return InboundResult(encoded=[encoded] if encoded is not None else ())

    # -- admission (HTTP and Socket Mode) -------------------------------------------------------
    async def admit_callback(
        self,
        ws: Workspace,
        body: dict[str, Any],
        body_json: bytes | None = None,
        *,
        team_id: str | None = None,
    ) -> EncodedInbound | None:
        """The envelope of an ``event_callback`` that may need a turn; None when it never
        does. ``body_json``: the body's own bytes, stored as they came."""
        event = body.get("event")
        if not isinstance(event, dict):
            raise PayloadError("event_callback without an event object")
        if ws.bot_user_id is None:
            ws.bot_user_id = authorized_bot_user(body)
        config = ws.config
        screened = screen(event, bot_user_id=ws.bot_user_id, handle_edits=config.handle_edits)
        if isinstance(screened, str):
            self._count(screened)
            return None
        message = screened.event
        channel_id, ts = string_field(message, "channel"), string_field(message, "ts")
        if channel_id is None or ts is None:
            raise PayloadError("message event without channel or ts")
        thread_ts = string_field(message, "thread_ts")
        desk_thread = None
        if thread_ts is not None and thread_ts != ts:
            desk_thread = await self._threads.thread_name(ws.tenant, channel_id, thread_ts)
        if desk_thread is not None:
            if screened.edited_ts is not None:
                # The customer already has the first version; an edit is not a second message.
                self._count("ignored_desk_edit")
                return None
        elif not screened.mention and addressed_by_fields(config, ws.bot_user_id, message) is False:
            self._count("ignored_not_addressed")
            return None
        if team_id is None:
            team_id = event_source(body)[0]
        team_id = team_id or string_field(message, "team") or ws.team_id or ""
        event_id = f"msg:{team_id}:{channel_id}:{ts}"
        if screened.edited_ts is not None:
            event_id += f":edited:{screened.edited_ts}"
        thread = desk_thread or reply_thread(config, message, channel_id)
        return encode_raw_event(
            event_id=event_id,
            tenant=ws.tenant,
            channel=_SLACK,
            source=config.name,
            conversation_key=conversation_key_of(ws.tenant, "slack", channel_id, thread),
            event=body if body_json is None else None,
            event_json=body_json,
            # The thread as decided here, so the worker keys the message the same way even
            # if reply_in_thread or the desk's thread map changed in between.
            context=(
                {"type": EVENTS_API, "thread": thread}
                if desk_thread is None
                else {"type": EVENTS_API, "thread": thread, "desk": True}
            ),
        )

    def admit_command(self, ws: Workspace, fields: dict[str, str]) -> EncodedInbound:
        channel_id, user_id = fields.get("channel_id"), fields.get("user_id")
        if not channel_id or not user_id or not fields.get("command"):
            raise PayloadError("slash command without channel_id, user_id or command")
        trigger = fields.get("trigger_id")
        return encode_raw_event(
            event_id=f"cmd:{trigger}" if trigger else "cmd:" + form_digest(fields),
            tenant=ws.tenant,
            channel=_SLACK,
            source=ws.config.name,
            conversation_key=conversation_key_of(ws.tenant, "slack", channel_id, None),
            event=fields,
            context=_COMMAND_CONTEXT,
        )

    def admit_action(
        self, ws: Workspace, payload: dict[str, Any], payload_json: bytes | None = None
    ) -> EncodedInbound | None:
        clicked = clicked_button(payload)
        if clicked is None:
            self._count("ignored_interaction")
            return None
        action = clicked[0]
        container = payload.get("container")
        channel_id = string_field(payload.get("channel"), "id") or string_field(
            container, "channel_id"
        )
        if channel_id is None:
            raise PayloadError("block_actions without a channel")
        thread_ts = string_field(payload.get("message"), "thread_ts") or string_field(
            container, "thread_ts"
        )
        trigger = string_field(payload, "trigger_id")
        event_id = (
            f"action:{trigger}"
            if trigger
            else f"action:{channel_id}:{string_field(action, 'action_ts')}"
        )
        return encode_raw_event(
            event_id=event_id,
            tenant=ws.tenant,
            channel=_SLACK,
            source=ws.config.name,
            conversation_key=conversation_key_of(ws.tenant, "slack", channel_id, thread_ts),
            event=payload if payload_json is None else None,
            event_json=payload_json,
            context=_ACTION_CONTEXT,
        )

    async def admit_socket(
        self, workspaces: Sequence[Workspace], request: SocketModeRequest
    ) -> list[EncodedInbound]:
        """The envelopes of one Socket Mode request (its payload was parsed by the SDK)."""
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
        try:
            encoded = await self._admit_socket_payload(workspaces, request.type, payload)
        except PydanticSerializationError as exc:
            # The SDK's json.loads takes a lone surrogate ("\ud800") that no JSON encoder can
            # write back: it could never be stored, so it is refused like any bad payload.
            raise PayloadError("payload cannot be stored as JSON", reason="bad_json") from exc
        return [encoded] if encoded is not None else []

    async def _admit_socket_payload(
        self, workspaces: Sequence[Workspace], kind: str | None, payload: dict[str, Any]
    ) -> EncodedInbound | None:
        encoded: EncodedInbound | None
        if kind == EVENTS_API:
            if payload.get("type") != "event_callback":
                self._count("ignored_envelope")
                return None
            team_id, enterprise_id = event_source(payload)
            ws = select_workspace(workspaces, team_id, enterprise_id)
            encoded = await self.admit_callback(ws, payload, team_id=team_id)
        elif kind == SLASH_COMMANDS:
            fields = {k: v for k, v in payload.items() if isinstance(v, str)}
            ws = select_workspace(workspaces, fields.get("team_id"), fields.get("enterprise_id"))
            encoded = self.admit_command(ws, fields)
        elif kind == INTERACTIVE:
            team_id, enterprise_id = interaction_source(payload)
            ws = select_workspace(workspaces, team_id, enterprise_id)
            encoded = self.admit_action(ws, payload)
        else:
            self._count("ignored_envelope")
            return None
        return encoded


def signature_matches(key: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """Slack's v0 check: ``signature`` is ``v0=`` and the hex HMAC-SHA256, under the signing
    secret ``key``, of ``v0:<timestamp>:<body>`` — what ``SignatureVerifier.is_valid`` computes
    (the window aside), in one ``hmac.digest`` call, compared in constant time."""
    if not signature.isascii():  # compare_digest takes only ASCII text: this is no signature
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    return hmac.compare_digest("v0=" + hmac.digest(key, base, "sha256").hex(), signature)


def _json_object(body: bytes) -> dict[str, Any]:
    # pydantic-core's parser: the worker reads the stored envelope back with the same one, so
    # a body accepted here is never one the worker cannot read.
    try:
        data = from_json(body)
    except ValueError as exc:
        raise PayloadError("body is not JSON") from exc
    if not isinstance(data, dict):
        raise PayloadError("body is not a JSON object")
    return data
