"""The admin API under ``/v1`` (see docs/admin-api.md), its API keys and the admin CLI.

- :mod:`gateway.admin.keys` — API keys: stored as SHA-256 digests, shown once, roles
  ``admin`` / ``operator`` / ``viewer``, scoped to one tenant or global.
- :mod:`gateway.admin.routes` — the aiohttp routes; each declared once as an
  :class:`~gateway.admin.routes.Operation`, from which both the router and
  :mod:`gateway.admin.openapi` (``/v1/openapi.json``) are built.
- :mod:`gateway.admin.personas` — reload of personas from disk, reaching every process.
- :mod:`gateway.admin.cli` — ``flowbiz keys|usage|dlq`` against the server's store.
"""
