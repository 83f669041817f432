"""The rich half of the local Twilio: Content API, media resources, typing indicators.

Served by :class:`~connectors.whatsapp.emulator.TwilioEmulator` on its own listener:

- ``POST /v1/Content`` (a JSON body, as Twilio takes it; a form body is refused with 400)
  and ``GET /v1/Content`` (paged, ``meta.next_page_url``), HTTP Basic auth; contents kept
  per account; refusals on demand (:meth:`RichTwilio.fail_content`);
- media resources ``GET /2010-04-01/Accounts/{sid}/Messages/{MM}/Media/{ME}``: bytes a
  test seeds (:meth:`RichTwilio.seed_media`), Basic auth checked (401 otherwise), answered
  like Twilio with a redirect to a separate *media host* (another origin, its own port)
  that serves the bytes without credentials and records every request's headers;
- ``POST /v2/Indicators/Typing.json`` (``messageId``, ``channel``), Basic auth, recorded;
  failures or a delay on demand;
- :meth:`RichTwilio.render` — a message's content with its variables filled in, as the
  customer would see it; and the bytes Twilio fetched from each ``MediaUrl`` (the gateway's
  signed links) when ``fetch_media`` is on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from gateway.models import utcnow

__all__ = ["MediaHostRequest", "RichTwilio", "TypingCall"]

_VARIABLE = re.compile(r"\{\{(\d+)\}\}")
_KNOWN_TYPES = {
    "twilio/text",
    "twilio/media",
    "twilio/location",
    "twilio/quick-reply",
    "twilio/list-picker",
    "twilio/call-to-action",
    "twilio/card",
    "twilio/carousel",
}


@dataclass(frozen=True, slots=True)
class TypingCall:
    account_sid: str
    message_id: str
    channel: str


@dataclass(frozen=True, slots=True)
class MediaHostRequest:
    path: str
    authorization: str | None  # the Authorization header the media host received, if any


@dataclass(slots=True)
class RichTwilio:
    accounts: Mapping[str, str]
    api_url: str = ""  # set by the emulator once bound
    contents: dict[str, dict[str, Any]] = field(default_factory=dict)  # HX… → resource
    content_creates: list[str] = field(default_factory=list)  # friendly names, in order
    content_lists: int = 0  # GET /v1/Content pages served
    content_fetches: int = 0  # GET /v1/Content/{sid} served
    typing: list[TypingCall] = field(default_factory=list)
    typing_failure: int | None = None  # HTTP status to answer typing with
    typing_delay: float = 0.0
    media_requests: list[str] = field(default_factory=list)  # API media paths asked for
    media_host_requests: list[MediaHostRequest] = field(default_factory=list)
    fetched: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # url → (status, data)
    _content_failures: list[tuple[int, int]] = field(default_factory=list)
    _media: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # ME… → bytes, type
    _host_runner: web.AppRunner | None = None
    host_url: str = ""

    # -- set-up ----------------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/Content", self._create_content)
        app.router.add_get("/v1/Content", self._list_content)
        app.router.add_get("/v1/Content/{sid}", self._fetch_content)
        app.router.add_get(
            "/2010-04-01/Accounts/{account}/Messages/{message}/Media/{media}", self._media_get
        )
        app.router.add_post("/v2/Indicators/Typing.json", self._typing)

    async def start_media_host(self, host: str) -> None:
        app = web.Application()
        app.router.add_get("/{token}", self._media_host_get)
        self._host_runner = web.AppRunner(app, access_log=None)
        await self._host_runner.setup()
        site = web.TCPSite(self._host_runner, host, 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]  # asyncio.Server
        self.host_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._host_runner is not None:
            await self._host_runner.cleanup()
            self._host_runner = None

    def fail_content(self, count: int = 1, *, status: int = 400, code: int = 21656) -> None:
        """Refuse the next ``count`` Content API calls (create or list)."""
        self._content_failures.extend([(status, code)] * count)

    def seed_media(self, account_sid: str, data: bytes, content_type: str) -> str:
        """Keep ``data`` as a media resource of a new inbound message; its ``MediaUrl``."""
        media_sid = "ME" + secrets.token_hex(16)
        self._media[media_sid] = (data, content_type)
        message_sid = "MM" + secrets.token_hex(16)
        path = f"/2010-04-01/Accounts/{account_sid}/Messages/{message_sid}/Media/{media_sid}"
        return self.api_url + path

    # -- helpers ---------------------------------------------------------------------------------
    def _account(self, request: web.Request, expected: str | None = None) -> str | None:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            login, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if self.accounts.get(login) != password or (expected is not None and login != expected):
            return None
        return login

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        body = {"code": code, "message": message, "status": status}
        return web.json_response(body, status=status)

    def render(self, content_sid: str | None, variables: Mapping[str, Any] | None) -> Any:
        """The content's types with ``variables`` filled in; None for unknown content."""
        resource = self.contents.get(content_sid or "")
        if resource is None:
            return None
        values = {**resource.get("variables", {}), **(variables or {})}

        def fill(value: Any) -> Any:
            if isinstance(value, str):
                return _VARIABLE.sub(lambda m: str(values.get(m.group(1), m.group(0))), value)
            if isinstance(value, list):
                return [fill(v) for v in value]
            if isinstance(value, dict):
                return {k: fill(v) for k, v in value.items()}
            return value

        return fill(resource["types"])

    async def fetch(self, session: aiohttp.ClientSession, url: str) -> None:
        """GET a media URL as Twilio does before delivering it; keep what came back."""
        try:
            async with session.get(url) as response:
                self.fetched[url] = (response.status, await response.read())
        except aiohttp.ClientError:
            self.fetched[url] = (0, b"")

    # -- Content API -----------------------------------------------------------------------------
    def _failure(self) -> web.Response | None:
        if not self._content_failures:
            return None
        status, code = self._content_failures.pop(0)
        return self._error(status, code, "Content refused on demand")

    async def _create_content(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return self._error(401, 20003, "Authenticate")
        if (failure := self._failure()) is not None:
            return failure
        if request.content_type != "application/json":
            return self._error(400, 20001, "Content must be created with a JSON body")
        try:
            body = json.loads(await request.text())
        except ValueError:
            return self._error(400, 20001, "Invalid JSON")
        types = body.get("types") if isinstance(body, dict) else None
        name = body.get("friendly_name") if isinstance(body, dict) else None
        if not isinstance(types, dict) or not types or not isinstance(name, str):
            return self._error(400, 20001, "friendly_name and types are required")
        if not set(types) <= _KNOWN_TYPES:
            return self._error(400, 20001, "Unknown content type")
        sid = "HX" + secrets.token_hex(16)
        now = utcnow().isoformat()
        resource = {
            "sid": sid,
            "account_sid": account,
            "friendly_name": name,
            "language": body.get("language", "en"),
            "variables": body.get("variables") or {},
            "types": types,
            "url": f"{self.api_url}/v1/Content/{sid}",
            "date_created": now,
            "date_updated": now,
            "links": {},
        }
        self.contents[sid] = resource
        self.content_creates.append(name)
        return web.json_response(resource, status=201)

    async def _list_content(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return self._error(401, 20003, "Authenticate")
        if (failure := self._failure()) is not None:
            return failure
        self.content_lists += 1
        size = max(1, min(int(request.query.get("PageSize", "50") or 50), 1000))
        page = int(request.query.get("Page", "0") or 0)
        mine = [c for c in self.contents.values() if c["account_sid"] == account]
        chunk = mine[page * size : (page + 1) * size]
        more = (page + 1) * size < len(mine)
        base = f"{self.api_url}/v1/Content?PageSize={size}"
        return web.json_response(
            {
                "contents": chunk,
                "meta": {
                    "page": page,
                    "page_size": size,
                    "first_page_url": f"{base}&Page=0",
                    "previous_page_url": f"{base}&Page={page - 1}" if page else None,
                    "url": f"{base}&Page={page}",
                    "next_page_url": f"{base}&Page={page + 1}" if more else None,
                    "key": "contents",
                },
            }
        )

    async def _fetch_content(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return self._error(401, 20003, "Authenticate")
        self.content_fetches += 1
        content = self.contents.get(request.match_info["sid"])
        if content is None or content["account_sid"] != account:
            return self._error(404, 20404, "The requested resource was not found")
        return web.json_response(content)

    # -- media -----------------------------------------------------------------------------------
    async def _media_get(self, request: web.Request) -> web.StreamResponse:
        account = request.match_info["account"]
        self.media_requests.append(request.path)
        if self._account(request, expected=account) is None:
            return self._error(401, 20003, "Authenticate")
        media = request.match_info["media"]
        if media not in self._media:
            return self._error(404, 20404, "The requested resource was not found")
        # Twilio sends the bytes from its file host, behind a short-lived URL.
        raise web.HTTPTemporaryRedirect(f"{self.host_url}/{media}")

    async def _media_host_get(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        self.media_host_requests.append(
            MediaHostRequest(request.path, request.headers.get("Authorization"))
        )
        found = self._media.get(token)
        if found is None:
            return web.Response(status=404)
        data, content_type = found
        return web.Response(body=data, content_type=content_type)

    # -- typing ----------------------------------------------------------------------------------
    async def _typing(self, request: web.Request) -> web.Response:
        account = self._account(request)
        if account is None:
            return self._error(401, 20003, "Authenticate")
        form = await request.post()
        self.typing.append(
            TypingCall(account, str(form.get("messageId", "")), str(form.get("channel", "")))
        )
        if self.typing_delay:
            await asyncio.sleep(self.typing_delay)
        if self.typing_failure is not None:
            return self._error(self.typing_failure, 20500, "Typing indicator failed on demand")
        return web.json_response({"success": True})
