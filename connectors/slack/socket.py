"""Slack Socket Mode: a websocket per app-level token, fed into the same edge as HTTP.

Guarantees: an envelope is acknowledged only after what it carries is durable
(``context.ingest.submit`` returned) or known to need no turn; a store outage leaves it
unacknowledged, so Slack redelivers it. An envelope that can never be stored (malformed,
nested too deep, an unknown team) is acknowledged anyway, counted ``socket_rejected``, or
Slack would resend it forever. The SDK reconnects by itself; ``flowbiz_listener_up`` follows
the socket's state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from logging import Logger
from typing import Any

import aiohttp
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from connectors.base import ConnectorContext
from connectors.slack.edge import SlackEdge
from connectors.slack.workspace import Workspace
from gateway.errors import InboundError, IngestUnavailableError, StoreError
from gateway.observability import get_logger

__all__ = ["SocketListeners"]

log = get_logger(__name__)


@dataclass(slots=True)
class _Listener:
    app_token: str
    workspaces: list[Workspace]
    name: str
    client: SocketModeClient | None = None
    connecting: asyncio.Task[None] | None = None
    watching: asyncio.Task[None] | None = None


class SocketListeners:
    """One Socket Mode connection per app-level token, shared by the workspaces using it."""

    def __init__(
        self,
        *,
        context: ConnectorContext,
        edge: SlackEdge,
        count: Callable[[str], None],
        sdk_log: Logger,
    ) -> None:
        self.context = context
        self._edge = edge
        self._count = count
        self._sdk_log = sdk_log
        self._listeners: dict[str, _Listener] = {}

    def add(self, ws: Workspace) -> None:
        if not ws.config.socket_mode or ws.config.app_token is None:
            return
        token = ws.config.app_token.get_secret_value()
        listener = self._listeners.get(token)
        if listener is None:
            listener = _Listener(token, [], name=f"slack_socket:{ws.label}")
            self._listeners[token] = listener
        listener.workspaces.append(ws)

    def start(self) -> None:
        for listener in self._listeners.values():
            self._start(listener)

    async def stop(self) -> None:
        for listener in self._listeners.values():
            await self._stop(listener)

    def _start(self, listener: _Listener) -> None:
        first = listener.workspaces[0].config
        listener.client = SocketModeClient(
            app_token=listener.app_token,
            web_client=AsyncWebClient(base_url=first.web_api_base_url, logger=self._sdk_log),
            logger=self._sdk_log,
            ping_interval=first.socket_ping_interval_seconds,
            auto_reconnect_enabled=True,
        )
        listener.client.socket_mode_request_listeners.append(partial(self._on_request, listener))
        # connect() retries until it succeeds; startup must not wait for Slack.
        # The SDK leaves connect()/close() unannotated; naming their type keeps mypy strict.
        connect: Callable[[], Coroutine[Any, Any, None]] = listener.client.connect
        listener.connecting = asyncio.create_task(connect())
        listener.watching = asyncio.create_task(self._watch(listener))

    async def _watch(self, listener: _Listener) -> None:
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

    async def _stop(self, listener: _Listener) -> None:
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

    async def _on_request(
        self,
        listener: _Listener,
        client: AsyncBaseSocketModeClient,
        request: SocketModeRequest,
    ) -> None:
        """Verify-free admission (the socket is the app's own), make durable, then ack;
        without the ack Slack redelivers the envelope."""
        try:
            encoded = await self._edge.admit_socket(listener.workspaces, request)
            if encoded:
                await self.context.ingest.submit(encoded)
        except (IngestUnavailableError, StoreError):
            # Not durable (or the desk's thread map unreadable): Slack redelivers it later.
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
