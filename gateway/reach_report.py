"""What ``flowbiz check`` says about who may reach which persona.

For every tenant's channel block: whether it is internal, whether the switch command is on,
and the personas that may answer there (a persona limited to some addresses of the channel
shows them). Problems — which stop ``check`` and ``serve`` — are channels where no default
persona may answer (every message there would get ``routing.unreachable_reply``) and
``run_command`` options that do not validate, and MCP grants (``mcp:<server>/…``) naming a
server that ``mcp_servers`` does not configure. Warnings are configurations that work but
probably not as meant: a tenant default replaced by the global one on some channel, a rule
skipped on a channel, a persona with host tools opened to customer channels, the former
``allow:`` prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agents.persona import Persona, PersonaRegistry
from agents.tools.command import CommandPolicy
from gateway.config import GatewayConfig
from gateway.reach import block_point, only_at, reachable

__all__ = ["ReachReport", "reach_report"]


@dataclass(slots=True)
class ReachReport:
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def table(self) -> list[str]:
        header = ("tenant", "channel", "internal", "switch", "personas that may answer")
        rows = [header, *self.rows]
        widths = [max(len(r[n]) for r in rows) for n in range(4)]
        return [
            "  ".join(cell.ljust(widths[n]) if n < 4 else cell for n, cell in enumerate(row))
            for row in rows
        ]


def _run_command_options(persona: Persona) -> dict[str, Any] | None:
    tool_options = persona.agent.options.get("tool_options")
    if not isinstance(tool_options, dict):
        return None
    options = tool_options.get("run_command")
    return options if isinstance(options, dict) else None


def _persona_findings(persona: Persona, config: GatewayConfig, report: ReachReport) -> None:
    where = f"personas.{persona.name}"
    for server in sorted({g.server for g in persona.mcp_grants} - set(config.mcp_servers)):
        report.problems.append(
            (f"{where}.tools", f"grants tools of MCP server {server!r}, which mcp_servers lacks")
        )
    if persona.host_tools and not persona.internal_only:
        report.warnings.append(
            (
                f"{where}.access.internal_only",
                f"has host tools ({', '.join(persona.host_tools)}) and internal_only: false — "
                "customer-facing channels can reach it",
            )
        )
    options = _run_command_options(persona)
    if "run_command" not in persona.tools or options is None:
        return
    try:
        policy = CommandPolicy.model_validate(options)
    except ValidationError as exc:
        report.problems += [
            (f"{where}.tool_options.run_command." + ".".join(str(p) for p in e["loc"]), e["msg"])
            for e in exc.errors()
        ]
        return
    if policy.allow:
        report.warnings.append(
            (
                f"{where}.tool_options.run_command.allow",
                "each entry is now one exact command (no longer a prefix); "
                "write them as commands: [{argv: [...], flags: [...], args: {...}}]",
            )
        )


def reach_report(config: GatewayConfig, personas: PersonaRegistry) -> ReachReport:
    report = ReachReport()
    for persona in personas.values():
        _persona_findings(persona, config, report)
    global_default = personas.get(config.routing.default_persona)
    for ti, tenant in enumerate(config.tenants):
        tenant_default = personas.get(tenant.default_persona or "")
        for ci, block in enumerate(tenant.channels):
            where = f"tenants.{ti}.channels.{ci}"
            point = block_point(config, tenant, block)
            names = []
            for candidate in sorted(personas.values(), key=lambda p: p.name):
                if reachable(candidate, point):
                    names.append(candidate.name)
                elif addresses := only_at(candidate, point):
                    names.append(f"{candidate.name} (only {', '.join(addresses)})")
            report.rows.append(
                (
                    tenant.id,
                    block.name,
                    "yes" if point.internal else "no",
                    "on" if point.switch else "off",
                    ", ".join(names) or "(none)",
                )
            )
            tenant_ok = tenant_default is not None and reachable(tenant_default, point)
            global_ok = global_default is not None and reachable(global_default, point)
            if tenant_default is not None and not tenant_ok and global_ok:
                report.warnings.append(
                    (
                        f"tenants.{ti}.default_persona",
                        f"{tenant_default.name!r} may not answer on {block.name}; "
                        f"{config.routing.default_persona!r} answers there instead",
                    )
                )
            if not (tenant_ok or global_ok):
                report.problems.append(
                    (
                        where,
                        "no default persona may answer on this channel (internal-only or not "
                        "allowed here); messages no rule routes would get the unreachable reply",
                    )
                )
            for n, rule in enumerate(config.routing.rules):
                target = personas.get(rule.persona)
                applies = rule.tenant in (None, tenant.id) and rule.channel in (None, block.kind)
                if target is not None and applies and not reachable(target, point):
                    report.warnings.append(
                        (
                            f"routing.rules.{n}",
                            f"{rule.persona!r} may not answer on {tenant.id}/{block.name}; "
                            "the rule is skipped there",
                        )
                    )
    return report
