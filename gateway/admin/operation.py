"""What an admin route is: an :class:`Operation` (method, path, role, scope, schemas,
handler), the :class:`Call` its handler receives, and the JSON bodies every route answers.

The router (:mod:`gateway.admin.routes`) and the OpenAPI document
(:mod:`gateway.admin.openapi`) both read operations of this shape from one table
(:mod:`gateway.admin.table`); nothing here imports either of them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from gateway.admin import keys as apikeys
from gateway.admin.keys import ApiKey, Role
from gateway.admin.schemas import (
    CHANNEL_PATTERN,
    DEAD_LETTER_PATTERN,
    HANDLE_PATTERN,
    PERSONA_PATTERN,
    TENANT_PATTERN,
    ErrorBody,
    Problem,
)
from gateway.config import TenantConfig
from gateway.contacts.model import CONTACT_ID_PATTERN, IDENTITY_PATTERN
from gateway.conversations import parse_handle
from gateway.quotas import QuotaPolicy
from gateway.runtime import Runtime
from gateway.store import Store

__all__ = [
    "PATH_PATTERNS",
    "RETRY_AFTER_SECONDS",
    "ApiError",
    "Call",
    "Handler",
    "Operation",
    "Scope",
    "error_response",
    "json_response",
]

# What a client is told to wait when the store is unreachable: long enough not to hammer a
# recovering store, short enough that a brief failover is not noticed for long.
RETRY_AFTER_SECONDS = 5

Scope = Literal["global", "tenant", "any"]
PATH_PATTERNS: Mapping[str, str] = {
    "tenant": TENANT_PATTERN,
    "conversation": HANDLE_PATTERN,
    "handle": DEAD_LETTER_PATTERN,
    "key_id": apikeys.KEY_ID_PATTERN,
    "persona": PERSONA_PATTERN,
    "contact": CONTACT_ID_PATTERN,
    "channel": CHANNEL_PATTERN,
    "identity": IDENTITY_PATTERN,
}


class ApiError(Exception):
    """Ends a request with a JSON error body."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        problems: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.problems = problems


@dataclass(slots=True)
class Call:
    """What a handler gets: the request, the runtime, the caller and the parsed inputs."""

    request: web.Request
    runtime: Runtime
    key: ApiKey
    params: dict[str, str]
    query: Any = None
    body: Any = None
    audit_detail: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        assert self.runtime.store is not None  # open while the app runs
        return self.runtime.store

    @property
    def quotas(self) -> QuotaPolicy:
        assert self.runtime.quotas is not None  # built with the store
        return self.runtime.quotas

    def tenant(self) -> TenantConfig:
        tenant = self.runtime.config.tenant(self.params["tenant"])
        if tenant is None:
            raise ApiError(404, "not_found", "no such tenant")
        return tenant

    def conversation_key(self) -> str:
        key = parse_handle(self.params["conversation"])
        if key is None or not key.startswith(self.params["tenant"] + "/"):
            raise ApiError(404, "not_found", "no such conversation")
        return key

    def may_see_tenant(self, tenant: str | None) -> bool:
        return self.key.tenant is None or self.key.tenant == tenant


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    role: Role
    scope: Scope
    handler: Handler
    response: type[BaseModel] | None
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    mutating: bool = False
    tag: str = "admin"
    redact: tuple[str, ...] = ()  # path parameters written to the audit log as digests

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=model.model_dump_json().encode(), content_type="application/json"
    )


def error_response(
    status: int, error: str, message: str, problems: list[tuple[str, str]] | None = None
) -> web.Response:
    listed = None if problems is None else [Problem(path=p, message=m) for p, m in problems]
    body = ErrorBody(error=error, message=message, problems=listed)
    response = web.Response(
        status=status,
        body=body.model_dump_json(exclude_none=True).encode(),
        content_type="application/json",
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="flowbiz-admin"'
    return response
