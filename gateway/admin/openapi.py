"""``GET /v1/openapi.json``: the OpenAPI 3.1 document, built from the operation table.

Schemas come from the same pydantic models that parse requests and write responses
(JSON Schema 2020-12, which OpenAPI 3.1 uses as is), so the document describes exactly
what is served. The HTTP channel's routes (:mod:`connectors.http_api.schemas`) are in it
too, tagged ``HTTP channel``, with the public listener as their server, and the reply
callbacks it sends as a webhook.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from connectors.http_api.schemas import channel_openapi
from gateway.admin.operation import PATH_PATTERNS, Operation
from gateway.admin.schemas import ErrorBody
from gateway.admin.table import OPERATIONS
from gateway.runtime import RUNTIME

__all__ = ["build_openapi", "openapi_handler"]

_REF = "#/components/schemas/{model}"
_Schemas = Mapping[tuple[Any, Any], dict[str, Any]]
_ERROR_TEXT = {
    400: "The query or body could not be read",
    401: "No API key, or an unknown or revoked one",
    403: "The key's role or scope does not allow this",
    404: "Nothing by that name",
    409: "The resource is not in a state that allows this",
    422: "The body breaks the schema or names something unknown",
    429: "Over quota",
    503: "A subsystem is unavailable",
}


def _models() -> list[tuple[type[BaseModel], Any]]:
    seen: dict[type[BaseModel], Any] = {ErrorBody: "serialization"}
    for op in OPERATIONS:
        if op.response is not None:
            seen[op.response] = "serialization"
        if op.body is not None:
            seen[op.body] = "validation"
    return list(seen.items())


def _parameters(
    op: Operation, defs: dict[str, Any], examples: Mapping[str, tuple[str, ...]]
) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in op.path_params:
        schema: dict[str, Any] = {"type": "string", "pattern": PATH_PATTERNS[name]}
        if examples.get(name):
            schema["examples"] = list(examples[name])
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=_REF)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            prop = dict(prop)
            prop.pop("title", None)
            params.append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
        defs.update(schema.get("$defs", {}))
    return params


def _operation(
    op: Operation,
    schemas: _Schemas,
    defs: dict[str, Any],
    examples: Mapping[str, tuple[str, ...]],
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if op.response is None:
        responses[str(op.status)] = {"description": "Done"}
    else:
        ref = schemas[(op.response, "serialization")]
        responses[str(op.status)] = {
            "description": "OK",
            "content": {"application/json": {"schema": ref}},
        }
    error_ref = schemas[(ErrorBody, "serialization")]
    # Any route answers 503 (with Retry-After) while the store is unreachable.
    for status in sorted({401, 403, 503, *op.errors}):
        if status == 503 and 503 in op.errors and op.response is not None:
            # An operation that declares 503 itself answers it with its own body (health:
            # degraded, telling what is wrong); any other's 503 is store_unavailable.
            schema = schemas[(op.response, "serialization")]
        else:
            schema = error_ref
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": schema}},
        }
    responses["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    responses["503"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "description": f"Needs the `{op.role.value}` role"
        + {
            "global": "; global keys only.",
            "tenant": "; a tenant-scoped key only for its own tenant.",
            "any": "; a tenant-scoped key sees only its own tenant's data.",
        }[op.scope]
        + (" Written to the audit log." if op.mutating else ""),
        "parameters": _parameters(op, defs, examples),
        "responses": responses,
    }
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas[(op.body, "validation")]}},
        }
    return out


@functools.lru_cache(maxsize=8)
def build_openapi(
    tenants: tuple[str, ...] = (),
    personas: tuple[str, ...] = (),
    public_url: str = "http://127.0.0.1:8080",
) -> dict[str, Any]:
    """The document; the configured tenants and loaded personas serve as examples, and
    ``public_url`` is where the HTTP channel's routes are served."""
    schemas, top = models_json_schema(_models(), ref_template=_REF)
    defs: dict[str, Any] = dict(top.get("$defs", {}))
    examples = {"tenant": tenants[:5], "persona": personas[:5]}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas, defs, examples)
    channel_paths, webhooks, channel = channel_openapi(public_url)
    paths |= channel_paths
    defs |= channel["schemas"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "FlowBiz Gateway admin API",
            "version": "1",
            "description": "Tenants, plans and quotas, conversations, dead letters, usage "
            "and audit (see docs/admin-api.md); and the HTTP channel's routes, on the public "
            "listener (see docs/connectors/http.md).",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "webhooks": webhooks,
        "components": {
            "schemas": defs,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An admin API key (`flowbiz keys create`)",
                },
                **channel["securitySchemes"],
            },
        },
    }


async def openapi_handler(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    http = rt.config.http
    public_url = http.public_base_url or rt.public_url or f"http://{http.host}:{http.port}"
    document = build_openapi(
        tuple(t.id for t in rt.config.tenants), tuple(sorted(rt.personas)), public_url
    )
    return web.Response(body=json.dumps(document).encode(), content_type="application/json")
