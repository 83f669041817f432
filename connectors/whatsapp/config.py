"""The ``whatsapp`` channel block: a tenant's Twilio account, its sender and its templates.

Guarantees: a channel names a sender (a WhatsApp number or a Messaging Service) in the forms
Twilio accepts, and :meth:`WhatsAppChannelConfig.serves` tells which channel a reply goes
out through.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, model_validator

from gateway.channel_config import given_in_schema
from gateway.config import ChannelConfig, Secret
from gateway.models import WhatsAppReplyContext

__all__ = ["ADDRESS", "WhatsAppChannelConfig", "WhatsAppTemplate"]

# A WhatsApp address as Twilio writes it: whatsapp:+<E.164 number>.
ADDRESS = re.compile(r"^whatsapp:\+[1-9][0-9]{6,14}$")


class WhatsAppTemplate(BaseModel):
    """An approved Content template, sent when the 24-hour window is closed.

    ``variables`` maps the template's placeholders ("1", "2", …) to text in which
    ``$profile_name``, ``$persona``, ``$display_name``, ``$tenant`` and ``$text`` (the reply
    the persona wanted to send) are filled in.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    content_sid: str = Field(
        pattern=r"^HX[0-9a-fA-F]{32}$", description="The approved Content template's SID."
    )
    variables: dict[str, str] = Field(
        default_factory=dict,
        description="The text for each of the template's placeholders (`1`, `2`, …).",
    )


class WhatsAppChannelConfig(ChannelConfig):
    """A tenant's Twilio account and WhatsApp sender (docs/connectors/whatsapp.md)."""

    # What ``_needs_sender`` requires, told to the JSON Schema too.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [given_in_schema("from_number"), given_in_schema("messaging_service_sid")]
        }
    )

    kind: Literal["whatsapp"] = "whatsapp"
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$", description="The Twilio account.")
    auth_token: Secret = Field(
        description="Signs Twilio's webhooks and authenticates the API calls."
    )
    from_number: str | None = Field(
        default=None,
        pattern=ADDRESS.pattern,
        description="The sender, `whatsapp:+<E.164 number>`; this or messaging_service_sid.",
    )
    messaging_service_sid: str | None = Field(
        default=None,
        pattern=r"^MG[0-9a-fA-F]{32}$",
        description="A Messaging Service as the sender; with both, replies go through it.",
    )
    public_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$",
        description="The `scheme://host[:port][/prefix]` Twilio calls (the webhook is this + "
        "`/whatsapp/webhook`); falls back to `http.public_base_url`.",
    )
    trusted_proxies: tuple[IPvAnyNetwork, ...] = Field(
        default=(),
        description="Only without public_base_url: proxies whose X-Forwarded-Proto/-Host/-Port "
        "are believed when checking signatures.",
    )
    status_callback: bool = Field(
        default=True,
        description="Ask Twilio for delivery status callbacks. On by default, and then a "
        "public URL (public_base_url or `http.public_base_url`) is required: `flowbiz check` "
        "refuses the block without one. Set false where there is none.",
    )
    templates: dict[str, WhatsAppTemplate] = Field(
        default_factory=dict,
        description="By persona: the approved template sent when the 24-hour window is closed.",
    )
    window_hours: float = Field(default=24, gt=0, description="WhatsApp's customer-service window.")
    max_sends_per_second: float | None = Field(
        default=None, gt=0, description="Optional pacing per sender (Twilio queues by itself)."
    )

    @model_validator(mode="after")
    def _needs_sender(self) -> WhatsAppChannelConfig:
        if self.from_number is None and self.messaging_service_sid is None:
            raise ValueError("give from_number (whatsapp:+…) or messaging_service_sid")
        return self

    def serves(self, reply_context: object) -> bool:
        """A message to this number (or through this Messaging Service)."""
        if not isinstance(reply_context, WhatsAppReplyContext):
            return False
        if self.from_number is not None and reply_context.to_address == self.from_number:
            return True
        sid = reply_context.messaging_service_sid
        return sid is not None and sid == self.messaging_service_sid
