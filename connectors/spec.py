"""``ConnectorSpec``: everything the gateway needs to know about one connector package.

Each package under ``connectors/`` exports ``SPEC: ConnectorSpec[ItsChannelConfig]`` from its
``__init__.py``, and nothing else is looked up by name: the configuration reads the config
model and the check from it (through the kernel's view of a spec,
:class:`gateway.config.ChannelKind`), the app builds the connector with its factory,
``flowbiz simulate`` registers its simulator and ``flowbiz demo`` plays its scene. The spec
is generic in the package's channel model, so mypy checks the factory and the check of
every package against the model the configuration hands them.

The edge routes, the worker-side parse and the send path are the methods of the
:class:`~connectors.base.Connector` the factory builds.

A package that is not installed is skipped (see :func:`gateway.channel_config.
connector_package`); the demo and the simulator are wiring, loaded only when asked for, so
importing a package for its connector never imports its emulator.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeAlias, TypeVar

from gateway.config import ChannelConfig, ChannelKind, GatewayConfig, PlacedChannel, TenantConfig
from gateway.models import Channel

if TYPE_CHECKING:
    from connectors.base import Connector, ConnectorContext
    from gateway.demo_scene import Scene

__all__ = [
    "Claim",
    "ConnectorFactory",
    "ConnectorSpec",
    "Problem",
    "Subcommands",
    "claimed_twice",
    "no_problems",
]

ChannelT = TypeVar("ChannelT", bound=ChannelConfig)
ChannelT_contra = TypeVar("ChannelT_contra", bound=ChannelConfig, contravariant=True)

Problem: TypeAlias = tuple[str, str]
"""A configuration problem: the dotted path of the key and what is wrong with it."""

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""Where ``flowbiz simulate`` registers one sub-command per channel."""


class ConnectorFactory(Protocol[ChannelT_contra]):
    """Builds the one connector serving every block of its kind (they passed ``check``)."""

    def __call__(
        self,
        *,
        context: ConnectorContext,
        channels: Sequence[tuple[TenantConfig, ChannelT_contra]],
    ) -> Connector: ...


def no_problems(channels: Sequence[PlacedChannel[Any]], config: GatewayConfig) -> list[Problem]:
    """The check of a connector whose blocks cannot conflict."""
    return []


@dataclass(frozen=True, slots=True)
class ConnectorSpec(Generic[ChannelT]):
    """One connector package, typed. ``kind`` is what a channel block's ``kind:`` says."""

    channel: Channel
    config_model: type[ChannelT]
    factory: ConnectorFactory[ChannelT]
    # Every block of this kind at once, when the configuration is loaded (so `flowbiz check`
    # reports it and `serve` never starts with it): what would make two blocks ambiguous.
    check: Callable[[Sequence[PlacedChannel[ChannelT]], GatewayConfig], list[Problem]] = no_problems
    # Registers `flowbiz simulate <kind>` (the package's cli.py, imported when called).
    simulator: Callable[[Subcommands], None] | None = None
    # The package's scene in `flowbiz demo` (its demo.py, imported when called).
    demo_scene: Callable[[], Scene] | None = None

    @property
    def kind(self) -> str:
        return self.channel.value


@dataclass(frozen=True, slots=True)
class Claim:
    """Something one channel block must own alone (a Slack team, a LINE bot, a number)."""

    field: str  # the key under the block that holds it ("" for the block itself)
    key: Hashable  # what two blocks must not share
    what: str  # how a person recognises it: "Slack workspace T0123"


def claimed_twice(
    channels: Sequence[PlacedChannel[ChannelT]],
    claims: Callable[[PlacedChannel[ChannelT]], Iterable[Claim]],
) -> list[Problem]:
    """One problem per block claiming what an earlier block already claims, naming both.

    A block repeating its own claim is not a conflict: the two would route the same way.
    """
    owners: dict[Hashable, PlacedChannel[ChannelT]] = {}
    problems: list[Problem] = []
    for placed in channels:
        for claim in claims(placed):
            owner = owners.setdefault(claim.key, placed)
            if owner is placed:
                continue
            where = f"{placed.where}.{claim.field}" if claim.field else placed.where
            message = f"{claim.what} is already configured at {owner.label}"
            problems.append((where, f"{message}; it must belong to one channel block"))
    return problems


if TYPE_CHECKING:

    def _seen_by_the_configuration(spec: ConnectorSpec[Any]) -> ChannelKind:
        # The kernel reads a spec through its own protocol; this proves every spec fits it.
        return spec
