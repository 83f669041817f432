"""Defining and disabling personas through the admin API, for every process.

``PUT /v1/personas/{persona}`` stores a persona (created, replaced, or enabled again after
a ``DELETE``); ``DELETE /v1/personas/{persona}`` disables one, a file's or a stored one.
Either way:

- a persona that would act on the host (a host tool such as ``run_command``, a ``stdio``
  MCP server, a ``knowledge_dir``, ``allow_private``, an environment variable sent where
  no persona file sends it) is refused: those stay in the persona files
  (:func:`gateway.persona_overlay.host_refusals`);
- the whole persona set the change would make (the files with every stored persona
  applied) is checked as a reload and ``flowbiz check`` check it, against the
  configuration this process serves, *before* anything is stored: any problem is a 422
  ``invalid_persona`` listing every problem by path, and nothing changes;
- the write is a compare-and-set on the overlay's version, retried on what another admin
  wrote meanwhile, and checked again (:mod:`gateway.versioned_document`);
- this process serves the new set before answering; every other process does within a
  poll (:mod:`gateway.persona_sync`);
- the audit event says what changed: created / replaced / enabled / disabled, the keys
  that changed (by name), the agent kind and the tools; never a prompt's text.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from agents.persona import Persona, PersonaRegistry
from gateway.admin.operation import ApiError, Call, json_response
from gateway.admin.overlay_change import (
    change_made,
    changed_fields,
    commit_change,
    stored_definition,
)
from gateway.admin.schemas import PersonaDefinition, PersonaView
from gateway.persona_overlay import (
    PersonaOverlay,
    StoredPersona,
    effective_personas,
    overlay_document,
)
from gateway.persona_sync import apply_personas

__all__ = ["disable_persona", "persona_view", "put_persona"]


def persona_view(persona: Persona) -> PersonaView:
    return PersonaView(
        name=persona.name,
        display_name=persona.display_name,
        description=persona.description,
        agent=persona.agent.kind,
        tools=list(persona.tools),
        prompts={n: t.version for n, t in persona.prompts.items()},
    )


async def _commit(
    call: Call, change: Callable[[PersonaOverlay], PersonaOverlay]
) -> tuple[PersonaRegistry, int, StoredPersona | None]:
    """Check and store ``change(overlay)`` (the new overlay), retrying lost races."""
    rt = call.runtime
    files = rt.persona_files
    assert files is not None  # set by create_app

    async def apply(version: int, personas: PersonaRegistry) -> None:
        await apply_personas(rt, version, personas)

    committed = await commit_change(
        call,
        overlay_document(rt.keyspace),
        change,
        lambda candidate: effective_personas(files, candidate, rt.config),
        apply,
        reason="invalid_persona",
        what="personas",
    )
    previous = committed.previous.personas.get(call.params["persona"])
    return committed.checked, committed.version, previous


async def put_persona(call: Call) -> web.StreamResponse:
    name = call.params["persona"]
    body: PersonaDefinition = call.body
    if body.name is not None and body.name != name:
        raise ApiError(422, "invalid", "name: the body's name must be the path's persona")
    fields = body.model_dump(mode="json", exclude_unset=True, exclude={"name"})
    definition = {"name": name, **fields}
    stored = stored_definition(call, definition, disabled=False)
    rt = call.runtime
    before = rt.personas.get(name)
    personas, version, previous = await _commit(
        call, lambda overlay: overlay.with_persona(name, stored)
    )
    persona = personas[name]
    files = rt.persona_files
    call.audit_detail = {
        "change": change_made(previous, in_files=files is not None and name in files),
        "version": version,
        "fields": changed_fields(Persona, before, persona),
        "agent": persona.agent.kind,
        "tools": list(persona.tools),
    }
    return json_response(persona_view(persona))


async def disable_persona(call: Call) -> web.StreamResponse:
    name = call.params["persona"]
    persona = call.runtime.personas.get(name)
    if persona is None:
        raise ApiError(404, "not_found", "no such persona")

    def disable(overlay: PersonaOverlay) -> PersonaOverlay:
        previous = overlay.personas.get(name)
        definition = previous.definition if previous is not None else None
        return overlay.with_persona(name, stored_definition(call, definition, disabled=True))

    _, version, _ = await _commit(call, disable)
    call.audit_detail = {
        "change": "disabled",
        "version": version,
        "agent": persona.agent.kind,
        "tools": list(persona.tools),
    }
    return web.Response(status=204)
