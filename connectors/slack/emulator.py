"""A local Slack: the Web API subset the connector uses, Socket Mode, and a signing sender.

:class:`SlackEmulator` is a real aiohttp server:

- ``POST /api/auth.test``, ``/api/chat.postMessage``, ``/api/chat.postEphemeral`` with
  Slack's answers (``invalid_auth``, ``channel_not_found``, ``msg_too_long`` above 40,000
  characters, ``invalid_blocks`` for a section over 3,000), every call recorded;
- ``POST /api/users.info`` for the people added with :meth:`add_user` (``user_not_found``
  otherwise), their profile email set with :meth:`set_user_email`, the calls counted by
  :meth:`users_info_calls`;
- with :meth:`echo_to`, every message the bot posts comes back to the gateway as the signed
  ``message`` event Slack sends to a subscribed app (with the bot's ``bot_id``), so loops show;
- failures on demand: :meth:`fail_next` (429 with ``Retry-After``, 500, any ``error``),
  :meth:`drop_next` (read and record the request, then cut the connection or never answer:
  the "did it post?" case);
- ``POST /api/apps.connections.open`` answering a ``ws://`` URL served here, where
  :meth:`push` sends Socket Mode envelopes and every ack is recorded;
- ``POST /hooks/…``: the ``response_url`` endpoint for slash commands and clicks;
- "Add to Slack": ``GET /oauth/v2/authorize`` and ``POST /api/oauth.v2.access``, through
  :attr:`SlackEmulator.oauth` (:mod:`connectors.slack.emulated_oauth`);
- files and assistant threads through :attr:`SlackEmulator.files`
  (:mod:`connectors.slack.emulated_files`): files hosted under ``/files-pri/`` behind the bot
  token, the external upload (``files.getUploadURLExternal``, the upload URL,
  ``files.completeUploadExternal``) keeping what arrived, ``assistant.threads.setStatus``;
- ``POST /api/chat.update`` through :attr:`SlackEmulator.updates`
  (:mod:`connectors.slack.emulated_updates`): the posted message changed in place in
  ``posted``, each update recorded by ``ts``;
- ``invalid_blocks`` for blocks Slack refuses: more than 50, a section over 3,000
  characters, an actions block over 25 elements, a button label over 75, a select option
  value over 150, duplicate block or action ids, an image without its URL or alt text.

:class:`SlackSender` (signing as Slack does) and the payload builders live in
:mod:`connectors.slack.emulated_payloads` and are re-exported here under the same names.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from aiohttp import web

from connectors.slack.emulated_blocks import blocks_valid as _blocks_valid
from connectors.slack.emulated_files import EmulatedFiles, UploadedFile
from connectors.slack.emulated_oauth import EmulatedApp, EmulatedOAuth
from connectors.slack.emulated_payloads import (
    ACME_FILE,
    EmulatedWorkspace,
    SlackSender,
    app_mention_event,
    block_actions_payload,
    event_callback,
    message_event,
    slash_command_fields,
    static_select_payload,
)
from connectors.slack.emulated_updates import EmulatedUpdates, PostedMessage
from connectors.slack.emulated_users import slack_user, users_info_calls

__all__ = [
    "ACME_FILE",
    "ApiCall",
    "EmulatedApp",
    "EmulatedWorkspace",
    "PostedMessage",
    "SlackEmulator",
    "SlackSender",
    "UploadedFile",
    "app_mention_event",
    "block_actions_payload",
    "event_callback",
    "message_event",
    "slash_command_fields",
    "static_select_payload",
]

MAX_TEXT = 40_000


@dataclass(frozen=True, slots=True)
class ApiCall:
    method: str
    args: dict[str, Any]
    token: str | None
    status: int
    error: str | None


@dataclass(slots=True)
class _Failure:
    status: int
    error: str
    retry_after: float | None
    skip: int = 0  # calls to let through before this failure applies


class SlackEmulator:
    def __init__(
        self,
        *,
        workspaces: tuple[EmulatedWorkspace, ...] = (EmulatedWorkspace(),),
        host: str = "127.0.0.1",
        port: int = 0,
        missing_channels: frozenset[str] = frozenset({"C0GONE"}),
    ) -> None:
        self.workspaces = workspaces
        self.oauth = EmulatedOAuth(self)
        self.files = EmulatedFiles(self)
        self.updates = EmulatedUpdates(self)
        self.host = host
        self.port = port
        self.missing_channels = missing_channels
        self.calls: list[ApiCall] = []
        self.posted: list[PostedMessage] = []
        self.acks: list[str] = []
        self.connections_opened = 0
        self.refuse_connections = False
        self.max_text = MAX_TEXT  # lower it to see how the connector copes with msg_too_long
        self._failures: dict[str, deque[_Failure]] = {}
        self._drops: dict[str, deque[Literal["disconnect", "hang"]]] = {}
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._changed: asyncio.Condition | None = None
        self._sockets: list[tuple[web.WebSocketResponse, EmulatedWorkspace]] = []
        self._tickets: dict[str, EmulatedWorkspace] = {}
        self._release = asyncio.Event()
        self.users: dict[str, dict[str, Any]] = {}
        self.echoed: list[tuple[str, int]] = []  # (ts, the gateway's HTTP status)
        self._echo: SlackSender | None = None
        self._echoes: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """What the gateway's ``api_base_url`` should be."""
        return f"{self.base_url}/api/"

    async def start(self) -> SlackEmulator:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/api/auth.test", self._auth_test)
        app.router.add_post("/api/chat.postMessage", self._post_message)
        app.router.add_post("/api/chat.postEphemeral", self._post_ephemeral)
        app.router.add_post("/api/users.info", self._users_info)
        app.router.add_get("/api/users.info", self._users_info)  # slack_sdk asks with GET
        app.router.add_post("/api/apps.connections.open", self._connections_open)
        app.router.add_get("/link/", self._socket)
        app.router.add_post("/hooks/{path:.*}", self._response_url)
        self.oauth.add_routes(app)
        self.files.add_routes(app)
        self.updates.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        assert server is not None
        assert server.sockets  # type: ignore[attr-defined]  # asyncio.Server has .sockets
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]  # same
        return self

    async def stop(self) -> None:
        self._release.set()
        await asyncio.gather(*self._echoes, return_exceptions=True)
        for ws, _ in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- people and events -------------------------------------------------------------------
    def add_user(self, user_id: str, *, display_name: str, real_name: str | None = None) -> None:
        """A person of the workspace, as ``users.info`` describes them."""
        team = self.workspaces[0].team_id
        self.users[user_id] = slack_user(
            user_id, team, display_name=display_name, real_name=real_name
        )

    def set_user_email(self, user_id: str, email: str, *, confirmed: bool = True) -> None:
        """Their profile email, as an app with ``users:read.email`` sees it."""
        self.users[user_id]["profile"]["email"] = email
        self.users[user_id]["is_email_confirmed"] = confirmed  # Slack verified it

    def users_info_calls(self, user_id: str | None = None) -> int:
        return users_info_calls(self.calls, user_id)

    def echo_to(self, sender: SlackSender) -> None:
        """Deliver each posted channel message back through ``sender``, as Slack does."""
        self._echo = sender

    def _echo_post(self, ws: EmulatedWorkspace, post: PostedMessage) -> None:
        if self._echo is None or post.via != "chat.postMessage":
            return
        event = message_event(
            text=post.text,
            user=ws.bot_user_id,
            channel=post.channel or "",
            channel_type="im" if (post.channel or "").startswith("D") else "channel",
            ts=post.ts,
            thread_ts=post.thread_ts,
            team=ws.team_id,
            bot_id=ws.bot_id,
            app_id=ws.app_id,
            bot_profile={"id": ws.bot_id, "app_id": ws.app_id, "name": "flowbiz"},
        )
        event.pop("client_msg_id", None)
        if post.username is not None:
            event["username"] = post.username
        envelope = event_callback(event, team_id=ws.team_id, bot_user_id=ws.bot_user_id)
        task = asyncio.get_running_loop().create_task(self._deliver_echo(envelope))
        self._echoes.add(task)
        task.add_done_callback(self._echoes.discard)

    async def _deliver_echo(self, envelope: dict[str, Any]) -> None:
        assert self._echo is not None
        status, _ = await self._echo.event(envelope)
        self.echoed.append((envelope["event"]["ts"], status))

    # -- failure injection -------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        count: int = 1,
        *,
        status: int = 429,
        error: str = "ratelimited",
        retry_after: float | None = 1,
        after: int = 0,
    ) -> None:
        """After ``after`` more successful calls, ``count`` calls of ``method`` fail."""
        self._failures.setdefault(method, deque()).extend(
            _Failure(status, error, retry_after if status == 429 else None, after if n == 0 else 0)
            for n in range(count)
        )

    def drop_next(self, method: str, *, mode: Literal["disconnect", "hang"] = "disconnect") -> None:
        """The next call of ``method`` IS posted, but the caller never gets the answer."""
        self._drops.setdefault(method, deque()).append(mode)

    def _dropped(self, method: str, args: dict[str, Any], token: str | None) -> bool:
        """Whether this call's answer is to be lost (:meth:`drop_next`, disconnect mode)."""
        drops = self._drops.get(method)
        if not drops:
            return False
        drops.popleft()
        self.calls.append(ApiCall(method, args, token, 0, "dropped"))
        return True

    # -- waiting -----------------------------------------------------------------------------
    async def wait_for_posts(self, count: int, *, timeout: float = 10.0) -> list[PostedMessage]:
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.posted) >= count)
        return list(self.posted)

    async def wait_for_updates(self, count: int, *, timeout: float = 10.0) -> None:
        """Wait until ``count`` chat.update calls have changed a message in total."""
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.updates.count >= count)

    async def wait_for_uploads(self, count: int, *, timeout: float = 10.0) -> list[UploadedFile]:
        """Wait until ``count`` files have been shared through the external upload."""
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.files.uploaded) >= count)
        return list(self.files.uploaded)

    async def wait_for_connections(self, count: int, *, timeout: float = 10.0) -> None:
        """Wait until ``count`` Socket Mode connections have been opened in total."""
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(
                lambda: self.connections_opened >= count and bool(self.open_sockets)
            )

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    def response_url(self, team_id: str = "T0FLOWBIZ") -> str:
        return f"{self.base_url}/hooks/commands/{team_id}/{next(self._ts)}/{uuid.uuid4().hex}"

    # -- Web API -----------------------------------------------------------------------------
    async def _args(self, request: web.Request) -> tuple[dict[str, Any], str | None]:
        if request.method == "GET":
            args: dict[str, Any] = dict(request.query)
        elif request.content_type == "application/json":
            args = {**request.query, **await request.json()}
        else:
            # The SDK sends some methods' arguments in the query (files.*), as Slack takes.
            args = {**request.query, **await request.post()}
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else args.get("token")
        return args, token

    def _workspace(self, token: str | None) -> EmulatedWorkspace | None:
        return next((w for w in self.workspaces if w.bot_token == token), None)

    def _answer(
        self, method: str, args: dict[str, Any], token: str | None, body: dict[str, Any]
    ) -> web.Response:
        error = body.get("error") if not body.get("ok") else None
        self.calls.append(ApiCall(method, args, token, 200, error))
        return web.json_response(body)

    async def _injected(
        self, method: str, args: dict[str, Any], token: str | None, request: web.Request
    ) -> web.Response | None:
        queue = self._failures.get(method)
        if queue and queue[0].skip > 0:
            queue[0].skip -= 1
        elif queue:
            failure = queue.popleft()
            self.calls.append(ApiCall(method, args, token, failure.status, failure.error))
            headers = (
                {"Retry-After": str(int(failure.retry_after))}
                if failure.retry_after is not None
                else {}
            )
            return web.json_response(
                {"ok": False, "error": failure.error}, status=failure.status, headers=headers
            )
        return None

    async def _auth_test(self, request: web.Request) -> web.Response:
        args, token = await self._args(request)
        ws = self._workspace(token)
        if ws is None:
            return self._answer("auth.test", args, token, {"ok": False, "error": "invalid_auth"})
        return self._answer(
            "auth.test",
            args,
            token,
            {
                "ok": True,
                "url": f"https://{ws.team_domain}.slack.com/",
                "team": ws.team_domain,
                "user": "flowbiz",
                "team_id": ws.team_id,
                "user_id": ws.bot_user_id,
                "bot_id": ws.bot_id,
                "enterprise_id": ws.enterprise_id,
                "is_enterprise_install": False,
            },
        )

    async def _post_message(self, request: web.Request) -> web.StreamResponse:
        return await self._post("chat.postMessage", request)

    async def _post_ephemeral(self, request: web.Request) -> web.StreamResponse:
        return await self._post("chat.postEphemeral", request)

    async def _post(
        self, method: Literal["chat.postMessage", "chat.postEphemeral"], request: web.Request
    ) -> web.StreamResponse:
        args, token = await self._args(request)
        injected = await self._injected(method, args, token, request)
        if injected is not None:
            return injected
        ws = self._workspace(token)
        if ws is None:
            return self._answer(method, args, token, {"ok": False, "error": "invalid_auth"})
        channel = args.get("channel")
        if not channel or channel in self.missing_channels:
            return self._answer(method, args, token, {"ok": False, "error": "channel_not_found"})
        text = args.get("text") or ""
        blocks = args.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if not text and not blocks:
            return self._answer(method, args, token, {"ok": False, "error": "no_text"})
        if len(text) > self.max_text:
            return self._answer(method, args, token, {"ok": False, "error": "msg_too_long"})
        if not _blocks_valid(blocks):
            return self._answer(method, args, token, {"ok": False, "error": "invalid_blocks"})
        if method == "chat.postEphemeral" and not args.get("user"):
            return self._answer(method, args, token, {"ok": False, "error": "user_not_in_channel"})
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        self.posted.append(
            PostedMessage(
                via=method,
                team_id=ws.team_id,
                channel=channel,
                text=text,
                ts=ts,
                thread_ts=args.get("thread_ts"),
                user=args.get("user"),
                username=args.get("username"),
                icon_url=args.get("icon_url"),
                blocks=tuple(blocks),
            )
        )
        self._echo_post(ws, self.posted[-1])
        await self._notify()
        drops = self._drops.get(method)
        if drops:
            mode = drops.popleft()
            self.calls.append(ApiCall(method, args, token, 0, "dropped"))
            if mode == "hang":
                await self._release.wait()
            assert request.transport is not None
            request.transport.close()  # the post happened; the answer never arrives
            return web.Response()
        if method == "chat.postEphemeral":
            return self._answer(method, args, token, {"ok": True, "message_ts": ts})
        return self._answer(
            method,
            args,
            token,
            {
                "ok": True,
                "channel": channel,
                "ts": ts,
                "message": {
                    "type": "message",
                    "subtype": "bot_message",
                    "text": text,
                    "ts": ts,
                    "bot_id": ws.bot_id,
                    "username": args.get("username"),
                },
            },
        )

    async def _users_info(self, request: web.Request) -> web.Response:
        args, token = await self._args(request)
        injected = await self._injected("users.info", args, token, request)
        if injected is not None:
            return injected
        if self._drops.get("users.info"):  # drop_next("users.info"): a look-up left hanging
            self._drops["users.info"].popleft()
            self.calls.append(ApiCall("users.info", args, token, 0, "dropped"))
            await self._release.wait()
            return web.Response()
        if self._workspace(token) is None:
            return self._answer("users.info", args, token, {"ok": False, "error": "invalid_auth"})
        user = self.users.get(str(args.get("user")))
        if user is None:
            return self._answer("users.info", args, token, {"ok": False, "error": "user_not_found"})
        return self._answer("users.info", args, token, {"ok": True, "user": user})

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        queue = self._failures.get("response_url")
        if queue:
            failure = queue.popleft()
            self.calls.append(ApiCall("response_url", body, None, failure.status, failure.error))
            return web.Response(status=failure.status, text=failure.error)
        self.calls.append(ApiCall("response_url", body, None, 200, None))
        parts = request.match_info["path"].split("/")
        self.posted.append(
            PostedMessage(
                via="response_url",
                team_id=parts[1] if len(parts) > 1 else None,
                channel=None,
                text=body.get("text") or "",
                ts=f"{int(time.time())}.{next(self._ts):06d}",
                blocks=tuple(body.get("blocks") or ()),
                response_type=body.get("response_type"),
            )
        )
        await self._notify()
        return web.Response(text="ok")

    # -- Socket Mode -------------------------------------------------------------------------
    async def _connections_open(self, request: web.Request) -> web.Response:
        args, token = await self._args(request)
        ws = next((w for w in self.workspaces if w.app_token == token), None)
        if ws is None:
            return self._answer(
                "apps.connections.open", args, token, {"ok": False, "error": "invalid_auth"}
            )
        if self.refuse_connections:
            return self._answer(
                "apps.connections.open", args, token, {"ok": False, "error": "internal_error"}
            )
        ticket = uuid.uuid4().hex
        self._tickets[ticket] = ws
        url = f"ws://{self.host}:{self.port}/link/?ticket={ticket}&app_id={ws.app_id}"
        return self._answer("apps.connections.open", args, token, {"ok": True, "url": url})

    @property
    def open_sockets(self) -> list[web.WebSocketResponse]:
        return [ws for ws, _ in self._sockets if not ws.closed]

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        workspace = self._tickets.pop(request.query.get("ticket", ""), None)
        if workspace is None:
            raise web.HTTPUnauthorized()
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append((ws, workspace))
        self.connections_opened += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self.open_sockets),
                "debug_info": {"host": "emulator", "approximate_connection_time": 18060},
                "connection_info": {"app_id": workspace.app_id},
            }
        )
        await self._notify()
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                if isinstance(data, dict) and "envelope_id" in data:
                    self.acks.append(str(data["envelope_id"]))
                    await self._notify()
        finally:
            await self._notify()
        return ws

    async def push(
        self,
        envelope_type: Literal["events_api", "slash_commands", "interactive"],
        payload: dict[str, Any],
        *,
        envelope_id: str | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> str:
        """Send one envelope on the newest open socket; returns its envelope_id."""
        sockets = self.open_sockets
        if not sockets:
            raise RuntimeError("no Socket Mode connection is open")
        envelope_id = envelope_id or str(uuid.uuid4())
        await sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "payload": payload,
                "type": envelope_type,
                "accepts_response_payload": envelope_type != "events_api",
                "retry_attempt": retry_attempt,
                "retry_reason": retry_reason,
            }
        )
        return envelope_id

    async def wait_for_ack(self, envelope_id: str, *, timeout: float = 10.0) -> None:
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: envelope_id in self.acks)

    async def disconnect_sockets(self, *, graceful: bool = True) -> None:
        """Graceful: Slack's ``disconnect`` message (refresh); else the socket just closes."""
        for ws in self.open_sockets:
            if graceful:
                await ws.send_json(
                    {"type": "disconnect", "reason": "refresh_requested", "debug_info": {}}
                )
            else:
                await ws.close()
