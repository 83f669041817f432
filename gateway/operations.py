"""The operations endpoints — ``/readyz``, ``/metrics``, the admin API under ``/v1`` and its
``/v1/openapi.json`` — and where they are served.

The public webhook port is reachable by anyone on the internet; these endpoints name the
store's host and port, count every tenant's traffic and describe the admin API, so they are
never served there unguarded. ``http.operations.mode`` decides:

- ``listener`` (the default): :func:`create_operations_app` builds a separate app that the
  gateway app runs as one of its resources (:func:`operations_listener_ctx`) on
  ``http.operations.host:port`` — loopback unless configured. The public port then answers
  404 to all of them.
- ``public``: they are mounted on the public app instead, and each one needs a global admin
  API key (``Authorization: Bearer …``, any role); without one they answer 401.

``/healthz`` is on both listeners and says only ``{"status": "ok"}``. The operators'
console (:mod:`gateway.console`, ``/console/``) is mounted wherever the admin API is, and
signs people in with their admin API keys in either mode.

The operations app is where operator-facing pages belong: its state is one typed
:data:`OPERATIONS` key, and anything it opens goes in its own ``cleanup_ctx``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.errors import StoreError
from gateway.observability import get_logger
from gateway.readiness import readiness_problems
from gateway.runtime import RUNTIME, Runtime
from gateway.server import ConnectionGuard, GuardedSite

__all__ = [
    "KEYED_PATHS",
    "OPERATIONS",
    "Operations",
    "create_operations_app",
    "healthz",
    "mount_keyed_operations",
    "operations_listener_ctx",
]

log = get_logger(__name__)

# On the public port (mode "public") these need a global admin key; the admin API's own
# routes authenticate every request themselves.
KEYED_PATHS = frozenset({"/readyz", "/metrics", "/v1/openapi.json"})


@dataclass(slots=True)
class Operations:
    """The operations app's state."""

    runtime: Runtime
    url: str | None = None  # set once the listener is bound


OPERATIONS = web.AppKey("operations", Operations)


def create_operations_app(runtime: Runtime) -> web.Application:
    """The app served on the operations listener."""
    app = web.Application(client_max_size=runtime.config.http.max_body_bytes)
    app[RUNTIME] = runtime  # the admin handlers read the runtime under this key
    app[OPERATIONS] = Operations(runtime=runtime)
    app.router.add_get("/healthz", healthz)
    _add_operational_routes(app)
    return app


def mount_keyed_operations(app: web.Application) -> None:
    """Mode ``public``: the operational routes on the public app, behind a global key."""
    app.middlewares.append(_require_global_key)
    _add_operational_routes(app)


def _add_operational_routes(app: web.Application) -> None:
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    if app[RUNTIME].role in ("all", "web"):
        # Imported here: the admin package reads RUNTIME from gateway.app.
        from gateway.admin.routes import mount_admin

        mount_admin(app)
        if app[RUNTIME].config.http.operations.console.enabled:
            from gateway.console import mount_console

            mount_console(app)


async def operations_listener_ctx(app: web.Application) -> AsyncIterator[None]:
    """A resource of the gateway app: the operations app on its own guarded listener."""
    rt = app[RUNTIME]
    settings = rt.config.http.operations
    ops = create_operations_app(rt)
    runner = web.AppRunner(ops, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    guard = ConnectionGuard(listener="operations", limits=rt.config.http, metrics=rt.metrics)
    site = GuardedSite(runner, settings.host, settings.port, guard=guard)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    rt.operations_app, rt.operations_url = ops, site.name
    ops[OPERATIONS].url = site.name
    log.info("operations.listening", url=site.name)
    yield
    await runner.cleanup()
    rt.operations_app = rt.operations_url = None


# -- the endpoints -------------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Says nothing about what it runs on."""
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    problems = await readiness_problems(rt)
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready", "role": rt.role})


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[RUNTIME].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


@web.middleware
async def _require_global_key(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Mode ``public``: no operational endpoint answers without a global admin key."""
    if request.path not in KEYED_PATHS:
        return await handler(request)
    from gateway.admin import keys as apikeys

    rt = request.app[RUNTIME]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    key = None
    if scheme.lower() == "bearer" and token.strip() and rt.store is not None:
        try:
            key = await apikeys.authenticate(rt.store, rt.keyspace, token.strip())
        except StoreError:
            return web.json_response(
                {"error": "store_unavailable", "message": "retry later"},
                status=503,
                headers={"Retry-After": "1"},
            )
    if key is None or key.tenant is not None:
        return web.json_response(
            {"error": "unauthenticated", "message": "send Authorization: Bearer <global API key>"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return await handler(request)
