"""The WhatsApp channels of a configuration, and how a request or a stored event finds its own.

Guarantees:

- A sender number or Messaging Service SID belongs to one channel (a configuration that
  gives one twice is refused by ``flowbiz check``: connectors/whatsapp/spec.py).
- An inbound request belongs to the channel of its ``To`` number (else its
  ``MessagingServiceSid``), and only when a present ``AccountSid`` is that channel's.
- A stored event finds its channel again by (tenant, channel block name), as the edge
  recorded them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors.whatsapp.config import WhatsAppChannelConfig
from gateway.errors import UnknownTenantError

if TYPE_CHECKING:
    from gateway.config import ChannelConfig, TenantConfig

__all__ = ["ChannelTable", "WhatsAppChannel"]


@dataclass(slots=True)
class WhatsAppChannel:
    tenant: str
    name: str  # the channel block's name (ChannelConfig.name), read per request
    config: WhatsAppChannelConfig
    token: bytes  # the Auth Token: the key of X-Twilio-Signature
    public_base_url: str | None
    client: Any = None  # twilio.rest.Client, built inside the running loop


class ChannelTable:
    """Every WhatsApp channel block of the configuration, indexed the ways requests need."""

    def __init__(
        self,
        channels: Sequence[tuple[TenantConfig, ChannelConfig]],
        *,
        public_base_url: str | None,
    ) -> None:
        self.channels: list[WhatsAppChannel] = []
        self.by_sender: dict[str, WhatsAppChannel] = {}
        self.by_service: dict[str, WhatsAppChannel] = {}
        self._by_name: dict[tuple[str, str], WhatsAppChannel] = {}
        for tenant, config in channels:
            if not isinstance(config, WhatsAppChannelConfig):
                continue
            channel = WhatsAppChannel(
                tenant=tenant.id,
                name=config.name,
                config=config,
                token=config.auth_token.get_secret_value().encode(),
                public_base_url=config.public_base_url or public_base_url,
            )
            self.channels.append(channel)
            self._by_name.setdefault((tenant.id, config.name), channel)
            for table, key in (
                (self.by_sender, config.from_number),
                (self.by_service, config.messaging_service_sid),
            ):
                if key is not None:  # unique: connectors/whatsapp/spec.py checks
                    table[key] = channel

    def for_request(self, fields: Mapping[str, str], *, ours: str) -> WhatsAppChannel:
        """The channel owning a request: our address (``ours``) or the Messaging Service."""
        channel = self.by_sender.get(fields.get(ours, ""))
        if channel is None:
            channel = self.by_service.get(fields.get("MessagingServiceSid", ""))
        if channel is None:
            raise UnknownTenantError(f"no WhatsApp channel for this {ours} / MessagingServiceSid")
        account = fields.get("AccountSid")
        if account is not None and account != channel.config.account_sid:
            raise UnknownTenantError("AccountSid does not match the channel's account")
        return channel

    def named(self, tenant: str, name: str) -> WhatsAppChannel | None:
        """The channel block ``name`` of ``tenant``, if it is configured."""
        return self._by_name.get((tenant, name))
