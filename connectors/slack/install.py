""" "Add to Slack": the OAuth v2 install flow, and the workspaces installations give.

Routes (with a Slack block that has ``install``):

- ``GET /slack/install/{tenant}`` — a single-use ``state`` (:mod:`connectors.slack.installations`)
  is stored and set as a cookie on the installer's browser, and the browser is sent to
  Slack's consent page (slack-sdk's ``AuthorizeUrlGenerator``);
- ``GET /slack/oauth_redirect`` — Slack sends the browser back with ``code`` and ``state``:
  the state must be the cookie's and unused; the code is exchanged with ``oauth.v2.access``
  (the app's client secret), the bot's id read with ``auth.test``, and the installation
  kept, encrypted, in the gateway's store.

Guarantees:

- a workspace's events reach the tenant whose app it installed, with that installation's
  token, in every process: a process that has not seen the installation reads it from the
  store on the first event (and trusts what it read for ``cache_seconds``);
- an ``app_uninstalled`` or ``tokens_revoked`` event deletes the installation: later events
  from that workspace are refused (``unknown_tenant``) and nothing is sent with its token;
- a rotating token (token rotation on) is refreshed before it expires, by one process at a
  time (a store claim), with slack-sdk's ``AsyncTokenRotator``; the refreshed installation
  is stored for every process;
- a state that is unknown, used, expired or not the browser's own, a missing code, and any
  error from Slack end in a 400 page and a counted ``install_refused``; no token, code or
  client secret is ever logged.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

import aiohttp
from cryptography.fernet import MultiFernet
from slack_sdk.errors import SlackApiError, SlackTokenRotationError
from slack_sdk.oauth import AuthorizeUrlGenerator
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from connectors.base import ConnectorContext, InboundRequest, InboundResponse, InboundResult, Route
from connectors.slack.config import SlackInstallConfig
from connectors.slack.installations import StoreInstallationStore, StoreStateStore, fernet_of
from connectors.slack.workspace import InstalledToken, Workspace, select_workspace
from gateway.errors import UnknownTenantError
from gateway.observability import get_logger

__all__ = ["INSTALL_PATH", "REDIRECT_PATH", "SlackInstaller"]

log = get_logger(__name__)

INSTALL_PATH = "/slack/install/{tenant}"
REDIRECT_PATH = "/slack/oauth_redirect"
_COOKIE = "flowbiz-slack-oauth-state"
_PAGE = "<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1><p>{text}</p>"


@dataclass(slots=True)
class _App:
    """One app block and what its installs need."""

    block: Workspace
    install: SlackInstallConfig
    fernet: MultiFernet
    kept: StoreInstallationStore | None = None  # made once the store is open


class SlackInstaller:
    """The install routes of a connector's app blocks, and their installed workspaces."""

    def __init__(
        self,
        *,
        context: ConnectorContext,
        workspaces: Sequence[Workspace],
        count: Callable[[str], None],
        sdk_log: Any,
    ) -> None:
        self.context = context
        self._count = count
        self._sdk_log = sdk_log
        self._apps: dict[str, _App] = {}  # by the block's label
        ttl = 600.0
        for ws in workspaces:
            install = ws.config.install
            if install is None:
                continue
            ttl = min(ttl, install.state_ttl_seconds)
            self._apps[ws.label] = _App(
                block=ws,
                install=install,
                fernet=fernet_of([k.get_secret_value() for k in install.token_keys]),
            )
        self._state_ttl = ttl
        self._state_store: StoreStateStore | None = None
        self._cache: dict[tuple[str, str | None, str | None], tuple[float, Workspace | None]] = {}
        self._refreshing: dict[str, asyncio.Lock] = {}

    # The store opens when the app starts, after the connectors are made.
    @property
    def _states(self) -> StoreStateStore:
        if self._state_store is None:
            ctx = self.context
            self._state_store = StoreStateStore(ctx.store, ctx.keyspace, ttl=self._state_ttl)
        return self._state_store

    def _kept(self, app: _App) -> StoreInstallationStore:
        if app.kept is None:
            app.kept = StoreInstallationStore(
                self.context.store,
                self.context.keyspace,
                client_id=app.install.client_id,
                fernet=app.fernet,
                unreadable=lambda: self._count("installation_unreadable"),
            )
        return app.kept

    def routes(self) -> list[Route]:
        # Mounted whether or not an app block exists yet: a tenant may add one at run time
        # (docs/admin-api.md); with none, an install link is 404 and a redirect a 400 page.
        return [
            Route("GET", INSTALL_PATH, self.begin, "slack.install"),
            Route("GET", REDIRECT_PATH, self.finish, "slack.oauth_redirect"),
        ]

    # -- the flow -------------------------------------------------------------------------------
    async def begin(self, request: InboundRequest) -> InboundResult:
        tenant = request.match_info.get("tenant", "")
        app = next((a for a in self._apps.values() if a.block.tenant == tenant), None)
        if app is None:
            raise UnknownTenantError("no Slack app to install for this tenant")
        state = await self._states.async_issue(owner=app.block.label)
        url = AuthorizeUrlGenerator(
            client_id=app.install.client_id,
            scopes=list(app.install.scopes),
            redirect_uri=app.install.redirect_url,
            authorization_url=app.install.authorize_url,
        ).generate(state)
        cookie = (
            f"{_COOKIE}={state}; Path=/slack/; Max-Age={int(app.install.state_ttl_seconds)}; "
            "HttpOnly; Secure; SameSite=Lax"
        )
        self._count("install_started")
        headers = {"Location": url, "Set-Cookie": cookie, "Cache-Control": "no-store"}
        return InboundResult(response=InboundResponse(status=302, headers=headers))

    async def finish(self, request: InboundRequest) -> InboundResult:
        query = request.query
        state, code = query.get("state", ""), query.get("code", "")
        if query.get("error"):  # the installer cancelled on Slack's page
            return self._refused("declined", "The app was not installed.", status=200)
        cookie = _cookie_state(request.header("cookie"))
        if not state or cookie is None or not hmac.compare_digest(state, cookie):
            return self._refused("bad_state", "This install link is not this browser's.")
        owner = await self._states.consume(state)
        app = self._apps.get(owner) if owner is not None else None
        if app is None:
            return self._refused("used_state", "This install link expired or was used.")
        if not code or len(code) > 512:
            return self._refused("no_code", "Slack sent no code.")
        try:
            installation = await self._exchange(app, code)
        except (SlackApiError, aiohttp.ClientError, TimeoutError, KeyError, TypeError) as exc:
            return self._refused("exchange_failed", "Slack refused the install.", exc=exc)
        await self._kept(app).async_save(installation)
        self._forget_cached(app, installation.team_id, installation.enterprise_id)
        self._count("installed")
        log.info(
            "slack.installed",
            app=app.block.label,
            team_id=installation.team_id,
            enterprise_id=installation.enterprise_id,
            rotating=installation.bot_refresh_token is not None,
        )
        if app.install.success_url is not None:
            headers = {"Location": app.install.success_url, "Cache-Control": "no-store"}
            return InboundResult(response=InboundResponse(status=302, headers=headers))
        name = html.escape(installation.team_name or installation.team_id or "the workspace")
        page = _PAGE.format(title="Installed", text=f"The app is installed in {name}.")
        return InboundResult(response=_html(200, page))

    async def _exchange(self, app: _App, code: str) -> Installation:
        client = self._client(app.block.config.web_api_base_url, token=None)
        async with asyncio.timeout(app.block.config.request_timeout_seconds):
            answer = await client.oauth_v2_access(
                client_id=app.install.client_id,
                client_secret=app.install.client_secret.get_secret_value(),
                code=code,
                redirect_uri=app.install.redirect_url,
            )
            token = answer["access_token"]
            identity = await self._client(app.block.config.web_api_base_url, token).auth_test()
        team = answer.get("team") or {}
        enterprise = answer.get("enterprise") or {}
        installer = answer.get("authed_user") or {}
        return Installation(
            app_id=answer.get("app_id"),
            enterprise_id=enterprise.get("id"),
            enterprise_name=enterprise.get("name"),
            team_id=team.get("id"),
            team_name=team.get("name"),
            bot_token=token,
            bot_id=identity.get("bot_id"),
            bot_user_id=answer.get("bot_user_id"),
            bot_scopes=answer.get("scope", ""),
            bot_refresh_token=answer.get("refresh_token"),
            bot_token_expires_in=answer.get("expires_in"),
            user_id=installer.get("id", ""),
            is_enterprise_install=bool(answer.get("is_enterprise_install")),
            token_type=answer.get("token_type"),
            custom_values={"tenant": app.block.tenant, "channel": app.block.config.name},
        )

    def _refused(
        self, reason: str, text: str, *, status: int = 400, exc: BaseException | None = None
    ) -> InboundResult:
        self._count("install_refused" if status >= 400 else "install_declined")
        log.warning("slack.install_refused", reason=reason, error=_code(exc))
        title = "Not installed"
        return InboundResult(response=_html(status, _PAGE.format(title=title, text=text)))

    # -- installed workspaces -------------------------------------------------------------------
    async def select(
        self, candidates: Sequence[Workspace], team_id: str | None, enterprise_id: str | None
    ) -> Workspace:
        """The configured workspace among ``candidates``, else an installation of an app
        block among them; ``UnknownTenantError`` if neither."""
        try:
            return select_workspace(candidates, team_id, enterprise_id)
        except UnknownTenantError:
            for ws in candidates:
                if ws.is_app:
                    found = await self.installed(ws, team_id, enterprise_id)
                    if found is not None:
                        return found
            raise

    async def installed(
        self, block: Workspace, team_id: str | None, enterprise_id: str | None
    ) -> Workspace | None:
        """The app block's installation in that workspace (or org), as a workspace."""
        app = self._apps.get(block.label)
        if app is None or (team_id is None and enterprise_id is None):
            return None
        key = (block.label, team_id, enterprise_id)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self._kept(app).async_find_installation(
            enterprise_id=enterprise_id, team_id=team_id
        )
        ws = None if found is None else self._workspace(app, found)
        if len(self._cache) > 10_000:
            self._cache.clear()  # a bound, not a policy: entries are cheap to read again
        self._cache[key] = (now + app.install.cache_seconds, ws)
        return ws

    def _workspace(self, app: _App, found: Installation) -> Workspace:
        token = InstalledToken(
            team_id=found.team_id,
            enterprise_id=found.enterprise_id,
            org_wide=bool(found.is_enterprise_install),
            token=found.bot_token or "",
            expires_at=found.bot_token_expires_at,
        )
        return Workspace(
            tenant=app.block.tenant,
            config=app.block.config,
            bot_user_id=found.bot_user_id,
            bot_id=found.bot_id,
            installed=token,
        )

    async def uninstalled(self, ws: Workspace) -> None:
        """The app was removed from ``ws`` (or its tokens revoked): forget the installation."""
        app = self._app_of(ws)
        if app is None or ws.installed is None:
            return
        await self._kept(app).async_delete_installation(
            enterprise_id=ws.installed.enterprise_id,
            team_id=None if ws.installed.org_wide else ws.installed.team_id,
        )
        self._forget_cached(app, ws.installed.team_id, ws.installed.enterprise_id)
        self._count("uninstalled")
        log.info("slack.uninstalled", app=app.block.label, workspace=ws.label)

    async def fresh(self, ws: Workspace) -> Workspace:
        """``ws`` with a token that does not expire within ``refresh_before_seconds``."""
        app = self._app_of(ws)
        installed = ws.installed
        if app is None or installed is None or installed.expires_at is None:
            return ws
        margin = app.install.refresh_before_seconds
        if installed.expires_at - time.time() > margin:
            return ws
        lock = self._refreshing.setdefault(ws.label, asyncio.Lock())
        async with lock:
            return await self._refresh(app, ws, margin)

    async def _refresh(self, app: _App, ws: Workspace, margin: float) -> Workspace:
        assert ws.installed is not None
        installed = ws.installed
        team = None if installed.org_wide else installed.team_id
        stored = await self._kept(app).async_find_installation(
            enterprise_id=installed.enterprise_id,
            team_id=team,
            is_enterprise_install=installed.org_wide,
        )
        if stored is None:
            raise UnknownTenantError("the Slack app is no longer installed in this workspace")
        where = f"E:{installed.enterprise_id}" if installed.org_wide else f"T:{team}"
        claim = self.context.keyspace.slack_token_refresh(app.install.client_id, where)
        rotated = None
        if await self.context.store.claim(claim, ttl=30):
            try:
                rotator = AsyncTokenRotator(
                    client_id=app.install.client_id,
                    client_secret=app.install.client_secret.get_secret_value(),
                    client=self._client(app.block.config.web_api_base_url, token=None),
                )
                rotated = await rotator.perform_token_rotation(
                    installation=stored, minutes_before_expiration=max(1, int(margin // 60))
                )
                if rotated is not None:
                    await self._kept(app).async_save(rotated)
                    self._count("token_refreshed")
            except (SlackTokenRotationError, aiohttp.ClientError, TimeoutError) as exc:
                # The send goes on with the token there is; Slack's answer decides its fate.
                self._count("token_refresh_failed")
                log.warning("slack.token_refresh_failed", workspace=ws.label, error=_code(exc))
            finally:
                await self.context.store.delete([claim])
        else:
            await asyncio.sleep(0.5)  # another process refreshes it; read what it stored
            rotated = await self._kept(app).async_find_installation(
                enterprise_id=installed.enterprise_id,
                team_id=team,
                is_enterprise_install=installed.org_wide,
            )
        fresh = self._workspace(app, rotated or stored)
        self._cache[(app.block.label, installed.team_id, installed.enterprise_id)] = (
            time.monotonic() + app.install.cache_seconds,
            fresh,
        )
        return fresh

    def _app_of(self, ws: Workspace) -> _App | None:
        return next(
            (a for a in self._apps.values() if a.block.config is ws.config),
            None,
        )

    def _forget_cached(self, app: _App, team_id: str | None, enterprise_id: str | None) -> None:
        for key in [k for k in self._cache if k[0] == app.block.label]:
            if key[1] == team_id or (enterprise_id is not None and key[2] == enterprise_id):
                del self._cache[key]

    def _client(self, base_url: str, token: str | None) -> AsyncWebClient:
        return _OAuthClient(
            token=token,
            base_url=base_url,
            session=self.context.http,
            retry_handlers=[],
            logger=self._sdk_log,
        )


class _OAuthClient(AsyncWebClient):
    """slack-sdk's client, sending the app's credentials to ``oauth.v2.access`` as the form
    fields Slack also accepts, not through aiohttp's ``BasicAuth`` (deprecated there)."""

    async def oauth_v2_access(
        self,
        *,
        client_id: str,
        client_secret: str,
        **kwargs: Any,
    ) -> Any:
        fields = {k: v for k, v in kwargs.items() if v is not None}
        fields |= {"client_id": client_id, "client_secret": client_secret}
        return await self.api_call("oauth.v2.access", data=fields)


def _code(exc: BaseException | None) -> str | None:
    if isinstance(exc, SlackTokenRotationError):
        exc = exc.api_error
    if isinstance(exc, SlackApiError):
        error = exc.response.get("error")
        return str(error)[:64] if error else "slack_api_error"
    return None if exc is None else type(exc).__name__


def _cookie_state(header: str | None) -> str | None:
    if not header or len(header) > 8192:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except (CookieError, ValueError):
        return None
    morsel = jar.get(_COOKIE)
    return None if morsel is None else morsel.value


def _html(status: int, page: str) -> InboundResponse:
    return InboundResponse(
        status=status,
        body=page.encode(),
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'"},
    )
