"""Sign-in with an admin API key, and sign-out.

The form is protected against login CSRF (a stranger's page signing the browser in with
the stranger's key) by a double-submit token: a random value in a ``SameSite=Strict``
cookie and in the form, which must match, on a same-origin request.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from gateway.admin import keys as apikeys
from gateway.console.sessions import (
    clear_cookie,
    csrf_ok,
    end_session,
    open_session,
    same_origin,
    session_of,
    set_cookie,
)
from gateway.console.web import (
    SIGN_IN,
    Ctx,
    UnreadableForm,
    action,
    read_form,
    render_page,
    unreadable_form,
)
from gateway.errors import StoreError
from gateway.observability import get_logger
from gateway.runtime import RUNTIME

__all__ = ["add_routes"]

log = get_logger(__name__)
PRE_COOKIE = "fb_console_signin"
HOME = "/console/inbox"


def _next(raw: str | None) -> str:
    # Only a path inside the console: never an open redirect to another site.
    if raw and raw.startswith("/console/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return HOME


def _form(request: web.Request, *, status: int = 200, error: str = "") -> web.Response:
    token = secrets.token_urlsafe(24)
    response = render_page(
        request,
        "signin.html",
        status=status,
        title="Sign in",
        signin_token=token,
        next=_next(request.query.get("next")),
        error=error,
    )
    rt = request.app[RUNTIME]
    set_cookie(response, request, rt.config.http.operations.console, token, name=PRE_COOKIE)
    return response


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    assert rt.store is not None
    if await session_of(rt.store, rt.keyspace, request) is not None:
        raise web.HTTPSeeOther(HOME)
    return _form(request)


async def sign_in(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    assert rt.store is not None
    try:
        form = await read_form(request)
    except UnreadableForm:
        rt.metrics.admin_errors.labels("console", "unreadable_form").inc()
        return unreadable_form()
    offered = form.get("signin_token")
    if (
        not same_origin(request)
        or not isinstance(offered, str)
        or not csrf_ok(request.cookies.get(PRE_COOKIE, ""), offered)
    ):
        rt.metrics.admin_errors.labels("console", "csrf").inc()
        return _form(request, status=403, error="This form has expired; try again.")
    token = form.get("key")
    try:
        key = (
            await apikeys.authenticate(rt.store, rt.keyspace, token.strip())
            if isinstance(token, str)
            else None
        )
        if key is None:
            rt.metrics.admin_errors.labels("console", "sign_in_refused").inc()
            log.info("console.sign_in_refused")
            return _form(request, status=401, error="Unknown or revoked API key.")
        cookie, _ = await open_session(
            rt.store, rt.keyspace, key, rt.config.http.operations.console
        )
    except StoreError:
        return _form(request, status=503, error="The store is unavailable; retry shortly.")
    log.info("console.signed_in", key=key.id, role=key.role.value)
    nxt = form.get("next")
    response = web.HTTPSeeOther(_next(nxt if isinstance(nxt, str) else None))
    set_cookie(response, request, rt.config.http.operations.console, cookie)
    clear_cookie(response, name=PRE_COOKIE)
    raise response


@action
async def sign_out(ctx: Ctx) -> web.StreamResponse:
    await end_session(ctx.store, ctx.keyspace, ctx.caller)
    response = web.HTTPSeeOther(SIGN_IN)
    clear_cookie(response)
    raise response


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(HOME)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/console", home)
    router.add_get("/console/", home)
    router.add_get(SIGN_IN, sign_in_form)
    router.add_post(SIGN_IN, sign_in)
    router.add_post("/console/sign-out", sign_out)
