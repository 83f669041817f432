"""The console's frame: who is asking, what they may do, and how a page is drawn.

Every console handler is wrapped by :func:`page` (a GET: needs a session) or :func:`action`
(a POST: needs a session, the session's CSRF token and a same-origin request). Both read
the caller's API key again on every request; what the key may do is the admin API's own
decision (:func:`gateway.admin.routes.permits`), asked per operation and tenant — the
console has no permission model of its own, and hiding a button is never the check.

Pages are registered as :class:`Page` entries (path, title, the operation that lets a key
see them); the navigation shows the pages the caller may open. Adding a page is one view
module (with ``PAGE`` and ``add_routes``) and one template.

Every response carries a strict Content-Security-Policy (scripts and styles from the
console's own static files only), ``X-Frame-Options: DENY`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.errors import MessageError
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from gateway.admin.routes import permits
from gateway.audit import AuditEvent, AuditLog, digest
from gateway.console.sessions import Caller, csrf_ok, same_origin, session_of
from gateway.errors import StoreError
from gateway.observability import get_logger
from gateway.runtime import RUNTIME, Runtime
from gateway.store import Keyspace, Store

__all__ = [
    "PAGES",
    "Ctx",
    "Page",
    "UnreadableForm",
    "action",
    "page",
    "read_form",
    "render_page",
    "unreadable_form",
]

log = get_logger(__name__)


class UnreadableForm(Exception):
    """A form whose Content-Type header cannot even be parsed."""


async def read_form(request: web.Request) -> Any:
    """The posted form; :class:`UnreadableForm` when its Content-Type header is malformed
    (the stdlib's header parser behind aiohttp raises IndexError on ``;0*``): a stranger's
    bad request, answered 415, not a server error."""
    try:
        return await request.post()
    except (LookupError, ValueError, MessageError) as exc:
        raise UnreadableForm(str(exc)) from exc


def unreadable_form() -> web.Response:
    return web.Response(
        status=415, text="The form's Content-Type cannot be read.", headers=SECURITY_HEADERS
    )


HERE = Path(__file__).parent
SIGN_IN = "/console/sign-in"
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True, slots=True)
class Page:
    """A page in the navigation: shown to callers the admin API lets run ``operation``."""

    path: str
    title: str
    operation: str


PAGES: list[Page] = []


@dataclass(slots=True)
class Ctx:
    """One console request: the runtime, the signed-in caller and the form, if any."""

    request: web.Request
    runtime: Runtime
    caller: Caller
    form: Mapping[str, str] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        assert self.runtime.store is not None  # open while the app runs
        return self.runtime.store

    @property
    def keyspace(self) -> Keyspace:
        return self.runtime.keyspace

    def may(self, operation: str, tenant: str | None = None) -> bool:
        return permits(self.caller.key, operation, tenant)

    def tenants(self, operation: str = "listConversations") -> list[str]:
        """The configured tenants this caller may run ``operation`` on."""
        return [t.id for t in self.runtime.config.tenants if self.may(operation, t.id)]

    def render(self, template: str, status: int = 200, **values: Any) -> web.Response:
        return render_page(self.request, template, status=status, caller=self.caller, **values)

    async def audit(self, action: str, tenant: str | None, status: int, **detail: Any) -> None:
        """Console actions go to the same audit log as the admin API's."""
        target = {k: digest(v) if k == "conversation" else v for k, v in detail.items()}
        await AuditLog(self.store, self.keyspace).write(
            AuditEvent(
                actor=self.caller.key.id,
                actor_name=self.caller.key.name,
                role=self.caller.key.role.value,
                action=f"console.{action}",
                tenant=tenant or self.caller.key.tenant,
                target=target,
                remote=self.request.remote,
                status=status,
            )
        )


def render_page(
    request: web.Request, template: str, *, status: int = 200, **values: Any
) -> web.Response:
    caller: Caller | None = values.get("caller")
    nav = (
        [p for p in PAGES if permits(caller.key, p.operation, caller.key.tenant)]
        if caller is not None
        else []
    )
    values.setdefault("caller", None)
    values.setdefault("title", "")
    values.setdefault("flash", request.query.get("done", ""))
    body = _env.get_template(template).render(
        nav=nav,
        path=request.path,
        csrf=caller.session.csrf if caller is not None else "",
        **values,
    )
    return web.Response(
        text=body, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]


def _signed_out(request: web.Request) -> web.StreamResponse:
    if request.headers.get("HX-Request"):
        # An htmx call after the session ended: send the whole page to the sign-in form.
        return web.Response(status=401, headers={"HX-Redirect": SIGN_IN, **SECURITY_HEADERS})
    raise web.HTTPSeeOther(f"{SIGN_IN}?next={quote(request.path_qs, safe='')}")


def refusal(request: web.Request, caller: Caller | None, status: int, message: str) -> web.Response:
    log.info("console.refused", status=status, path=request.path)
    return render_page(
        request, "error.html", status=status, caller=caller, title="Refused", message=message
    )


def _wrap(handler: Handler, *, mutating: bool) -> Callable[[web.Request], Awaitable[Any]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        rt = request.app[RUNTIME]
        assert rt.store is not None
        try:
            caller = await session_of(rt.store, rt.keyspace, request)
            if caller is None:
                return _signed_out(request)
            form: Mapping[str, str] = {}
            if mutating:
                raw = await read_form(request)
                form = {k: v for k, v in raw.items() if isinstance(v, str)}
                offered = request.headers.get("X-CSRF-Token") or form.get("csrf")
                if not same_origin(request) or not csrf_ok(caller.session.csrf, offered):
                    rt.metrics.admin_errors.labels("console", "csrf").inc()
                    return refusal(request, caller, 403, "This form has expired; reload the page.")
            return await handler(Ctx(request=request, runtime=rt, caller=caller, form=form))
        except UnreadableForm:
            rt.metrics.admin_errors.labels("console", "unreadable_form").inc()
            return unreadable_form()
        except StoreError:
            log.warning("console.store_unavailable", path=request.path)
            return web.Response(
                status=503,
                text="The store is unavailable; retry in a few seconds.",
                headers={"Retry-After": "5", **SECURITY_HEADERS},
            )

    return endpoint


def page(handler: Handler) -> Callable[[web.Request], Awaitable[Any]]:
    """A GET handler that needs a signed-in caller."""
    return _wrap(handler, mutating=False)


def action(handler: Handler) -> Callable[[web.Request], Awaitable[Any]]:
    """A POST handler that needs a signed-in caller, their CSRF token and the same origin."""
    return _wrap(handler, mutating=True)


def done(location: str, message: str) -> web.HTTPSeeOther:
    """After a form: back to a page (303), with a short note of what happened."""
    sep = "&" if "?" in location else "?"
    return web.HTTPSeeOther(f"{location}{sep}done={quote(message[:200], safe='')}")
