"""``flowbiz simulate CHANNEL …``: send signed, platform-shaped traffic to a gateway.

Each connector package's ``SPEC.simulator`` registers its sub-command (its ``cli.py``).
"""

from __future__ import annotations

from connectors.registry import installed_specs
from connectors.spec import Subcommands

__all__ = ["add_simulators"]


def add_simulators(channels: Subcommands) -> None:
    for spec in installed_specs():
        if spec.simulator is not None:
            spec.simulator(channels)
