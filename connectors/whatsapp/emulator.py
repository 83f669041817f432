"""A local Twilio for WhatsApp: the Messages API subset the connector uses, and Twilio's side
of the webhooks.

``TwilioEmulator`` is a real aiohttp server:

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP Basic auth
  (AccountSid:AuthToken), form fields as the SDK sends them, Twilio's validation errors
  (21602, 21603, 21604, 21617), and failures on demand (429/20429 with Retry-After, 5xx,
  any code; 63016 outside a closed customer-service window);
- the Content API, media resources behind a redirect to a separate media host, and the
  typing indicator (:mod:`connectors.whatsapp.emulator_rich`, as ``emulator.rich``);
- with ``fetch_media``, every ``MediaUrl`` (and a created content's media) fetched the way
  Twilio fetches them before delivering, the bytes kept in ``emulator.rich.fetched``;
- after a 201, status callbacks (``sent`` → ``delivered`` → ``read``, or ``failed`` /
  ``undelivered`` with an ErrorCode on demand) POSTed to the message's StatusCallback URL,
  signed with X-Twilio-Signature exactly as Twilio signs them.

``TwilioWebhookSender`` posts inbound WhatsApp messages to the gateway the way Twilio does:
complete form payloads, signed with the twilio SDK's ``RequestValidator`` over the public
URL — optionally through a simulated TLS-terminating proxy (signed over ``https://public…``,
delivered over plain http with X-Forwarded-Proto / X-Forwarded-Host).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from connectors.whatsapp.emulator_rich import RichTwilio
from gateway.models import utcnow

__all__ = [
    "EmulatedMessage",
    "SentCallback",
    "TwilioEmulator",
    "TwilioWebhookSender",
    "new_sid",
]

API_VERSION = "2010-04-01"
DEFAULT_SERVICE_SENDER = "whatsapp:+14155238886"  # Twilio's WhatsApp sandbox number


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class EmulatedMessage:
    """One message the Messages API accepted."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str | None
    media_urls: tuple[str, ...]
    content_sid: str | None
    content_variables: dict[str, Any] | None
    status_callback: str | None
    user_agent: str
    persistent_action: tuple[str, ...] = ()
    content: Any = None  # the created content with its variables filled in, if known
    received_at: float = field(default_factory=time.monotonic, compare=False)


@dataclass(frozen=True, slots=True)
class SentCallback:
    url: str  # the StatusCallback URL (what was signed)
    params: dict[str, str]
    http_status: int


@dataclass(slots=True)
class _Failure:
    status: int
    code: int
    retry_after: str | None
    message: str


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        login, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return (login, password) if sep else (None, None)


def _error(
    status: int, code: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status, headers=headers)


@dataclass(slots=True)
class TwilioEmulator:
    """A real HTTP server speaking the Messages API subset; see the module docstring."""

    accounts: Mapping[str, str]  # AccountSid → AuthToken
    host: str = "127.0.0.1"
    port: int = 0
    status_flow: tuple[str, ...] = ("sent", "delivered", "read")
    callback_delay: float = 0.01
    fetch_media: bool = False  # GET each MediaUrl (and content media) as Twilio does
    # Where status callbacks really go: this base + the StatusCallback's path and query
    # (the gateway behind its public URL). None: post to the StatusCallback URL itself.
    gateway_url: str | None = None
    service_senders: dict[str, str] = field(default_factory=dict)  # MG… → whatsapp:+…
    messages: list[EmulatedMessage] = field(default_factory=list)
    refused: list[tuple[int, int]] = field(default_factory=list)  # (HTTP status, code)
    callbacks: list[SentCallback] = field(default_factory=list)
    _failures: deque[_Failure] = field(default_factory=deque)
    _pass_before_failing: int = 0
    _delivery_failures: dict[str, tuple[str, int]] = field(default_factory=dict)
    _closed_windows: dict[str, bool] = field(default_factory=dict)  # to → refuse at the API
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _changed: asyncio.Condition | None = None
    rich: RichTwilio = field(init=False)

    def __post_init__(self) -> None:
        self.rich = RichTwilio(self.accounts)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- failures on demand ----------------------------------------------------------------------
    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 429,
        code: int = 20429,
        retry_after: float | str | None = None,
        message: str = "Too Many Requests",
        after: int = 0,
    ) -> None:
        """Refuse ``count`` create calls with this status and Twilio error code, once
        ``after`` more calls have gone through."""
        ra = None if retry_after is None else str(retry_after)
        self._failures.extend(_Failure(status, code, ra, message) for _ in range(count))
        self._pass_before_failing = after

    def fail_delivery(
        self, to: str, *, status: str = "undelivered", error_code: int = 63024
    ) -> None:
        """Accept messages to ``to`` but report them ``status`` with ``error_code``."""
        self._delivery_failures[to] = (status, error_code)

    def close_window(self, to: str, *, at_api: bool = False) -> None:
        """No session with ``to``: free-form messages fail with 63016 (as a failed status
        callback, or at once with HTTP 400 when ``at_api``); templates still go through."""
        self._closed_windows[to] = at_api

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> TwilioEmulator:
        self._changed = asyncio.Condition()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        app = web.Application()
        app.router.add_post(f"/{API_VERSION}/Accounts/{{account}}/Messages.json", self._create)
        self.rich.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        assert server is not None
        sockets = server.sockets  # type: ignore[attr-defined]  # an asyncio.Server at runtime
        self.port = sockets[0].getsockname()[1]
        self.rich.api_url = self.url
        await self.rich.start_media_host(self.host)
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.rich.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> TwilioEmulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, count: int, *, timeout: float = 10.0) -> list[EmulatedMessage]:
        """Wait until ``count`` messages have been accepted."""
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.messages) >= count)
        return list(self.messages)

    async def wait_for_callbacks(self, count: int, *, timeout: float = 10.0) -> list[SentCallback]:
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.callbacks) >= count)
        return list(self.callbacks)

    # -- the Messages API ------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        account = request.match_info["account"]
        login, password = _basic_credentials(request.headers.get("Authorization", ""))
        token = self.accounts.get(account)
        if token is None or login != account or password != token:
            self.refused.append((401, 20003))
            return _error(401, 20003, "Authenticate")
        form = await request.post()
        if self._failures and self._pass_before_failing > 0:
            self._pass_before_failing -= 1
        elif self._failures:
            failure = self._failures.popleft()
            self.refused.append((failure.status, failure.code))
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
            return _error(failure.status, failure.code, failure.message, headers)
        to = str(form.get("To", ""))
        sender = str(form.get("From", "")) or None
        service = str(form.get("MessagingServiceSid", "")) or None
        body = str(form["Body"]) if "Body" in form else None
        media = tuple(str(v) for v in form.getall("MediaUrl", []))
        content_sid = str(form.get("ContentSid", "")) or None
        problem = self._problem(to, sender, service, body, media, content_sid)
        if problem is not None:
            self.refused.append((400, problem[0]))
            return _error(400, *problem)
        raw_variables = form.get("ContentVariables")
        variables = json.loads(str(raw_variables)) if raw_variables else None
        message = EmulatedMessage(
            sid=new_sid("SM" if not media else "MM"),
            account_sid=account,
            to=to,
            from_=sender,
            messaging_service_sid=service,
            body=body,
            media_urls=media,
            content_sid=content_sid,
            content_variables=variables,
            status_callback=str(form.get("StatusCallback", "")) or None,
            user_agent=request.headers.get("User-Agent", ""),
            persistent_action=tuple(str(v) for v in form.getall("PersistentAction", [])),
            content=self.rich.render(content_sid, variables),
        )
        if self.fetch_media:
            await self._fetch_all(message)
        self.messages.append(message)
        await self._notify()
        if message.status_callback is not None:
            task = asyncio.create_task(self._report(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        now = format_datetime(utcnow(), usegmt=True)
        uri = f"/{API_VERSION}/Accounts/{account}/Messages/{message.sid}.json"
        return web.json_response(
            {
                "account_sid": account,
                "api_version": API_VERSION,
                "body": body or "",
                "date_created": now,
                "date_sent": None,
                "date_updated": now,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": sender,
                "messaging_service_sid": service,
                "num_media": str(len(media)),
                "num_segments": "1",
                "price": None,
                "price_unit": "USD",
                "sid": message.sid,
                "status": "accepted" if service is not None else "queued",
                "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
                "to": to,
                "uri": uri,
            },
            status=201,
        )

    async def _fetch_all(self, message: EmulatedMessage) -> None:
        assert self._session is not None
        urls = list(message.media_urls)
        for body in (message.content or {}).values():
            found = body.get("media") if isinstance(body, dict) else None
            urls += found if isinstance(found, list) else [found] if found else []
            for card in body.get("cards", ()) if isinstance(body, dict) else ():
                urls += [card["media"]] if card.get("media") else []
        for url in urls:
            await self.rich.fetch(self._session, url)

    def _problem(
        self,
        to: str,
        sender: str | None,
        service: str | None,
        body: str | None,
        media: Sequence[str],
        content_sid: str | None,
    ) -> tuple[int, str] | None:
        if not to:
            return 21604, "A 'To' phone number is required."
        if sender is None and service is None:
            return 21603, "A 'From' phone number is required."
        if not body and not media and content_sid is None:
            return 21602, "Message body is required."
        if body is not None and len(body) > 1600:
            return 21617, "The concatenated message body exceeds the 1600 character limit."
        if sender is not None and sender.startswith("whatsapp:") != to.startswith("whatsapp:"):
            return 21910, "Invalid From and To pair. From and To should be of the same channel."
        if content_sid is None and self._closed_windows.get(to):
            return 63016, (
                "Failed to send freeform message because you are outside the allowed window. "
                "If you are using WhatsApp, please use a Message Template."
            )
        return None

    # -- status callbacks ------------------------------------------------------------------------
    async def _report(self, message: EmulatedMessage) -> None:
        assert message.status_callback is not None
        assert self._session is not None
        flow: Iterable[tuple[str, int | None]] = [(s, None) for s in self.status_flow]
        if message.content_sid is None and message.to in self._closed_windows:
            flow = [("failed", 63016)]
        elif message.to in self._delivery_failures:
            status, code = self._delivery_failures[message.to]
            flow = [("sent", None), (status, code)]
        sender = message.from_ or self.service_senders.get(
            message.messaging_service_sid or "", DEFAULT_SERVICE_SENDER
        )
        token = self.accounts[message.account_sid]
        for status, error_code in flow:
            await asyncio.sleep(self.callback_delay)
            params = {
                "AccountSid": message.account_sid,
                "ApiVersion": API_VERSION,
                "ChannelInstallSid": "XE" + "0" * 32,
                "ChannelPrefix": "whatsapp",
                "ChannelToAddress": message.to.removeprefix("whatsapp:"),
                "From": sender,
                "MessageSid": message.sid,
                "MessageStatus": status,
                "SmsSid": message.sid,
                "SmsStatus": status,
                "StructuredMessage": "false",
                "To": message.to,
            }
            if message.messaging_service_sid is not None:
                params["MessagingServiceSid"] = message.messaging_service_sid
            if error_code is not None:
                params["ErrorCode"] = str(error_code)
            signature = RequestValidator(token).compute_signature(message.status_callback, params)
            target = message.status_callback
            if self.gateway_url is not None:
                parts = urlsplit(message.status_callback)
                target = self.gateway_url.rstrip("/") + parts.path
                target += f"?{parts.query}" if parts.query else ""
            try:
                async with self._session.post(
                    target,
                    data=params,
                    headers={"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"},
                ) as response:
                    http_status = response.status
            except aiohttp.ClientError:
                http_status = 0  # Twilio logs error 11200 and moves on
            self.callbacks.append(SentCallback(message.status_callback, params, http_status))
            await self._notify()


class TwilioWebhookSender:
    """Posts WhatsApp messages to the gateway as Twilio does; see the module docstring."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        gateway_url: str,
        account_sid: str,
        auth_token: str,
        public_url: str | None = None,
        via_proxy: bool = False,
        path: str = "/whatsapp/webhook",
    ) -> None:
        self.session = session
        self.gateway_url = gateway_url.rstrip("/")
        self.account_sid = account_sid
        self.validator = RequestValidator(auth_token)
        self.public_url = (public_url or gateway_url).rstrip("/")
        self.via_proxy = via_proxy
        self.path = path

    @property
    def signed_url(self) -> str:
        """The URL Twilio is configured with (and signs)."""
        return self.public_url + self.path

    def inbound(
        self,
        *,
        from_: str,
        to: str,
        body: str = "",
        profile_name: str = "Alice",
        message_sid: str | None = None,
        media: Sequence[tuple[str, str]] = (),
        button: tuple[str, str] | None = None,
        messaging_service_sid: str | None = None,
        list_pick: tuple[str, str] | None = None,
        location: tuple[str, str, str, str] | None = None,
    ) -> dict[str, str]:
        """A complete inbound payload; ``media`` is (url, content type), ``button`` is
        (payload, text) for a quick-reply tap, ``list_pick`` (item id, item title) for a
        list picker's pick, ``location`` (latitude, longitude, address, label)."""
        sid = message_sid or new_sid("SM" if not media else "MM")
        params = {
            "SmsMessageSid": sid,
            "NumMedia": str(len(media)),
            "ProfileName": profile_name,
            "MessageType": "button" if button else ("image" if media else "text"),
            "SmsSid": sid,
            "WaId": from_.removeprefix("whatsapp:+"),
            "SmsStatus": "received",
            "Body": body,
            "To": to,
            "NumSegments": "1",
            "ReferralNumMedia": "0",
            "MessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "ApiVersion": API_VERSION,
        }
        if messaging_service_sid is not None:
            params["MessagingServiceSid"] = messaging_service_sid
        for n, (url, content_type) in enumerate(media):
            params[f"MediaUrl{n}"] = url
            params[f"MediaContentType{n}"] = content_type
        if button is not None:
            params["ButtonPayload"], params["ButtonText"] = button
            params["Body"] = button[1]
            params["OriginalRepliedMessageSender"] = to
            params["OriginalRepliedMessageSid"] = new_sid("SM")
        if list_pick is not None:
            params["ListId"], params["ListTitle"] = list_pick
            params["Body"], params["MessageType"] = list_pick[1], "interactive"
            params["OriginalRepliedMessageSid"] = new_sid("SM")
        if location is not None:
            latitude, longitude, address, label = location
            params |= {"Latitude": latitude, "Longitude": longitude, "MessageType": "location"}
            params |= {"Address": address, "Label": label}
        return params

    def sign(self, params: Mapping[str, str], url: str | None = None) -> str:
        return str(self.validator.compute_signature(url or self.signed_url, dict(params)))

    async def post(
        self,
        params: Mapping[str, str] | Sequence[tuple[str, str]],
        *,
        signature: str | None = None,
        signed_params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        unsigned: bool = False,
    ) -> tuple[int, str, str]:
        """POST ``params`` (a list keeps its order on the wire); signs them unless told
        otherwise. Returns (status, body, content type)."""
        pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
        all_headers = {"User-Agent": "TwilioProxy/1.1", **(headers or {})}
        if not unsigned:
            all_headers["X-Twilio-Signature"] = signature or self.sign(
                signed_params if signed_params is not None else dict(pairs)
            )
        if self.via_proxy:
            public = urlsplit(self.public_url)
            all_headers.setdefault("X-Forwarded-Proto", public.scheme)
            all_headers.setdefault("X-Forwarded-Host", public.netloc)
        async with self.session.post(
            self.gateway_url + self.path, data=pairs, headers=all_headers
        ) as response:
            return response.status, await response.text(), response.content_type

    async def send(self, **fields: Any) -> tuple[int, dict[str, str]]:
        """Build, sign and post one inbound message; (status, the params sent)."""
        params = self.inbound(**fields)
        status, _, _ = await self.post(params)
        return status, params
