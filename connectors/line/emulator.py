"""A local LINE platform: the Messaging API subset the connector uses, and a webhook sender.

:class:`LineEmulator` is a real aiohttp server answering, like ``api.line.me``:

- ``POST /v2/bot/message/reply`` — reply tokens are single use and expire
  ``reply_token_lifetime`` seconds after the emulator issued (or learned) them; a used,
  expired or unknown token gets ``400 {"message": "Invalid reply token"}``;
- ``POST /v2/bot/message/push`` — an ``X-Line-Retry-Key`` is accepted once; a repeat gets
  ``409`` with ``X-Line-Accepted-Request-Id``;
- ``POST /v2/bot/chat/loading/start`` — the loading indicator (1:1 chats only);
- ``GET /v2/bot/profile/{userId}`` — profiles registered with :meth:`LineEmulator.add_profile`;
- ``GET /v2/bot/group/{groupId}/member/{userId}`` and ``GET /v2/bot/room/{roomId}/member/{userId}``
  — the profiles of the members :meth:`LineEmulator.add_member` put in a group or room
  (404 for anyone else, as LINE answers for a user not in that chat);
- ``GET /v2/bot/message/{messageId}/content`` — the data API (``api-data.line.me``): the bytes
  tests seed with :meth:`LineEmulator.add_content` (or :meth:`LineWebhookSender.image`),
  to the channel's access token only.

Message objects are held to LINE's documented limits (:mod:`connectors.line.emulator_checks`).
:meth:`LineEmulator.fetch_media` fetches a URL LINE was given (an image's
``originalContentUrl``) as LINE's servers do, and records what came back.

Every request is recorded; ``fail_next`` answers the next calls with 429 (+ Retry-After) or
500 without processing them, and ``delay_next`` processes a call but answers it late (for
client timeouts). :class:`LineWebhookSender` builds complete webhook events (every field the
SDK requires), issues their reply tokens from the emulator, signs the raw body with the
channel secret and posts it, including redeliveries (``deliveryContext.isRedelivery``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import web

from connectors.line.emulator_checks import invalid_messages, tiny_png

__all__ = [
    "Delivery",
    "LineEmulator",
    "LineWebhookSender",
    "RecordedCall",
    "new_webhook_event_id",
    "sign_body",
    "tiny_png",
]

Endpoint = Literal["reply", "push", "loading", "profile", "member_profile", "content"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RETRY_KEY_LIFETIME = 24 * 3600.0


def new_webhook_event_id() -> str:
    """A ULID, as LINE uses for webhookEventId: 48-bit ms time + 80 random bits, base32."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def sign_body(channel_secret: str, body: bytes) -> str:
    """X-Line-Signature: base64 of HMAC-SHA256 over the raw body with the channel secret."""
    digest = hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True, slots=True)
class RecordedCall:
    endpoint: Endpoint
    status: int
    destination: str | None
    body: dict[str, Any] | None
    retry_key: str | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Messages the emulated LINE accepted for a chat."""

    via: Literal["reply", "push"]
    destination: str
    to: str
    messages: list[dict[str, Any]]
    retry_key: str | None = None
    received_at: float = field(default_factory=time.monotonic, compare=False)

    @property
    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages if m.get("type") == "text"]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]


@dataclass(slots=True)
class _Token:
    destination: str
    chat_id: str
    issued: float
    used: bool = False


@dataclass(slots=True)
class _Failure:
    endpoint: Endpoint | None
    status: int
    retry_after: float | None


class LineEmulator:
    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, reply_token_lifetime: float = 60.0
    ) -> None:
        self.host = host
        self.port = port
        self.reply_token_lifetime = reply_token_lifetime
        self.calls: list[RecordedCall] = []
        self.deliveries: list[Delivery] = []
        self.loading: list[tuple[str, int]] = []  # (chat id, seconds)
        self._tokens_by_access: dict[str, str] = {}  # access token -> destination
        self._secrets: dict[str, str] = {}  # destination -> channel secret
        self._profiles: dict[str, dict[str, str]] = {}
        self._members: dict[str, dict[str, dict[str, str]]] = {}  # chat id -> user id -> profile
        self._contents: dict[str, tuple[str, bytes]] = {}  # message id -> (type, bytes)
        self.fetched: list[tuple[str, int, bytes]] = []  # (url, status, body) LINE fetched
        self._reply_tokens: dict[str, _Token] = {}
        self._retry_keys: dict[tuple[str, str], tuple[float, str]] = {}
        self._failures: deque[_Failure] = deque()
        self._delays: deque[tuple[Endpoint, float]] = deque()
        self._runner: web.AppRunner | None = None
        self._changed: asyncio.Condition | None = None

    # -- set-up --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_channel(self, *, destination: str, access_token: str, channel_secret: str) -> None:
        self._tokens_by_access[access_token] = destination
        self._secrets[destination] = channel_secret

    def channel_secret(self, destination: str) -> str:
        return self._secrets[destination]

    def add_profile(self, user_id: str, display_name: str, *, language: str = "en") -> None:
        self._profiles[user_id] = {
            "userId": user_id,
            "displayName": display_name,
            "language": language,
        }

    def add_content(self, message_id: str, data: bytes, content_type: str = "image/png") -> None:
        """The bytes LINE keeps for a message someone sent (served by the content API)."""
        self._contents[message_id] = (content_type, data)

    async def fetch_media(self, url: str) -> tuple[int, bytes]:
        """GET ``url`` as LINE's servers fetch a media message's content; recorded."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers={"User-Agent": "LINE-Emulator"}) as response,
        ):
            body = await response.read()
        self.fetched.append((url, response.status, body))
        return response.status, body

    def issue_reply_token(self, destination: str, chat_id: str) -> str:
        """A fresh reply token for an event sent to ``destination`` from ``chat_id``."""
        token = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        self.learn_reply_token(token, destination=destination, chat_id=chat_id)
        return token

    def learn_reply_token(
        self, token: str, *, destination: str, chat_id: str, issued: float | None = None
    ) -> None:
        issued_at = time.monotonic() if issued is None else issued
        self._reply_tokens[token] = _Token(destination, chat_id, issued_at)

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        retry_after: float | None = None,
        endpoint: Endpoint | None = None,
    ) -> None:
        """Answer the next ``count`` matching calls with ``status`` and do nothing else."""
        self._failures.extend(_Failure(endpoint, status, retry_after) for _ in range(count))

    def delay_next(self, endpoint: Endpoint, seconds: float) -> None:
        """Process the next ``endpoint`` call normally but answer only after ``seconds``."""
        self._delays.append((endpoint, seconds))

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> LineEmulator:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/v2/bot/message/reply", self._reply)
        app.router.add_post("/v2/bot/message/push", self._push)
        app.router.add_post("/v2/bot/chat/loading/start", self._loading)
        app.router.add_get("/v2/bot/profile/{user_id}", self._profile)
        self._add_member_routes(app)
        app.router.add_get("/v2/bot/message/{message_id}/content", self._content)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        assert server is not None
        sockets = server.sockets  # type: ignore[attr-defined]  # an asyncio.Server
        self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- inspection ----------------------------------------------------------------------------
    def deliveries_to(self, chat_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.to == chat_id]

    def texts_to(self, chat_id: str) -> list[str]:
        return [text for d in self.deliveries_to(chat_id) for text in d.texts]

    def calls_to(self, endpoint: Endpoint) -> list[RecordedCall]:
        return [c for c in self.calls if c.endpoint == endpoint]

    async def wait_for(self, count: int, *, timeout: float = 10.0) -> list[Delivery]:
        """Wait until at least ``count`` deliveries have been accepted."""
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.deliveries) >= count)
        return list(self.deliveries)

    # -- handlers ------------------------------------------------------------------------------
    async def _record(self, call: RecordedCall, delivery: Delivery | None = None) -> None:
        assert self._changed is not None
        async with self._changed:
            self.calls.append(call)
            if delivery is not None:
                self.deliveries.append(delivery)
            self._changed.notify_all()

    def _destination(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        return self._tokens_by_access.get(auth[7:])

    def _injected(self, endpoint: Endpoint) -> web.Response | None:
        for failure in self._failures:
            if failure.endpoint in (None, endpoint):
                self._failures.remove(failure)
                headers = {}
                if failure.retry_after is not None:
                    headers["Retry-After"] = str(int(failure.retry_after))
                return web.json_response(
                    {"message": "injected failure"}, status=failure.status, headers=headers
                )
        return None

    async def _late(self, endpoint: Endpoint) -> None:
        for delay in self._delays:
            if delay[0] == endpoint:
                self._delays.remove(delay)
                await asyncio.sleep(delay[1])
                return

    async def _json(self, request: web.Request) -> dict[str, Any] | None:
        try:
            data = await request.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _invalid_messages(messages: Any) -> str | None:
        return invalid_messages(messages)

    async def _common(
        self, request: web.Request, endpoint: Endpoint
    ) -> tuple[str | None, dict[str, Any] | None, web.Response | None]:
        destination = self._destination(request)
        if destination is None:
            response = web.json_response(
                {"message": "Authentication failed. Confirm that the access token is valid."},
                status=401,
            )
            await self._record(RecordedCall(endpoint, 401, None, None))
            return None, None, response
        body = await self._json(request) if request.method == "POST" else None
        injected = self._injected(endpoint)
        if injected is not None:
            retry_key = request.headers.get("X-Line-Retry-Key")
            await self._record(
                RecordedCall(endpoint, injected.status, destination, body, retry_key)
            )
            return destination, body, injected
        return destination, body, None

    async def _reply(self, request: web.Request) -> web.Response:
        destination, body, early = await self._common(request, "reply")
        if early is not None:
            return early
        assert destination is not None
        if body is None:
            await self._record(RecordedCall("reply", 400, destination, None))
            return web.json_response({"message": "The request body has 1 error(s)"}, status=400)
        problem = self._invalid_messages(body.get("messages"))
        if problem is not None:
            await self._record(RecordedCall("reply", 400, destination, body))
            return web.json_response(
                {"message": "The request body has 1 error(s)", "details": [{"message": problem}]},
                status=400,
            )
        token = self._reply_tokens.get(str(body.get("replyToken")))
        now = time.monotonic()
        if (
            token is None
            or token.used
            or token.destination != destination
            or now - token.issued > self.reply_token_lifetime
        ):
            await self._record(RecordedCall("reply", 400, destination, body))
            return web.json_response({"message": "Invalid reply token"}, status=400)
        token.used = True
        sent = [{"id": str(uuid.uuid4().int)[:18]} for _ in body["messages"]]
        await self._record(
            RecordedCall("reply", 200, destination, body),
            Delivery("reply", destination, token.chat_id, body["messages"]),
        )
        await self._late("reply")
        return web.json_response({"sentMessages": sent})

    async def _push(self, request: web.Request) -> web.Response:
        destination, body, early = await self._common(request, "push")
        if early is not None:
            return early
        assert destination is not None
        retry_key = request.headers.get("X-Line-Retry-Key")
        if body is None or not isinstance(body.get("to"), str):
            await self._record(RecordedCall("push", 400, destination, body, retry_key))
            return web.json_response({"message": "The request body has 1 error(s)"}, status=400)
        problem = self._invalid_messages(body.get("messages"))
        if problem is not None:
            await self._record(RecordedCall("push", 400, destination, body, retry_key))
            return web.json_response(
                {"message": "The request body has 1 error(s)", "details": [{"message": problem}]},
                status=400,
            )
        now = time.monotonic()
        if retry_key is not None:
            try:
                uuid.UUID(retry_key)
            except ValueError:
                await self._record(RecordedCall("push", 400, destination, body, retry_key))
                return web.json_response(
                    {"message": "The value of the X-Line-Retry-Key header is invalid"}, status=400
                )
            seen = self._retry_keys.get((destination, retry_key))
            if seen is not None and now - seen[0] < _RETRY_KEY_LIFETIME:
                await self._record(RecordedCall("push", 409, destination, body, retry_key))
                return web.json_response(
                    {"message": "The retry key is already accepted"},
                    status=409,
                    headers={"X-Line-Accepted-Request-Id": seen[1]},
                )
        request_id = str(uuid.uuid4())
        if retry_key is not None:
            self._retry_keys[(destination, retry_key)] = (now, request_id)
        sent = [{"id": str(uuid.uuid4().int)[:18]} for _ in body["messages"]]
        await self._record(
            RecordedCall("push", 200, destination, body, retry_key),
            Delivery("push", destination, body["to"], body["messages"], retry_key),
        )
        await self._late("push")
        return web.json_response({"sentMessages": sent}, headers={"X-Line-Request-Id": request_id})

    async def _loading(self, request: web.Request) -> web.Response:
        destination, body, early = await self._common(request, "loading")
        if early is not None:
            return early
        chat_id = (body or {}).get("chatId")
        seconds = (body or {}).get("loadingSeconds", 5)
        valid_seconds = isinstance(seconds, int) and 5 <= seconds <= 60 and seconds % 5 == 0
        if not isinstance(chat_id, str) or not chat_id.startswith("U") or not valid_seconds:
            await self._record(RecordedCall("loading", 400, destination, body))
            return web.json_response({"message": "The request body has 1 error(s)"}, status=400)
        self.loading.append((chat_id, seconds))
        await self._record(RecordedCall("loading", 202, destination, body))
        await self._late("loading")
        return web.json_response({}, status=202)

    async def _profile(self, request: web.Request) -> web.Response:
        destination, _, early = await self._common(request, "profile")
        if early is not None:
            return early
        profile = self._profiles.get(request.match_info["user_id"])
        if profile is None:
            await self._record(RecordedCall("profile", 404, destination, None))
            return web.json_response({"message": "Not found"}, status=404)
        await self._record(RecordedCall("profile", 200, destination, None))
        return web.json_response(profile)

    async def _content(self, request: web.Request) -> web.Response:
        destination, _, early = await self._common(request, "content")
        if early is not None:
            return early
        content = self._contents.get(request.match_info["message_id"])
        if content is None:
            await self._record(RecordedCall("content", 404, destination, None))
            return web.json_response({"message": "Not found"}, status=404)
        await self._record(RecordedCall("content", 200, destination, None))
        return web.Response(body=content[1], content_type=content[0])

    # -- group and room members (their profiles) ------------------------------------------------
    def add_member(self, chat_id: str, user_id: str, display_name: str) -> None:
        """``user_id`` is in the group or room ``chat_id``, seen there as ``display_name``."""
        self._members.setdefault(chat_id, {})[user_id] = {
            "userId": user_id,
            "displayName": display_name,
        }

    def _add_member_routes(self, app: web.Application) -> None:
        app.router.add_get("/v2/bot/group/{chat_id}/member/{user_id}", self._member_profile)
        app.router.add_get("/v2/bot/room/{chat_id}/member/{user_id}", self._member_profile)

    async def _member_profile(self, request: web.Request) -> web.Response:
        destination, _, early = await self._common(request, "member_profile")
        if early is not None:
            return early
        members = self._members.get(request.match_info["chat_id"], {})
        profile = members.get(request.match_info["user_id"])
        status = 200 if profile is not None else 404
        await self._record(RecordedCall("member_profile", status, destination, None))
        if profile is None:
            return web.json_response({"message": "Not found"}, status=404)
        return web.json_response(profile)


@dataclass(slots=True)
class LineWebhookSender:
    """Signs and posts webhooks to a gateway as the LINE platform does."""

    session: aiohttp.ClientSession
    gateway_url: str
    destination: str
    channel_secret: str
    emulator: LineEmulator | None = None
    path: str = "/line/webhook"

    # -- building events ---------------------------------------------------------------------------
    @staticmethod
    def source(
        user_id: str | None, *, group_id: str | None = None, room_id: str | None = None
    ) -> dict[str, Any]:
        if group_id is not None:
            return {"type": "group", "groupId": group_id} | ({"userId": user_id} if user_id else {})
        if room_id is not None:
            return {"type": "room", "roomId": room_id} | ({"userId": user_id} if user_id else {})
        return {"type": "user", "userId": user_id}

    def _token(self, source: dict[str, Any]) -> str:
        chat = source.get("groupId") or source.get("roomId") or source["userId"]
        if self.emulator is None:
            return base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        return self.emulator.issue_reply_token(self.destination, chat)

    def event(
        self, event_type: str, source: dict[str, Any], *, reply: bool = True, **extra: Any
    ) -> dict[str, Any]:
        """A complete event: every common field the SDK requires is present."""
        event: dict[str, Any] = {
            "type": event_type,
            "mode": "active",
            "timestamp": time.time_ns() // 1_000_000,
            "source": source,
            "webhookEventId": new_webhook_event_id(),
            "deliveryContext": {"isRedelivery": False},
        }
        if reply:
            event["replyToken"] = self._token(source)
        event.update(extra)
        return event

    def text(
        self,
        text: str,
        *,
        user_id: str,
        group_id: str | None = None,
        room_id: str | None = None,
    ) -> dict[str, Any]:
        message = {
            "id": str(uuid.uuid4().int)[:18],
            "type": "text",
            "text": text,
            "quoteToken": base64.urlsafe_b64encode(os.urandom(18)).decode(),
        }
        return self.event(
            "message", self.source(user_id, group_id=group_id, room_id=room_id), message=message
        )

    def media(self, content: dict[str, Any], *, user_id: str) -> dict[str, Any]:
        """A message event whose message object is ``content`` (id added)."""
        message = {"id": str(uuid.uuid4().int)[:18], **content}
        return self.event("message", self.source(user_id), message=message)

    def content(
        self,
        kind: Literal["image", "video", "audio", "file"],
        data: bytes,
        *,
        user_id: str,
        content_type: str = "image/png",
        **fields: Any,
    ) -> dict[str, Any]:
        """A message event with a file LINE keeps: its bytes are seeded in the emulator's
        content API under the message id (``fields``: fileName, fileSize, duration…)."""
        message: dict[str, Any] = {"id": str(uuid.uuid4().int)[:18], "type": kind, **fields}
        if kind != "file":
            message.setdefault("contentProvider", {"type": "line"})
        if kind in ("image", "video"):
            message.setdefault("quoteToken", base64.urlsafe_b64encode(os.urandom(18)).decode())
        if self.emulator is not None:
            self.emulator.add_content(message["id"], data, content_type)
        return self.event("message", self.source(user_id), message=message)

    def image(self, data: bytes | None = None, *, user_id: str) -> dict[str, Any]:
        """A photo sent from LINE's app (a small PNG unless ``data`` is given)."""
        return self.content("image", tiny_png() if data is None else data, user_id=user_id)

    def follow(self, *, user_id: str) -> dict[str, Any]:
        return self.event("follow", self.source(user_id), follow={"isUnblocked": False})

    def unfollow(self, *, user_id: str) -> dict[str, Any]:
        return self.event("unfollow", self.source(user_id), reply=False)

    def postback(self, data: str, *, user_id: str) -> dict[str, Any]:
        return self.event("postback", self.source(user_id), postback={"data": data})

    def join(self, *, group_id: str | None = None, room_id: str | None = None) -> dict[str, Any]:
        return self.event("join", self.source(None, group_id=group_id, room_id=room_id))

    def leave(self, *, group_id: str | None = None, room_id: str | None = None) -> dict[str, Any]:
        source = self.source(None, group_id=group_id, room_id=room_id)
        return self.event("leave", source, reply=False)

    def member_joined(self, *, group_id: str, user_ids: list[str]) -> dict[str, Any]:
        members = [{"type": "user", "userId": uid} for uid in user_ids]
        source = self.source(None, group_id=group_id)
        return self.event("memberJoined", source, joined={"members": members})

    @staticmethod
    def redelivery(event: dict[str, Any]) -> dict[str, Any]:
        """The same event as LINE redelivers it: same webhookEventId, marked as redelivered."""
        return {**event, "deliveryContext": {"isRedelivery": True}}

    # -- posting -------------------------------------------------------------------------------
    def body(self, events: list[dict[str, Any]]) -> bytes:
        # LINE sends UTF-8 JSON without ASCII escapes; the signature covers these exact bytes.
        payload = {"destination": self.destination, "events": events}
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    async def post_raw(
        self, body: bytes, *, signature: str | None, path: str | None = None
    ) -> tuple[int, str]:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "LineBotWebhook/2.0",
        }
        if signature is not None:
            headers["X-Line-Signature"] = signature
        url = self.gateway_url + (path or self.path)
        async with self.session.post(url, data=body, headers=headers) as response:
            return response.status, await response.text()

    async def post(self, events: list[dict[str, Any]], *, path: str | None = None) -> int:
        body = self.body(events)
        status, _ = await self.post_raw(
            body, signature=sign_body(self.channel_secret, body), path=path
        )
        return status
