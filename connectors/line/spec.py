"""The LINE package's ``SPEC``, and its check: each bot (its ``destination``, the bot's user
id, which every webhook body names) belongs to one channel block, since the shared webhook
URL finds the tenant by it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.line.config import LineChannelConfig
from connectors.spec import Claim, ConnectorSpec, Problem, Subcommands, claimed_twice
from gateway.config import GatewayConfig, PlacedChannel, TenantConfig
from gateway.models import Channel

if TYPE_CHECKING:
    from connectors.base import Connector, ConnectorContext
    from gateway.demo_scene import Scene

__all__ = ["SPEC", "check"]


def check(
    channels: Sequence[PlacedChannel[LineChannelConfig]], config: GatewayConfig
) -> list[Problem]:
    return claimed_twice(channels, _bot)


def _bot(placed: PlacedChannel[LineChannelConfig]) -> list[Claim]:
    destination = placed.channel.destination
    return [Claim("destination", destination, f"LINE destination {destination}")]


def _simulator(subcommands: Subcommands) -> None:
    from connectors.line.cli import add_simulator

    add_simulator(subcommands)


def _demo_scene() -> Scene:
    from connectors.line.demo import Scene

    return Scene()


def _connector(
    *, context: ConnectorContext, channels: Sequence[tuple[TenantConfig, LineChannelConfig]]
) -> Connector:
    # Imported when a gateway serves the kind: `flowbiz check`, `init` and `--help` never
    # load the platform's SDK.
    from connectors.line.connector import LineConnector

    return LineConnector(context=context, channels=channels)


SPEC: ConnectorSpec[LineChannelConfig] = ConnectorSpec(
    channel=Channel.LINE,
    config_model=LineChannelConfig,
    factory=_connector,
    check=check,
    simulator=_simulator,
    demo_scene=_demo_scene,
)
