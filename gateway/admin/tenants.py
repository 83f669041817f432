"""Defining and disabling tenants through the admin API, for every process.

``PUT /v1/tenants/{tenant}`` stores a tenant block (created, replaced, or enabled again
after a ``DELETE``); ``DELETE /v1/tenants/{tenant}`` disables a tenant, the file's or a
stored one. Either way:

- the whole configuration the change would make (the file with every stored tenant
  applied, :func:`gateway.tenant_overlay.effective_config`) is checked as ``flowbiz
  check`` checks a file, *before* anything is stored: any problem is a 422 listing every
  problem by path (``tenants.<id>.…``) and nothing changes;
- the write is a compare-and-set on the overlay's version, retried on what another admin
  wrote meanwhile (and checked again), so no change is lost silently;
- this process swaps the new configuration in before answering; every other process does
  within a poll (:mod:`gateway.tenant_sync`);
- the audit event (written by the router for every mutating operation) says what changed:
  the tenant, created / replaced / enabled / disabled, the keys that changed (by name),
  its plan, its channels and the ``env:`` references its secrets name, never a value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.admin.handlers import tenant_view
from gateway.admin.operation import ApiError, Call, json_response
from gateway.admin.overlay_change import (
    change_made,
    changed_fields,
    commit_change,
    stored_definition,
)
from gateway.admin.schemas import TenantDefinition
from gateway.config import GatewayConfig, TenantConfig
from gateway.tenant_overlay import StoredTenant, TenantOverlay, effective_config, overlay_document
from gateway.tenant_sync import apply_overlay_version

__all__ = ["disable_tenant", "put_tenant"]


def _env_references(value: Any) -> list[str]:
    """Every ``env:NAME`` string in a definition: what its secrets are read from."""
    if isinstance(value, str):
        return [value] if value.startswith("env:") else []
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _env_references(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _env_references(item)]
    return []


async def _commit(
    call: Call, change: Callable[[TenantOverlay], TenantOverlay]
) -> tuple[GatewayConfig, int, StoredTenant | None]:
    """Check and store ``change(overlay)`` (the new overlay), retrying lost races."""
    rt = call.runtime
    seed = rt.seed
    assert seed is not None  # set by create_app

    async def apply(version: int, config: GatewayConfig) -> None:
        await apply_overlay_version(rt, version, config)

    committed = await commit_change(
        call,
        overlay_document(rt.keyspace),
        change,
        lambda candidate: effective_config(seed, candidate, rt.personas),
        apply,
        reason="invalid_tenant",
        what="tenants",
    )
    previous = committed.previous.tenants.get(call.params["tenant"])
    return committed.checked, committed.version, previous


async def put_tenant(call: Call) -> web.StreamResponse:
    tenant_id = call.params["tenant"]
    body: TenantDefinition = call.body
    if body.id is not None and body.id != tenant_id:
        raise ApiError(422, "invalid", "id: the body's id must be the path's tenant")
    fields = body.model_dump(mode="json", exclude_unset=True, exclude={"id"})
    definition = {"id": tenant_id, **fields}
    stored = stored_definition(call, definition, disabled=False)
    rt = call.runtime
    assert rt.seed is not None  # set by create_app
    before = rt.config.tenant(tenant_id)
    config, version, previous = await _commit(
        call, lambda overlay: overlay.with_tenant(tenant_id, stored)
    )
    tenant = config.tenant(tenant_id)
    assert tenant is not None  # just stored, and the check passed
    call.audit_detail = {
        "change": change_made(previous, in_files=rt.seed.tenant(tenant_id) is not None),
        "version": version,
        "fields": changed_fields(TenantConfig, before, tenant),
        "plan": tenant.plan,
        "channels": [f"{c.kind}:{c.name}" for c in tenant.channels],
        "secrets": sorted(set(_env_references(definition))),
    }
    return json_response(await tenant_view(call, tenant))


async def disable_tenant(call: Call) -> web.StreamResponse:
    tenant_id = call.params["tenant"]
    tenant = call.tenant()  # 404 for a tenant not served (never defined, or disabled)

    def disable(overlay: TenantOverlay) -> TenantOverlay:
        previous = overlay.tenants.get(tenant_id)
        definition = previous.definition if previous is not None else None
        return overlay.with_tenant(tenant_id, stored_definition(call, definition, disabled=True))

    _, version, _ = await _commit(call, disable)
    call.audit_detail = {
        "change": "disabled",
        "version": version,
        "channels": [f"{c.kind}:{c.name}" for c in tenant.channels],
    }
    return web.Response(status=204)
