"""What ``flowbiz check`` (and ``serve`` before it starts) finds in a configuration file.

One run reports every problem it can judge: the schema errors of the core and of each
channel block, the core's own checks and each connector's on the parts that validated
(:func:`gateway.config.inspect_file`), the persona files, the personas the routing rules,
``routing.default_persona`` and the tenants name, and the reach report's problems (channels
where no default persona may answer, see :mod:`gateway.reach_report`). Personas are loaded
from ``personas_dir`` whenever that key itself is sound, whatever else in the file is
broken. The folder kept files go to (``media.dir``, unless they go to ``media.s3``) must
be writable, or creatable (:func:`gateway.media_config.folder_problem`). Every problem names
its path in the file as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agents.persona import PersonaRegistry, load_personas
from gateway.config import GatewayConfig, inspect_file
from gateway.errors import ConfigError
from gateway.media_config import folder_problem
from gateway.reach_report import ReachReport, reach_report

__all__ = ["CheckedConfig", "check_file", "unknown_personas"]


@dataclass(frozen=True, slots=True)
class CheckedConfig:
    """A configuration without problems, its personas and who may reach them where."""

    config: GatewayConfig
    personas: PersonaRegistry
    report: ReachReport


def check_file(path: str | Path) -> CheckedConfig:
    """Load and check the file and its personas; ConfigError lists every problem found."""
    inspection = inspect_file(path)
    config = inspection.config
    personas: PersonaRegistry | None = None
    if (
        config is not None
        and not inspection.removals.shadowed("personas_dir")
        and config.personas_dir.is_dir()  # else the configuration's own check said so
    ):
        try:
            personas = load_personas(config.personas_dir)
        except ConfigError as exc:
            inspection.problems.extend(exc.problems)
    if config is not None and config.media.s3 is None:
        problem = folder_problem(config.media.dir)
        if problem is not None:
            inspection.add([("media.dir", problem)])
    report = ReachReport()
    if config is not None and personas is not None:
        unknown = unknown_personas(config, personas)
        inspection.add(unknown)
        if not unknown:  # else every channel would also be "unreachable": one cause, once
            report = reach_report(config, personas)
            inspection.add(report.problems)
    if inspection.problems or config is None or personas is None:
        raise ConfigError(inspection.problems)
    return CheckedConfig(config, personas, report)


def unknown_personas(config: GatewayConfig, personas: PersonaRegistry) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if config.routing.default_persona not in personas:
        problems.append(("routing.default_persona", _unknown(config.routing.default_persona)))
    for n, rule in enumerate(config.routing.rules):
        if rule.persona not in personas:
            problems.append((f"routing.rules.{n}.persona", _unknown(rule.persona)))
    for n, tenant in enumerate(config.tenants):
        if tenant.default_persona is not None and tenant.default_persona not in personas:
            problems.append((f"tenants.{n}.default_persona", _unknown(tenant.default_persona)))
    return problems


def _unknown(name: str) -> str:
    return f"no persona named {name!r}"
