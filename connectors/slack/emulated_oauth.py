"""The emulated Slack's OAuth v2: a consent page that always says yes, and ``oauth.v2.access``.

:class:`EmulatedOAuth` adds to a :class:`~connectors.slack.emulator.SlackEmulator`:

- ``GET /oauth/v2/authorize`` — for a registered app (:meth:`EmulatedOAuth.register`) and an
  installer's workspace queued with :meth:`EmulatedOAuth.consent`, the browser is sent back
  to ``redirect_uri`` with a one-time ``code`` and the ``state``, as Slack does once the
  installer clicks "Allow"; an unknown ``client_id`` is a 400 page;
- ``POST /api/oauth.v2.access`` — the app authenticated as Slack requires (HTTP basic, or
  ``client_id``/``client_secret`` fields): a code (once, with the same ``redirect_uri``)
  becomes the workspace's bot token, which from then on works on the emulated Web API; with
  ``rotating=True`` the token expires (``expires_in``) and ``grant_type=refresh_token``
  gives a new one (the old one stops working), as Slack's token rotation does.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

from aiohttp import web

from connectors.slack.emulated_payloads import EmulatedWorkspace

__all__ = ["EmulatedApp", "EmulatedOAuth"]


class _Slack(Protocol):
    """The emulator this adds to: its workspaces are those whose tokens it accepts."""

    workspaces: tuple[EmulatedWorkspace, ...]

    @property
    def base_url(self) -> str: ...


@dataclass(slots=True)
class EmulatedApp:
    client_id: str
    client_secret: str
    app_id: str = "A0DISTAPP"
    rotating: bool = False
    expires_in: int = 43_200
    refreshes: int = 0
    exchanges: int = 0


@dataclass(slots=True)
class _Grant:
    app: EmulatedApp
    workspace: EmulatedWorkspace
    redirect_uri: str
    scopes: str


@dataclass(slots=True)
class EmulatedOAuth:
    emulator: _Slack
    apps: dict[str, EmulatedApp] = field(default_factory=dict)
    consents: deque[EmulatedWorkspace] = field(default_factory=deque)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    _grants: dict[str, _Grant] = field(default_factory=dict)
    _refresh: dict[str, tuple[EmulatedApp, str]] = field(default_factory=dict)  # → team

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/oauth/v2/authorize", self._authorize)
        app.router.add_post("/api/oauth.v2.access", self._access)

    @property
    def authorize_url(self) -> str:
        return f"{self.emulator.base_url}/oauth/v2/authorize"

    def register(self, app: EmulatedApp) -> EmulatedApp:
        self.apps[app.client_id] = app
        return app

    def consent(self, workspace: EmulatedWorkspace) -> None:
        """The next installer is in ``workspace`` and clicks "Allow"."""
        self.consents.append(workspace)

    async def _authorize(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.authorize_requests.append(query)
        app = self.apps.get(query.get("client_id", ""))
        redirect_uri = query.get("redirect_uri", "")
        if app is None or not redirect_uri or not self.consents:
            return web.Response(status=400, text="invalid_client_id or nobody to consent")
        workspace = self.consents.popleft()
        code = secrets.token_hex(12)
        self._grants[code] = _Grant(app, workspace, redirect_uri, query.get("scope", ""))
        target = f"{redirect_uri}?{urlencode({'code': code, 'state': query.get('state', '')})}"
        raise web.HTTPFound(target)

    async def _access(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        client_id, secret = _client_credentials(request, form)
        app = self.apps.get(client_id)
        if app is None or secret != app.client_secret:
            return web.json_response({"ok": False, "error": "invalid_client"})
        if form.get("grant_type") == "refresh_token":
            return self._refreshed(app, str(form.get("refresh_token", "")))
        grant = self._grants.pop(str(form.get("code", "")), None)
        if grant is None or grant.app is not app:
            return web.json_response({"ok": False, "error": "invalid_code"})
        if form.get("redirect_uri") != grant.redirect_uri:
            return web.json_response({"ok": False, "error": "bad_redirect_uri"})
        app.exchanges += 1
        workspace = grant.workspace
        answer: dict[str, Any] = {
            "ok": True,
            "app_id": app.app_id,
            "authed_user": {"id": "U0INSTALLER"},
            "scope": grant.scopes,
            "token_type": "bot",
            "access_token": workspace.bot_token,
            "bot_user_id": workspace.bot_user_id,
            "team": {"id": workspace.team_id, "name": workspace.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
        }
        if app.rotating:
            answer |= self._rotation(app, workspace)
        self.emulator.workspaces = (*self.emulator.workspaces, workspace)
        return web.json_response(answer)

    def _rotation(self, app: EmulatedApp, workspace: EmulatedWorkspace) -> dict[str, Any]:
        refresh = f"xoxe-1-{secrets.token_hex(8)}"
        self._refresh[refresh] = (app, workspace.team_id)
        return {"refresh_token": refresh, "expires_in": app.expires_in}

    def _refreshed(self, app: EmulatedApp, refresh: str) -> web.Response:
        found = self._refresh.pop(refresh, None)
        if found is None or found[0] is not app:
            return web.json_response({"ok": False, "error": "invalid_refresh_token"})
        team_id = found[1]
        old = next(w for w in self.emulator.workspaces if w.team_id == team_id)
        new = dataclasses.replace(old, bot_token=f"xoxe.xoxb-{secrets.token_hex(8)}")
        self.emulator.workspaces = tuple(new if w is old else w for w in self.emulator.workspaces)
        app.refreshes += 1
        return web.json_response(
            {"ok": True, "token_type": "bot", "access_token": new.bot_token}
            | self._rotation(app, new)
        )


def _client_credentials(request: web.Request, form: dict[str, Any]) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        try:
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return "", ""
        return client_id, secret
    return str(form.get("client_id", "")), str(form.get("client_secret", ""))
