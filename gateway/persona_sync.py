"""The personas every process serves: the files, the stored ones over them, kept in step.

A process serves :func:`gateway.persona_overlay.effective_personas` of its persona files
and the overlay stored through the admin API. One counter in the store
(:meth:`~gateway.store.Keyspace.personas_version`) is bumped by a file reload
(``POST /v1/personas/reload``, :func:`reload_personas`) and by every write of the overlay;
each process polls it every :data:`POLL_SECONDS` and on a change loads its files again,
reads the overlay and swaps the result in. A store counter rather than a pub/sub message
because it needs nothing beyond the ``Store`` protocol, works the same on SQLite and Redis,
and a process that was down or partitioned away catches up on its next poll.

Guarantees:

- a process starting applies the stored personas before its connectors and its stored
  tenants (:func:`personas_ctx`), so a restart, or a process started later, serves what
  is stored;
- a file reload keeps the stored personas applied over the files it loads;
- a set that does not pass the checks is never applied: the process keeps serving what
  it had, logs the problems once and tries again at each poll (the tenants it is checked
  against may be a poll behind);
- an older overlay is never applied over a newer one (a poll racing a local write).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from agents.persona import PersonaRegistry, load_personas
from gateway.errors import ConfigError, StoreError
from gateway.observability import get_logger
from gateway.persona_overlay import effective_personas, overlay_document
from gateway.runtime import RUNTIME, Runtime

__all__ = [
    "POLL_SECONDS",
    "apply_personas",
    "install_persona_sync",
    "personas_ctx",
    "reload_personas",
]

log = get_logger(__name__)

POLL_SECONDS = 1.0


async def apply_personas(rt: Runtime, version: int, personas: PersonaRegistry) -> bool:
    """Serve ``personas`` (built from the overlay at ``version``) unless a newer overlay is
    in force; whether they were applied."""
    sync = rt.persona_sync
    async with sync.lock:
        if version < sync.applied:
            return False
        if rt.worker is not None:
            rt.worker.reload(personas)  # builds every agent first: a failure changes nothing
        rt.personas = personas
        sync.applied = version
        return True


async def _effective(
    rt: Runtime, files: PersonaRegistry, *, whole: bool = True
) -> tuple[PersonaRegistry, int]:
    assert rt.store is not None  # the app is running
    overlay, version = await overlay_document(rt.keyspace).read(rt.store)
    return effective_personas(files, overlay, rt.config, whole=whole), version


async def reload_personas(app: web.Application) -> tuple[PersonaRegistry, int]:
    """Reload the files here (the stored personas applied over them), then tell every other
    process; ConfigError leaves everything as it was. Returns the personas and the counter."""
    rt = app[RUNTIME]
    assert rt.store is not None  # the app is running
    files = load_personas(rt.config.personas_dir)
    personas, overlay_version = await _effective(rt, files)
    rt.persona_files = files
    await apply_personas(rt, overlay_version, personas)
    version = await rt.store.incr(rt.keyspace.personas_version())
    rt.persona_sync.seen = version
    log.info("personas.reloaded", personas=len(personas), version=version)
    return personas, version


async def personas_ctx(app: web.Application) -> AsyncIterator[None]:
    """Apply the stored personas before the stored tenants and the connectors (a cleanup
    context): each stored persona is checked by itself here; the configuration's references
    to the set are checked by the tenants' load right after, and were at the write."""
    rt = app[RUNTIME]
    assert rt.store is not None  # opened by the store's context
    assert rt.persona_files is not None  # set by create_app
    rt.persona_sync.seen = await rt.store.incr(rt.keyspace.personas_version(), 0)
    try:
        personas, version = await _effective(rt, rt.persona_files, whole=False)
    except ConfigError as exc:
        log.error("personas.stored_refused", problems=_listed(exc))
    else:
        if version:
            await apply_personas(rt, version, personas)
            log.info("personas.synced", version=version, personas=len(personas))
    yield


def install_persona_sync(app: web.Application) -> None:
    """Follow file reloads and stored personas made by any process, by polling."""
    app.cleanup_ctx.append(_persona_poll_ctx)


async def _persona_poll_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_poll(app[RUNTIME]), name="persona-sync")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _listed(exc: ConfigError) -> list[str]:
    return [f"{path}: {message}" for path, message in exc.problems][:20]


async def catch_up(rt: Runtime) -> None:
    """Load the files and the overlay again if the counter moved since the last look."""
    assert rt.store is not None  # open while the app runs
    sync = rt.persona_sync
    version = await rt.store.incr(rt.keyspace.personas_version(), 0)  # a read
    if version == sync.seen:
        return
    try:
        files = load_personas(rt.config.personas_dir)
        personas, overlay_version = await _effective(rt, files)
    except ConfigError as exc:
        # Keep serving what we have; tried again next poll, logged once per change.
        if sync.failed != version:
            log.error("personas.sync_failed", version=version, problems=_listed(exc))
            sync.failed = version
        return
    rt.persona_files = files
    await apply_personas(rt, overlay_version, personas)
    sync.seen = version
    log.info("personas.synced", version=version, personas=len(personas))


async def _poll(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            await catch_up(rt)
        except StoreError as exc:
            log.warning("personas.sync_store_error", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - an agent that fails to build, say
            log.error("personas.sync_error", error=repr(exc)[:500])
