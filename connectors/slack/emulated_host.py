"""What the emulator's add-ons (files, message updates) need of the Slack emulator they
extend: the Web API's shared request handling, as a protocol so they need not import it."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from connectors.slack.emulated_payloads import EmulatedWorkspace

__all__ = ["SlackApiHost"]


class SlackApiHost(Protocol):
    def _workspace(self, token: str | None) -> EmulatedWorkspace | None: ...

    async def _args(self, request: web.Request) -> tuple[dict[str, Any], str | None]: ...

    async def _injected(
        self, method: str, args: dict[str, Any], token: str | None, request: web.Request
    ) -> web.Response | None: ...

    def _answer(
        self, method: str, args: dict[str, Any], token: str | None, body: dict[str, Any]
    ) -> web.Response: ...

    async def _notify(self) -> None: ...
