"""The admin API: every route declared once as an :class:`Operation`.

This module is the gate and the router: it mounts the table (:mod:`gateway.admin.table`),
whose handlers live in :mod:`gateway.admin.handlers`, and ``/v1/openapi.json``
(:mod:`gateway.admin.openapi`, built from the same table), so the document cannot drift
from what is served.

Every request passes one gate, in this order:

1. **401** — no ``Authorization: Bearer <token>``, or a token that is malformed, unknown or
   revoked (``WWW-Authenticate: Bearer``);
2. **403** — the key's role is below the operation's, or a tenant-scoped key reaches for a
   global operation or another tenant;
3. **404** — a path parameter that cannot name anything (bad format, unknown tenant);
4. **400 / 422** — an unreadable query or body (a malformed ``after=`` cursor included) /
   a body that breaks the schema.

Whatever the step, a store that cannot be reached answers **503** ``store_unavailable``
with ``Retry-After`` (one mapping, in :func:`_store_unavailable`), never a 500; ``/v1/health``
then answers ``degraded``.

Mutating operations write an audit event (who, what, when, from where, status) whatever
their outcome once the caller is authenticated.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from gateway.admin import keys as apikeys
from gateway.admin.handlers import health, health_of
from gateway.admin.keys import ApiKey
from gateway.admin.openapi import openapi_handler
from gateway.admin.operation import (
    PATH_PATTERNS,
    RETRY_AFTER_SECONDS,
    ApiError,
    Call,
    Operation,
    error_response,
    json_response,
)
from gateway.admin.schemas import Health
from gateway.admin.table import OPERATIONS, OPERATIONS_BY_ID
from gateway.audit import AuditEvent, AuditLog, digest
from gateway.errors import CursorError, StoreError
from gateway.observability import get_logger
from gateway.runtime import RUNTIME, Runtime

__all__ = [
    "OPERATIONS",
    "RETRY_AFTER_SECONDS",
    "ApiError",
    "Operation",
    "health_of",
    "mount_admin",
    "permits",
]

log = get_logger(__name__)


# -- the gate --------------------------------------------------------------------------------------
async def _authenticate(request: web.Request, rt: Runtime) -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "send Authorization: Bearer <API key>")
    assert rt.store is not None  # open while the app runs
    key = await apikeys.authenticate(rt.store, rt.keyspace, token.strip())
    if key is None:
        raise ApiError(401, "unauthenticated", "unknown or revoked API key")
    return key


def _authorize(op: Operation, key: ApiKey, params: Mapping[str, str]) -> None:
    if not key.role.covers(op.role):
        raise ApiError(403, "forbidden", f"this operation needs the {op.role.value} role")
    if key.tenant is None:
        return
    if op.scope == "global":
        raise ApiError(403, "forbidden", "this operation needs a global key")
    if op.scope == "tenant" and params.get("tenant") != key.tenant:
        raise ApiError(403, "forbidden", "this key is scoped to another tenant")


def permits(key: ApiKey, operation_id: str, tenant: str | None = None) -> bool:
    """The gate's decision (role and scope) for ``key`` on an operation, about ``tenant``.

    The console asks this before every page and action, so it grants exactly what the API
    grants. A tenant-scoped key never reaches another tenant, whatever the operation's scope
    (the API's handlers filter "any"-scope lists and letters the same way).
    """
    op = OPERATIONS_BY_ID[operation_id]
    try:
        _authorize(op, key, {} if tenant is None else {"tenant": tenant})
    except ApiError:
        return False
    return key.tenant is None or tenant is None or key.tenant == tenant


def _parse_query(op: Operation, request: web.Request) -> Any:
    if op.query is None:
        return None
    raw = {name: request.query.getone(name) for name in request.query}
    try:
        return op.query.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(400, "bad_query", _first_problem(exc)) from exc


async def _parse_body(op: Operation, request: web.Request) -> Any:
    if op.body is None:
        return None
    raw = await request.read()
    try:
        # A strict body is strict all the way down: its nested models too (a persona's).
        strict = True if op.body.model_config.get("strict") else None
        return op.body.model_validate_json(raw, strict=strict)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ApiError(400, "bad_json", "the body is not valid JSON") from exc
        raise ApiError(422, "invalid", _first_problem(exc)) from exc


def _first_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"[:500]


def _endpoint(op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        rt = request.app[RUNTIME]
        params = dict(request.match_info)
        call: Call | None = None
        try:
            key = await _authenticate(request, rt)
            call = Call(request=request, runtime=rt, key=key, params=params)
            _authorize(op, key, params)
            for name, value in params.items():
                if re.fullmatch(PATH_PATTERNS[name].strip("^$"), value) is None:
                    raise ApiError(404, "not_found", f"no such {name.replace('_', ' ')}")
            call.query = _parse_query(op, request)
            call.body = await _parse_body(op, request)
            response = await op.handler(call)
        except ApiError as exc:
            response = error_response(exc.status, exc.error, exc.message, exc.problems)
        except CursorError as exc:
            _count(rt, op, exc.reason)
            response = error_response(exc.status, exc.reason, str(exc))
        except StoreError as exc:
            response = _store_unavailable(op, rt, exc)
        if op.mutating and call is not None:
            try:
                await _audit(op, call, response.status)
            except StoreError as exc:
                # An action the audit log cannot record is not reported as done.
                response = _store_unavailable(op, rt, exc)
        return response

    return handle


def _count(rt: Runtime, op: Operation, error: str) -> None:
    rt.metrics.admin_errors.labels(op.operation_id, error).inc()


def _store_unavailable(op: Operation, rt: Runtime, exc: StoreError) -> web.Response:
    """Every StoreError of every route ends here: 503 with ``Retry-After``, never a 500.

    ``/v1/health`` answers its own body, ``degraded``, even though the caller could not be
    authenticated (the keys live in the store): only the outage itself, no internals.
    """
    _count(rt, op, "store_unavailable")
    log.warning("admin.store_unavailable", operation=op.operation_id, error=type(exc).__name__)
    if op.handler is health:
        response = json_response(
            Health(
                status="degraded",
                role=rt.role,
                store="unreachable",
                store_error=None,
                consumers=None,
                connectors=None,
                personas=None,
                personas_version=None,
            ),
            503,
        )
    else:
        response = error_response(503, "store_unavailable", "the store is unavailable; retry later")
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def _audit(op: Operation, call: Call, status: int) -> None:
    assert call.runtime.store is not None
    target = {
        name: digest(value) if name in op.redact else value for name, value in call.params.items()
    }
    await AuditLog(call.runtime.store, call.runtime.keyspace).write(
        AuditEvent(
            actor=call.key.id,
            actor_name=call.key.name,
            role=call.key.role.value,
            action=op.operation_id,
            tenant=call.params.get("tenant") or call.key.tenant,
            target=target,
            remote=call.request.remote,
            status=status,
            detail=call.audit_detail,
        )
    )


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Router errors (404, 405) under the admin prefix answer in the API's JSON shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        path = request.path
        if not path.startswith("/v1/") or path.startswith("/v1/channels/") or exc.status < 400:
            raise
        response = error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


# ``/v1/personas/reload`` is an operation of its own, not a persona: the routes of one
# persona never match it, so that path answers and advertises (``Allow``) only its POST.
_PERSONA_SEGMENT = "/{persona}"
_PERSONA_MOUNTED = "/{persona:(?!reload$)[^{}/]+}"


def _mounted_path(path: str) -> str:
    if path.endswith(_PERSONA_SEGMENT):
        return path.removesuffix(_PERSONA_SEGMENT) + _PERSONA_MOUNTED
    return path


def mount_admin(app: web.Application) -> None:
    """Add the admin routes, ``/v1/openapi.json`` and the JSON error middleware."""
    app.middlewares.append(_json_errors)
    app.router.add_get("/v1/openapi.json", openapi_handler, name="admin.openapi")
    for op in OPERATIONS:
        app.router.add_route(
            op.method, _mounted_path(op.path), _endpoint(op), name=f"admin.{op.operation_id}"
        )
