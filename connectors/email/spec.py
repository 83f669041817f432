"""The email package's ``SPEC``, and its check: each address belongs to one channel block,
since a recipient address is what finds the tenant, the persona and the DKIM key; so does each
IMAP mailbox, which would otherwise be polled (and its mail answered) twice; and an SMTP
listener's STARTTLS settings are ones it can serve (a certificate that loads, one per
listening address, and none required without one), where the listener would otherwise fail
to start or silently not offer what the file asks for."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.email.config import EmailChannelConfig, SmtpListenerConfig
from connectors.spec import Claim, ConnectorSpec, Problem, Subcommands, claimed_twice
from gateway.config import GatewayConfig, PlacedChannel, TenantConfig
from gateway.models import Channel

if TYPE_CHECKING:
    from connectors.base import Connector, ConnectorContext
    from gateway.demo_scene import Scene

__all__ = ["SPEC", "check"]


def check(
    channels: Sequence[PlacedChannel[EmailChannelConfig]], config: GatewayConfig
) -> list[Problem]:
    return claimed_twice(channels, _addresses) + _listener_problems(channels)


def _addresses(placed: PlacedChannel[EmailChannelConfig]) -> list[Claim]:
    claims = [
        Claim(f"addresses.{n}.address", ("address", entry.address), f"address {entry.address}")
        for n, entry in enumerate(placed.channel.addresses)
    ]
    imap = placed.channel.imap
    if imap is not None:  # two pollers of one mailbox would each ingest (and move) its mail
        port = imap.port or (993 if imap.security == "tls" else 143)
        key = ("imap", imap.host.lower(), port, imap.username, imap.mailbox)
        what = f"IMAP mailbox {imap.mailbox} of {imap.username} on {imap.host}:{port}"
        claims.append(Claim("imap", key, what))
    return claims


def _listener_problems(channels: Sequence[PlacedChannel[EmailChannelConfig]]) -> list[Problem]:
    problems: list[Problem] = []
    tls_at: dict[tuple[str, int], tuple[PlacedChannel[EmailChannelConfig], SmtpListenerConfig]] = {}
    for placed in channels:
        listener = placed.channel.listener
        if listener is None:
            continue
        where = f"{placed.where}.listener"
        if listener.require_starttls and listener.tls_cert_file is None:
            problems.append((f"{where}.require_starttls", "STARTTLS needs tls_cert_file"))
        if listener.tls_cert_file is not None:
            reason = _unloadable(listener)
            if reason is not None:
                problems.append((f"{where}.tls_cert_file", reason))
        # One SMTP server listens on each address, with the first block's certificate.
        first = tls_at.setdefault((listener.host, listener.port), (placed, listener))
        if first[0] is not placed and _tls(first[1]) != _tls(listener):
            problems.append(
                (
                    f"{where}.tls_cert_file",
                    f"{listener.host}:{listener.port} is also the listener of {first[0].label} "
                    "with other STARTTLS settings; one listener serves both",
                )
            )
    return problems


def _tls(listener: SmtpListenerConfig) -> tuple[object, ...]:
    return (listener.tls_cert_file, listener.tls_key_file, listener.require_starttls)


def _unloadable(listener: SmtpListenerConfig) -> str | None:
    """Why the listener's certificate and key cannot serve STARTTLS, or None when they can."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(listener.tls_cert_file or "", listener.tls_key_file)
    except ssl.SSLError as exc:  # never the file's content: only OpenSSL's reason code
        return f"not a certificate and key STARTTLS can use ({exc.reason or 'unreadable'})"
    except OSError as exc:
        return f"cannot read the certificate or key: {exc.strerror or type(exc).__name__}"
    return None


def _simulator(subcommands: Subcommands) -> None:
    from connectors.email.cli import add_simulator

    add_simulator(subcommands)


def _demo_scene() -> Scene:
    from connectors.email.demo import Scene

    return Scene()


def _connector(
    *, context: ConnectorContext, channels: Sequence[tuple[TenantConfig, EmailChannelConfig]]
) -> Connector:
    # Imported when a gateway serves the kind: `flowbiz check`, `init` and `--help` never
    # load the platform's SDK.
    from connectors.email.connector import EmailConnector

    return EmailConnector(context=context, channels=channels)


SPEC: ConnectorSpec[EmailChannelConfig] = ConnectorSpec(
    channel=Channel.EMAIL,
    config_model=EmailChannelConfig,
    factory=_connector,
    check=check,
    simulator=_simulator,
    demo_scene=_demo_scene,
)
