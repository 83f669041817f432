"""The HTTP API package's ``SPEC``, and its check: a tenant has one HTTP channel (its routes
are ``/v1/channels/http/{tenant}/…``), and a signature's replay window never outlives the
dedupe claim that folds a replayed message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.http_api.connector import HttpApiConnector, HttpChannelConfig
from connectors.spec import Claim, ConnectorSpec, Problem, Subcommands, claimed_twice
from gateway.config import GatewayConfig, PlacedChannel
from gateway.models import Channel

if TYPE_CHECKING:
    from gateway.demo_scene import Scene

__all__ = ["SPEC", "check"]

_WINDOW_PROBLEM = "must not exceed store.dedupe_ttl_seconds (replays are folded by that claim)"


def check(
    channels: Sequence[PlacedChannel[HttpChannelConfig]], config: GatewayConfig
) -> list[Problem]:
    dedupe_ttl = config.store.dedupe_ttl_seconds
    problems = [
        (f"{placed.where}.replay_window_seconds", _WINDOW_PROBLEM)
        for placed in channels
        if placed.channel.replay_window_seconds > dedupe_ttl
    ]
    return problems + claimed_twice(channels, _routes)


def _routes(placed: PlacedChannel[HttpChannelConfig]) -> list[Claim]:
    what = f"the HTTP channel of tenant {placed.tenant!r} (/v1/channels/http/{placed.tenant}/…)"
    return [Claim("", placed.tenant, what)]


def _simulator(subcommands: Subcommands) -> None:
    from connectors.http_api.cli import add_simulator

    add_simulator(subcommands)


def _demo_scene() -> Scene:
    from connectors.http_api.demo import Scene

    return Scene()


SPEC: ConnectorSpec[HttpChannelConfig] = ConnectorSpec(
    channel=Channel.HTTP,
    config_model=HttpChannelConfig,
    factory=HttpApiConnector,
    check=check,
    simulator=_simulator,
    demo_scene=_demo_scene,
)
