"""The WhatsApp package's ``SPEC``, and its check: each sender (a WhatsApp number or a
Messaging Service, which Twilio's webhooks name) belongs to one channel block, and status
callbacks have a public URL to be sent to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.spec import Claim, ConnectorSpec, Problem, Subcommands, claimed_twice
from connectors.whatsapp.config import WhatsAppChannelConfig
from gateway.config import GatewayConfig, PlacedChannel, TenantConfig
from gateway.models import Channel

if TYPE_CHECKING:
    from connectors.base import Connector, ConnectorContext
    from gateway.demo_scene import Scene

__all__ = ["SPEC", "check"]


def check(
    channels: Sequence[PlacedChannel[WhatsAppChannelConfig]], config: GatewayConfig
) -> list[Problem]:
    problems = [
        (
            f"{placed.where}.status_callback",
            "status callbacks need public_base_url (the URL Twilio calls back)",
        )
        for placed in channels
        if placed.channel.status_callback
        and (placed.channel.public_base_url or config.http.public_base_url) is None
    ]
    return problems + claimed_twice(channels, _senders)


def _senders(placed: PlacedChannel[WhatsAppChannelConfig]) -> list[Claim]:
    channel = placed.channel
    claims = []
    if channel.from_number is not None:
        number = channel.from_number
        claims.append(Claim("from_number", ("number", number), f"WhatsApp sender {number}"))
    if channel.messaging_service_sid is not None:
        sid = channel.messaging_service_sid
        what = f"Messaging Service {sid}"
        claims.append(Claim("messaging_service_sid", ("service", sid), what))
    return claims


def _simulator(subcommands: Subcommands) -> None:
    from connectors.whatsapp.cli import add_simulator

    add_simulator(subcommands)


def _demo_scene() -> Scene:
    from connectors.whatsapp.demo import Scene

    return Scene()


def _connector(
    *, context: ConnectorContext, channels: Sequence[tuple[TenantConfig, WhatsAppChannelConfig]]
) -> Connector:
    # Imported when a gateway serves the kind: `flowbiz check`, `init` and `--help` never
    # load the platform's SDK.
    from connectors.whatsapp.connector import WhatsAppConnector

    return WhatsAppConnector(context=context, channels=channels)


SPEC: ConnectorSpec[WhatsAppChannelConfig] = ConnectorSpec(
    channel=Channel.WHATSAPP,
    config_model=WhatsAppChannelConfig,
    factory=_connector,
    check=check,
    simulator=_simulator,
    demo_scene=_demo_scene,
)
