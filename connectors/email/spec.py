"""The email package's ``SPEC``, and its check: each address belongs to one channel block,
since a recipient address is what finds the tenant, the persona and the DKIM key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.email.config import EmailChannelConfig
from connectors.email.connector import EmailConnector
from connectors.spec import Claim, ConnectorSpec, Problem, Subcommands, claimed_twice
from gateway.config import GatewayConfig, PlacedChannel
from gateway.models import Channel

if TYPE_CHECKING:
    from gateway.demo_scene import Scene

__all__ = ["SPEC", "check"]


def check(
    channels: Sequence[PlacedChannel[EmailChannelConfig]], config: GatewayConfig
) -> list[Problem]:
    return claimed_twice(channels, _addresses)


def _addresses(placed: PlacedChannel[EmailChannelConfig]) -> list[Claim]:
    return [
        Claim(f"addresses.{n}.address", entry.address, f"address {entry.address}")
        for n, entry in enumerate(placed.channel.addresses)
    ]


def _simulator(subcommands: Subcommands) -> None:
    from connectors.email.cli import add_simulator

    add_simulator(subcommands)


def _demo_scene() -> Scene:
    from connectors.email.demo import Scene

    return Scene()


SPEC: ConnectorSpec[EmailChannelConfig] = ConnectorSpec(
    channel=Channel.EMAIL,
    config_model=EmailChannelConfig,
    factory=EmailConnector,
    check=check,
    simulator=_simulator,
    demo_scene=_demo_scene,
)
