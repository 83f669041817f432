"""A LINE channel block of ``gateway.yaml``: one bot (one Official Account) of a tenant."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.config import ChannelConfig, Secret
from gateway.models import LineReplyContext

__all__ = ["REPLY_TOKEN_LIFETIME_SECONDS", "LineChannelConfig"]

# LINE: "use the reply token within one minute of receiving the webhook".
REPLY_TOKEN_LIFETIME_SECONDS = 60.0


class LineChannelConfig(ChannelConfig):
    """One LINE channel (one bot) of a tenant; a tenant may have several."""

    kind: Literal["line"] = "line"
    destination: str = Field(
        pattern=r"^U[0-9a-f]{32}$",
        description="The bot's user id (LINE console → Basic settings).",
    )
    channel_secret: Secret = Field(description="Verifies LINE's webhook signatures.")
    channel_access_token: Secret = Field(description="The long-lived channel access token.")
    reply_token_margin_seconds: float = Field(
        default=10.0,
        ge=0,
        lt=REPLY_TOKEN_LIFETIME_SECONDS,
        description="Use a reply token only while younger than its 60 s lifetime minus this; "
        "later replies are pushes.",
    )
    data_api_base_url: str = Field(
        default="https://api-data.line.me",
        pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$",
        description="Where the files people send are fetched from (LINE's content API host, "
        "`api-data.line.me`, apart from the Messaging API's); the emulator's URL in tests.",
    )
    loading_indicator: bool = Field(
        default=True,
        description="Show LINE's loading animation in one-to-one chats while the agent "
        "answers (the persona's `typing` turns it off too).",
    )
    loading_seconds: int = Field(
        default=20,
        ge=5,
        le=60,
        multiple_of=5,
        description="How long the animation runs at most.",
    )
    fetch_profiles: bool = Field(
        default=True,
        description="Look up display names (a friend's profile, a group or room member's "
        "profile), cached in the store for `pipeline.contact_name_ttl_seconds`.",
    )
    profile_timeout_seconds: float = Field(
        default=1.0, gt=0, le=10, description="A slow profile look-up is given up after this."
    )
    # Below the dispatcher's delivery timeout so the connector classifies timeouts itself.
    request_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=25,
        description="Per Messaging API call; below `pipeline.delivery_timeout_seconds`.",
    )
    sends_per_second: float | None = Field(
        default=None, gt=0, description="Optional local pacing of sends."
    )

    def serves(self, reply_context: object) -> bool:
        """A message to this bot (its destination)."""
        return (
            isinstance(reply_context, LineReplyContext)
            and reply_context.destination == self.destination
        )
