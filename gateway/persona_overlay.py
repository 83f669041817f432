"""Personas defined at run time: stored over the persona files, checked as a reload is.

The persona files are the seed. The admin API (``PUT``/``DELETE /v1/personas/{persona}``,
see :mod:`gateway.admin.persona_writes`) writes a :class:`PersonaOverlay` to the store: per
persona name, either a definition (the persona as its YAML file would hold it) or a mark
that the persona is disabled. The personas a process serves are
:func:`effective_personas`: the files' with each stored definition replacing the file's
persona of the same name (or added after the files', by name), and each disabled one
removed.

Guarantees:

- a stored definition may not act on the host (:func:`host_refusals`): no host tool
  (``run_command``, any tool marked ``acts_on_host``), no grant of a ``stdio`` MCP server
  (the gateway runs it as a process), no ``knowledge_dir`` (a folder of the host's files),
  no ``allow_private`` (the host's private network), and no environment variable sent to
  a URL no persona file sends it to (an LLM's ``api_key_env``, a webhook's
  ``secrets_env``). Those personas stay in files, written by whoever has the host's shell;
  an admin key does not become one;
- the candidate set is checked whole as a reload checks it (every persona the routing
  rules, ``routing.default_persona`` and the tenants name exists, every MCP grant names a
  declared server), each stored persona's agent is built as a worker builds it (its kind,
  options and tools), and the reach report runs as ``flowbiz check`` runs it; every problem
  is named by a path with names, not positions (``personas.sales.tools``,
  ``tenants.acme.default_persona``);
- the overlay is one document under :meth:`~gateway.store.Keyspace.personas_overlay`,
  written only by a compare-and-set on its version (:mod:`gateway.versioned_document`);
  the same commit bumps :meth:`~gateway.store.Keyspace.personas_version`, the counter a
  file reload bumps too, so one poll follows both (:mod:`gateway.admin.personas`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.persona import HOST_TOOLS, Persona, PersonaRegistry
from agents.registry import build_agent
from agents.tools.registry import TOOLS
from gateway.config import GatewayConfig
from gateway.errors import ConfigError
from gateway.reach_report import reach_report
from gateway.store import Keyspace
from gateway.tenant_overlay import by_tenant_id
from gateway.versioned_document import StoredDefinition, VersionedDocument

__all__ = [
    "PersonaOverlay",
    "StoredPersona",
    "effective_personas",
    "host_refusals",
    "host_tools",
    "overlay_document",
    "reference_problems",
]


StoredPersona = StoredDefinition
"""One persona as the admin API left it."""


class PersonaOverlay(BaseModel):
    """Every persona the admin API defined or disabled, by name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    personas: dict[str, StoredPersona] = Field(default_factory=dict)

    def with_persona(self, name: str, stored: StoredPersona) -> PersonaOverlay:
        return PersonaOverlay(personas={**self.personas, name: stored})


def overlay_document(keyspace: Keyspace) -> VersionedDocument[PersonaOverlay]:
    """Where the overlay is stored, and the counter every process polls."""
    return VersionedDocument(
        PersonaOverlay, keyspace.personas_overlay(), keyspace.personas_version()
    )


def host_tools() -> frozenset[str]:
    """The built-in tools that act on the host: the persona model's list and every tool
    class of the registry that says so."""
    marked = {
        name
        for name, builder in TOOLS.items()
        if getattr(getattr(builder, "__self__", None), "acts_on_host", False)
    }
    return HOST_TOOLS | marked


# Where an agent kind sends what it reads from the environment: (the option naming the
# URL, the option naming the variables). The gateway sends the value (a bearer token) or a
# signature made with it to that URL.
_ENVIRONMENT_OPTIONS = {"llm": ("base_url", "api_key_env"), "webhook": ("url", "secrets_env")}
_PRIVATE_OPTIONS = ("allow_private", "allow_private_network")


def _variables(persona: Persona) -> tuple[str | None, set[str]]:
    """The URL ``persona``'s agent sends to and the environment variables it reads for it."""
    names = _ENVIRONMENT_OPTIONS.get(persona.agent.kind)
    if names is None:
        return None, set()
    url, variables = (persona.agent.options.get(name) for name in names)
    if isinstance(variables, str):
        variables = [variables]
    named = {v for v in variables or () if isinstance(v, str)}
    return (url if isinstance(url, str) else None), named


def _environment_refusals(persona: Persona, files: PersonaRegistry) -> list[tuple[str, str]]:
    """A stored agent may read an environment variable only to send it where a persona file
    already sends it: else a key could point ``api_key_env: ANY_SECRET`` at its own server."""
    url, variables = _variables(persona)
    allowed: set[str] = set()
    for file_persona in files.values():
        if file_persona.agent.kind == persona.agent.kind:
            file_url, file_variables = _variables(file_persona)
            if file_url == url:
                allowed |= file_variables
    base = f"personas.{persona.name}.agent.options"
    found = [
        (base, f"the variable {name!r} is sent only where a persona file sends it ({url!r} is not)")
        for name in sorted(variables - allowed)
    ]
    for option in _PRIVATE_OPTIONS:
        if persona.agent.options.get(option) is True:
            found.append(
                (f"{base}.{option}", "the host's private network: only a persona file may allow it")
            )
    return found


def host_refusals(
    persona: Persona, config: GatewayConfig, files: PersonaRegistry
) -> list[tuple[str, str]]:
    """Why ``persona`` may not be defined through the API (empty: it may)."""
    base = f"personas.{persona.name}"
    found = _environment_refusals(persona, files)
    on_host = host_tools()
    for tool in persona.builtin_tools:
        if tool in on_host:
            found.append(
                (f"{base}.tools", f"{tool!r} acts on the host: only a persona file may grant it")
            )
    for grant in persona.mcp_grants:
        server = config.mcp_servers.get(grant.server)
        if server is not None and server.transport == "stdio":
            found.append(
                (
                    f"{base}.tools",
                    f"MCP server {grant.server!r} is a process on the host (stdio): "
                    "only a persona file may grant it",
                )
            )
    if persona.knowledge_dir is not None:
        found.append(
            (f"{base}.knowledge_dir", "a folder on the host: only a persona file may set it")
        )
    return found


def reference_problems(config: GatewayConfig, personas: PersonaRegistry) -> list[tuple[str, str]]:
    """References from the configuration to personas that do not exist, and from personas
    to MCP servers the configuration does not declare (what a file reload checks)."""
    problems: list[tuple[str, str]] = []
    if config.routing.default_persona not in personas:
        problems.append(("routing.default_persona", config.routing.default_persona))
    for n, rule in enumerate(config.routing.rules):
        if rule.persona not in personas:
            problems.append((f"routing.rules.{n}.persona", rule.persona))
    for n, tenant in enumerate(config.tenants):
        if tenant.default_persona is not None and tenant.default_persona not in personas:
            problems.append((f"tenants.{n}.default_persona", tenant.default_persona))
    found = [(path, f"no persona named {name!r}") for path, name in problems]
    for persona in personas.values():
        for server in sorted({g.server for g in persona.mcp_grants} - set(config.mcp_servers)):
            found.append((f"personas.{persona.name}.tools", f"no MCP server named {server!r}"))
    return found


def _stored_problems(
    name: str, persona: Persona, config: GatewayConfig, files: PersonaRegistry
) -> list[tuple[str, str]]:
    problems = host_refusals(persona, config, files)
    for tool in persona.builtin_tools:
        if tool not in TOOLS:
            problems.append((f"personas.{name}.tools", f"no tool named {tool!r}"))
    # Built as a worker builds it (its MCP grants aside: those need the servers' sessions
    # and are checked against the configuration above), so a worker cannot fail to.
    try:
        build_agent(persona.model_copy(update={"tools": persona.builtin_tools}))
    except (KeyError, ValueError, TypeError) as exc:
        problems.append((f"personas.{name}.agent", str(exc).strip("\"'")[:500]))
    return problems


def effective_personas(
    files: PersonaRegistry,
    overlay: PersonaOverlay,
    config: GatewayConfig,
    *,
    whole: bool = True,
) -> PersonaRegistry:
    """The files' personas with the overlay applied; ConfigError lists every problem.

    ``whole=False`` checks only each stored persona by itself, not the configuration's
    references to the set (a process starting, before its stored tenants are applied:
    those are checked with these personas right after, and were at the write).
    """
    problems: list[tuple[str, str]] = []
    personas: dict[str, Persona] = dict(files)
    for name in sorted(overlay.personas):
        stored = overlay.personas[name]
        if stored.disabled:
            personas.pop(name, None)
            continue
        if stored.definition is None:
            continue
        try:
            persona = Persona.model_validate(stored.definition)
        except ValidationError as exc:
            problems += [
                (".".join(["personas", name, *map(str, e["loc"])]), e["msg"]) for e in exc.errors()
            ]
            continue
        problems += _stored_problems(name, persona, config, files)
        personas[name] = persona
    registry = PersonaRegistry(personas, source=files.source)
    if whole and not problems:
        references = reference_problems(config, registry)
        problems += references
        if not references:  # else every channel would also be "unreachable": one cause, once
            problems += reach_report(config, registry).problems
    if problems:
        raise ConfigError(by_tenant_id(problems, [t.id for t in config.tenants]))
    return registry
