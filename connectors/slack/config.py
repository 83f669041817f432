"""The configuration of one Slack workspace (a channel block of ``kind: slack``), or of a
Slack app that workspaces install through "Add to Slack" (``install:``).

Guarantees: a block names its workspace (``team_id``, or ``enterprise_id`` for an org-wide
install) with its bot token, or has an ``install`` section instead (then the workspaces and
their tokens come from the OAuth installs, :mod:`connectors.slack.install`); it has a way
in (a signing secret for the HTTP routes, or an app token for Socket Mode), and bounds
every size and timeout it sets. Nothing here opens a connection.
"""

from __future__ import annotations

from typing import Literal

from cryptography.fernet import Fernet
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.config import ChannelConfig, Secret
from gateway.models import SlackReplyContext

__all__ = [
    "BOT_SCOPES",
    "DEFAULT_MAX_MESSAGE_CHARS",
    "SLACK_MAX_TEXT",
    "SlackChannelConfig",
    "SlackInstallConfig",
]

SLACK_MAX_TEXT = 40_000  # chat.postMessage truncates (or refuses, msg_too_long) above this
DEFAULT_MAX_MESSAGE_CHARS = 4_000
# What the connector calls and reads: posting, DMs and channel messages, mentions, slash
# commands, and display names for the desk (docs/connectors/slack.md, "Slack app setup").
BOT_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "chat:write",
    "commands",
    "groups:history",
    "im:history",
    "mpim:history",
    "users:read",
)


class SlackInstallConfig(BaseModel):
    """ "Add to Slack" for a distributed app: any workspace that installs it is this tenant's.

    ``GET /slack/install/{tenant}`` sends the installer to Slack's consent page with a
    single-use state; Slack sends them back to ``redirect_url`` (``/slack/oauth_redirect``
    under the public URL), where the code is exchanged with ``oauth.v2.access`` and the
    installation kept in the store, its tokens encrypted with ``token_keys`` (Fernet keys,
    newest first: older ones still decrypt, so a key can be rotated).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str = Field(pattern=r"^[0-9]+\.[0-9]+$")
    client_secret: Secret
    token_keys: tuple[Secret, ...] = Field(min_length=1)
    scopes: tuple[str, ...] = BOT_SCOPES
    redirect_url: str = Field(pattern=r"^https?://[^\s?#]+/slack/oauth_redirect$")
    authorize_url: str = "https://slack.com/oauth/v2/authorize"
    # Where the installer lands afterwards (a page of the tenant's own); without it the
    # gateway answers with a short page of its own.
    success_url: str | None = Field(default=None, pattern=r"^https://[^\s]+$")
    state_ttl_seconds: float = Field(default=600, gt=0, le=3600)
    # A rotating token is refreshed when it has less than this left.
    refresh_before_seconds: float = Field(default=300, gt=0)
    # How long a process trusts what it read of an installation before reading it again
    # (an uninstall seen by another process takes effect here within this).
    cache_seconds: float = Field(default=30, gt=0, le=600)

    @field_validator("token_keys")
    @classmethod
    def _fernet_keys(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for key in keys:
            try:
                Fernet(key.get_secret_value().encode())
            except ValueError:
                raise ValueError(
                    "each token key is a Fernet key: 32 url-safe base64-encoded bytes "
                    "(python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())')"
                ) from None
        return keys


class SlackChannelConfig(ChannelConfig):
    """One Slack workspace (or Enterprise Grid org) of a tenant, with its bot token."""

    kind: Literal["slack"] = "slack"
    team_id: str | None = Field(default=None, pattern=r"^[A-Z0-9]+$")
    enterprise_id: str | None = Field(default=None, pattern=r"^[A-Z0-9]+$")
    signing_secret: Secret | None = None  # required for the HTTP routes
    bot_token: Secret | None = None  # xoxb-…; with ``install``, each installation's own
    install: SlackInstallConfig | None = None
    app_token: Secret | None = None  # xapp-…, for Socket Mode
    socket_mode: bool = False
    # In channels, answer in a thread under the message (DMs stay flat unless the user threads).
    reply_in_thread: bool = True
    # In channels: answer only when mentioned (and in threads already answered), or everything.
    channel_messages: Literal["mentions", "all"] = "mentions"
    command_response: Literal["ephemeral", "in_channel"] = "ephemeral"
    command_reply_via: Literal["response_url", "web_api"] = "response_url"
    handle_edits: bool = False  # treat message_changed as a new message
    bot_user_id: str | None = None  # learned with auth.test at start when not given
    bot_id: str | None = None
    max_message_chars: int = Field(default=DEFAULT_MAX_MESSAGE_CHARS, ge=200, le=SLACK_MAX_TEXT)
    response_url_prefixes: tuple[str, ...] = ("https://hooks.slack.com/",)
    request_timeout_seconds: float = Field(default=10, gt=0)
    messages_per_second: float = Field(default=1.0, gt=0)  # per Slack channel, as Slack asks
    burst: float = Field(default=3.0, ge=1)
    socket_ping_interval_seconds: float = Field(default=5, gt=0)
    # Look up the display name of a person writing in an operators' desk thread (users.info,
    # scope users:read) when the event does not carry it; the customer sees it as a signature.
    fetch_user_names: bool = True
    user_name_timeout_seconds: float = Field(default=1.5, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> SlackChannelConfig:
        if self.install is not None:
            if self.team_id or self.enterprise_id or self.bot_token:
                raise ValueError(
                    "with install, workspaces and tokens come from the installs: "
                    "leave out team_id, enterprise_id and bot_token"
                )
            if self.socket_mode or self.signing_secret is None:
                raise ValueError("install needs the HTTP routes: signing_secret, no socket_mode")
        elif self.team_id is None and self.enterprise_id is None:
            raise ValueError("give team_id (or enterprise_id for an org-wide install)")
        elif self.bot_token is None:
            raise ValueError("give bot_token (xoxb-…), or install for Add to Slack")
        if self.socket_mode and self.app_token is None:
            raise ValueError("socket_mode needs app_token (an xapp- app-level token)")
        if not self.socket_mode and self.signing_secret is None:
            raise ValueError("signing_secret is needed to verify Slack's HTTP requests")
        return self

    def serves(self, reply_context: object) -> bool:
        """A message from this workspace (or, org-wide, this Enterprise Grid org; with
        ``install``, any workspace: the installation decides)."""
        if not isinstance(reply_context, SlackReplyContext):
            return False
        if self.install is not None:
            return True
        if self.team_id is not None:
            return reply_context.team_id == self.team_id
        return reply_context.enterprise_id == self.enterprise_id

    @property
    def web_api_base_url(self) -> str:
        return self.api_base_url or "https://slack.com/api/"
