"""The Slack package's ``SPEC``, and its check: each workspace (or org-wide install of an
Enterprise Grid org), and each "Add to Slack" app, is configured once, since its events
carry nothing else to find the tenant by."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.slack.config import SlackChannelConfig
from connectors.spec import Claim, ConnectorSpec, Problem, Subcommands, claimed_twice
from gateway.config import GatewayConfig, PlacedChannel, TenantConfig
from gateway.models import Channel

if TYPE_CHECKING:
    from connectors.base import Connector, ConnectorContext
    from gateway.demo_scene import Scene

__all__ = ["SPEC", "check"]


def check(
    channels: Sequence[PlacedChannel[SlackChannelConfig]], config: GatewayConfig
) -> list[Problem]:
    return claimed_twice(channels, _workspace)


def _workspace(placed: PlacedChannel[SlackChannelConfig]) -> list[Claim]:
    channel = placed.channel
    if channel.install is not None:  # its installations say which workspaces are its
        app = channel.install.client_id
        return [Claim("install.client_id", ("app", app), f"the Slack app {app}")]
    if channel.team_id is not None:  # team ids are unique across orgs
        return [Claim("team_id", ("team", channel.team_id), f"Slack workspace {channel.team_id}")]
    what = f"the org-wide install of Slack org {channel.enterprise_id}"
    return [Claim("enterprise_id", ("org", channel.enterprise_id), what)]


def _simulator(subcommands: Subcommands) -> None:
    from connectors.slack.cli import add_simulator

    add_simulator(subcommands)


def _demo_scene() -> Scene:
    from connectors.slack.demo import Scene

    return Scene()


def _connector(
    *, context: ConnectorContext, channels: Sequence[tuple[TenantConfig, SlackChannelConfig]]
) -> Connector:
    # Imported when a gateway serves the kind: `flowbiz check`, `init` and `--help` never
    # load the platform's SDK.
    from connectors.slack.connector import SlackConnector

    return SlackConnector(context=context, channels=channels)


SPEC: ConnectorSpec[SlackChannelConfig] = ConnectorSpec(
    channel=Channel.SLACK,
    config_model=SlackChannelConfig,
    factory=_connector,
    check=check,
    simulator=_simulator,
    demo_scene=_demo_scene,
)
