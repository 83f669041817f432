"""A real HTTP client and callback receiver for the HTTP API channel.

``CallbackReceiver`` is what a tenant's website runs: it verifies each webhook's v2
signature (method, path, query, body) and records it (tests, the demo and the bench use it).
It can be told to fail the next N calls with a status, to exercise retries.
``HttpChannelClient`` signs (v2) and posts messages, and polls replies, as a website would.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from aiohttp import web

from gateway.errors import VerificationError
from gateway.signing import SIGNATURE_HEADER, sign_request, verify_request

__all__ = ["CallbackReceiver", "HttpChannelClient", "ReceivedCallback"]


@dataclass(frozen=True, slots=True)
class ReceivedCallback:
    payload: dict[str, Any]
    idempotency_key: str
    signature_valid: bool


@dataclass(slots=True)
class CallbackReceiver:
    secrets: Sequence[str]
    # v2 only by default, as a receiver should once on v2; the quota warnings are still v1.
    accept_v1: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    received: list[ReceivedCallback] = field(default_factory=list)
    rejected: int = 0
    _failures: deque[tuple[int, float | None]] = field(default_factory=deque)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/callbacks"

    def fail_next(self, count: int, *, status: int = 500, retry_after: float | None = None) -> None:
        self._failures.extend([(status, retry_after)] * count)

    def unique(self) -> list[ReceivedCallback]:
        """Callbacks with retries of the same idempotency key folded, as a receiver should."""
        seen: dict[str, ReceivedCallback] = {}
        for cb in self.received:
            seen.setdefault(cb.idempotency_key, cb)
        return list(seen.values())

    async def start(self) -> CallbackReceiver:
        self._arrived = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/callbacks", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, *, timeout: float = 10.0) -> list[ReceivedCallback]:
        """Wait until ``count`` distinct callbacks have arrived."""
        assert self._arrived is not None
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.unique()) >= count)
        return self.unique()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        target = urlsplit(request.raw_path)  # as sent: the gateway signed the callback URL's
        try:
            verify_request(
                request.headers.get(SIGNATURE_HEADER),
                request.method,
                target.path,
                target.query,
                body,
                self.secrets,
                accept_v1=self.accept_v1,
            )
        except VerificationError:
            self.rejected += 1
            return web.json_response({"error": "bad signature"}, status=401)
        if self._failures:
            status, retry_after = self._failures.popleft()
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return web.Response(status=status, headers=headers)
        assert self._arrived is not None
        async with self._arrived:
            self.received.append(
                ReceivedCallback(
                    payload=json.loads(body),
                    idempotency_key=request.headers.get("X-FlowBiz-Idempotency-Key", ""),
                    signature_valid=True,
                )
            )
            self._arrived.notify_all()
        return web.Response(status=204)


@dataclass(slots=True)
class HttpChannelClient:
    """Posts messages to the gateway's HTTP API channel, signed or with an API key."""

    session: aiohttp.ClientSession
    base_url: str
    tenant: str
    signing_secret: str | None = None
    api_key: str | None = None

    def _auth(self, method: str, url: str, body: bytes) -> dict[str, str]:
        if self.api_key is not None:
            return {"Authorization": f"Bearer {self.api_key}"}
        if self.signing_secret is not None:
            return {SIGNATURE_HEADER: sign_request([self.signing_secret], method, url, body)}
        return {}

    async def send(
        self,
        *,
        conversation_id: str,
        text: str,
        user_id: str = "user-1",
        user_name: str | None = None,
        event_id: str | None = None,
        action: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        message: dict[str, Any] = {
            "conversation_id": conversation_id,
            "user": {"id": user_id, "name": user_name},
            "text": text,
        }
        if event_id is not None:
            message["event_id"] = event_id
        if action is not None:
            message["action"] = action
        body = json.dumps(message).encode()
        url = f"{self.base_url}/v1/channels/http/{self.tenant}/messages"
        headers = {"Content-Type": "application/json", **self._auth("POST", url, body)}
        async with self.session.post(url, data=body, headers=headers) as response:
            return response.status, await response.json()

    async def replies(
        self, *, conversation_id: str, after: str | None = None, wait: float = 0
    ) -> dict[str, Any]:
        params = {"wait": str(wait)}
        if after is not None:
            params["after"] = after
        # The URL is built here, query included, so what is signed is what is sent.
        url = (
            f"{self.base_url}/v1/channels/http/{self.tenant}"
            f"/conversations/{quote(conversation_id, safe='')}/replies?{urlencode(params)}"
        )
        async with self.session.get(url, headers=self._auth("GET", url, b"")) as response:
            response.raise_for_status()
            result: dict[str, Any] = await response.json()
            return result
