"""The admin API under ``/v1`` (see docs/admin-api.md), its API keys and the admin CLI.

- :mod:`gateway.admin.keys` — API keys: stored as SHA-256 digests, shown once, roles
  ``admin`` / ``operator`` / ``viewer``, scoped to one tenant or global.
- :mod:`gateway.admin.table` — every route declared once as an
  :class:`~gateway.admin.operation.Operation` (:mod:`gateway.admin.operation`), with its
  handler in :mod:`gateway.admin.handlers`; both the router (:mod:`gateway.admin.routes`,
  the gate every request passes) and :mod:`gateway.admin.openapi` (``/v1/openapi.json``)
  are built from it.
- :mod:`gateway.admin.personas` — reload of personas from disk, reaching every process.
- :mod:`gateway.admin.cli` — ``flowbiz keys|usage|dlq`` against the server's store.
"""
