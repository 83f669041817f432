"""Tenants defined at run time: stored over the file's, checked as the file is.

The YAML file is the seed. The admin API (``PUT``/``DELETE /v1/tenants/{tenant}``, see
:mod:`gateway.admin.tenants`) writes a :class:`TenantOverlay` to the store: per tenant id,
either a definition (the tenant block as the file would hold it, secrets as ``env:NAME``
references only, never their values) or a mark that the tenant is disabled. The
configuration a process serves is :func:`effective_config`: the seed with each stored
definition replacing the seed's tenant of the same id (or added after the seed's, by id),
and each disabled tenant removed.

Guarantees:

- the candidate goes through :func:`~gateway.config.inspect_config`, the persona check and
  the reach report exactly as ``flowbiz check`` runs them on a file, so what the API stores
  the file could have said; every problem is named by its path with the tenant's id in
  place of its position (``tenants.acme.channels.0.signing_secret``);
- the overlay is one document under :meth:`~gateway.store.Keyspace.tenants_overlay`,
  written only by a compare-and-set on its version, so of two admins racing the second is
  told and retries on what the first wrote, never silently overwrites it
  (:mod:`gateway.versioned_document`); the same commit bumps
  :meth:`~gateway.store.Keyspace.tenants_version`, the counter every
  process polls. One document rather than a record per tenant because the check is of the
  whole configuration: a single version makes "validated against what is stored" and
  "stored" one atomic step.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents.persona import PersonaRegistry
from gateway.config import GatewayConfig, inspect_config
from gateway.config_check import unknown_personas
from gateway.errors import ConfigError
from gateway.reach_report import reach_report
from gateway.store import Keyspace, Store
from gateway.versioned_document import StoredDefinition, VersionedDocument

__all__ = [
    "StoredTenant",
    "TenantOverlay",
    "by_tenant_id",
    "effective_config",
    "overlay_document",
    "read_overlay",
]


StoredTenant = StoredDefinition
"""One tenant as the admin API left it."""


class TenantOverlay(BaseModel):
    """Every tenant the admin API defined or disabled, by id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenants: dict[str, StoredTenant] = Field(default_factory=dict)

    def with_tenant(self, tenant_id: str, stored: StoredTenant) -> TenantOverlay:
        return TenantOverlay(tenants={**self.tenants, tenant_id: stored})


def _candidate(seed: GatewayConfig, overlay: TenantOverlay) -> tuple[list[Any], list[str]]:
    tenants: list[Any] = []
    ids: list[str] = []

    def add(tenant_id: str, tenant: Any) -> None:
        tenants.append(tenant)
        ids.append(tenant_id)

    for tenant in seed.tenants:
        stored = overlay.tenants.get(tenant.id)
        if stored is None:
            add(tenant.id, tenant)
        elif not stored.disabled and stored.definition is not None:
            add(tenant.id, stored.definition)
    for tenant_id in sorted(overlay.tenants):
        stored = overlay.tenants[tenant_id]
        if seed.tenant(tenant_id) is None and not stored.disabled and stored.definition:
            add(tenant_id, stored.definition)
    return tenants, ids


_TENANT_PATH = re.compile(r"^tenants\.(\d+)(?=\.|$)")


def by_tenant_id(problems: list[tuple[str, str]], ids: list[str]) -> list[tuple[str, str]]:
    """``problems`` with each ``tenants.<n>`` path naming the tenant's id (``ids[n]``)."""

    def name(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return f"tenants.{ids[index]}" if index < len(ids) else match.group(0)

    return [(_TENANT_PATH.sub(name, path), message) for path, message in problems]


def effective_config(
    seed: GatewayConfig, overlay: TenantOverlay, personas: PersonaRegistry
) -> GatewayConfig:
    """The seed with the overlay applied, checked whole; ConfigError lists every problem."""
    tenants, ids = _candidate(seed, overlay)
    # The seed's other sections are passed as the validated models they are (their secrets
    # already read); only the stored tenants are raw data, validated here as a file's are.
    data: dict[str, Any] = {
        name: getattr(seed, name)
        for name in GatewayConfig.model_fields
        if name not in ("tenants", "source")
    }
    data["tenants"] = tenants
    inspection = inspect_config(data)
    config = inspection.config
    if config is not None:
        unknown = unknown_personas(config, personas)
        inspection.add(unknown)
        if not unknown:
            inspection.add(reach_report(config, personas).problems)
    if inspection.problems or config is None:
        raise ConfigError(by_tenant_id(inspection.problems, ids))
    return config.model_copy(update={"source": seed.source})


def overlay_document(keyspace: Keyspace) -> VersionedDocument[TenantOverlay]:
    """Where the overlay is stored, and the counter every process polls."""
    return VersionedDocument(TenantOverlay, keyspace.tenants_overlay(), keyspace.tenants_version())


async def read_overlay(store: Store, keyspace: Keyspace) -> tuple[TenantOverlay, int]:
    """The stored overlay and its version (0: nothing stored yet)."""
    return await overlay_document(keyspace).read(store)
