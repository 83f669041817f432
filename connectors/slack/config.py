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

from gateway.channel_config import given_in_schema
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
# commands, and people's names and confirmed emails (docs/connectors/slack.md, "Slack app
# setup").
BOT_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "chat:write",
    "commands",
    "files:read",
    "files:write",
    "groups:history",
    "im:history",
    "mpim:history",
    "users:read",
    "users:read.email",
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

    client_id: str = Field(
        pattern=r"^[0-9]+\.[0-9]+$",
        description="The app's Client ID (Basic Information → App Credentials).",
    )
    client_secret: Secret = Field(description="The app's Client Secret, as `env:NAME`.")
    token_keys: tuple[Secret, ...] = Field(
        min_length=1,
        description="Fernet keys sealing the installations in the store, newest first (older "
        "ones still open what they sealed, so a key can be rotated).",
    )
    scopes: tuple[str, ...] = Field(
        default=BOT_SCOPES, description="Bot scopes asked for; default: what the connector uses."
    )
    redirect_url: str = Field(
        pattern=r"^https?://[^\s?#]+/slack/oauth_redirect$",
        description="`/slack/oauth_redirect` under the gateway's public URL, as entered in the "
        "app's OAuth & Permissions → Redirect URLs.",
    )
    authorize_url: str = Field(
        default="https://slack.com/oauth/v2/authorize",
        description="Slack's consent page (the emulator's in tests and the demo).",
    )
    success_url: str | None = Field(
        default=None,
        pattern=r"^https://[^\s]+$",
        description="Where the installer lands after installing; null: a short page of the "
        "gateway's own.",
    )
    state_ttl_seconds: float = Field(
        default=600, gt=0, le=3600, description="How long an install link may be finished."
    )
    refresh_before_seconds: float = Field(
        default=300, gt=0, description="A rotating token is refreshed with less than this left."
    )
    cache_seconds: float = Field(
        default=30,
        gt=0,
        le=600,
        description="How long a process trusts what it read of an installation (an uninstall "
        "seen by another process takes effect within this).",
    )

    @field_validator("token_keys")
    @classmethod
    def _fernet_keys(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for key in keys:
            if not key.get_secret_value():
                continue  # an unset variable, reported as such by `flowbiz check`
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

    # What ``_consistent`` requires, told to the JSON Schema too (docs/gateway.schema.json).
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {"anyOf": [given_in_schema("team_id"), given_in_schema("enterprise_id")]},
                {
                    "if": {
                        "properties": {"socket_mode": {"const": True}},
                        "required": ["socket_mode"],
                    },
                    "then": given_in_schema("app_token"),
                    "else": given_in_schema("signing_secret"),
                },
            ]
        }
    )

    kind: Literal["slack"] = "slack"
    team_id: str | None = Field(
        default=None,
        pattern=r"^[A-Z0-9]+$",
        description="The workspace (`auth.test` → team_id). Required, unless enterprise_id "
        "names an org-wide install or `install` is given.",
    )
    enterprise_id: str | None = Field(
        default=None,
        pattern=r"^[A-Z0-9]+$",
        description="The Enterprise Grid org of an org-wide install (then team_id is optional).",
    )
    signing_secret: Secret | None = Field(
        default=None,
        description="Verifies Slack's HTTP requests; required unless socket_mode.",
    )
    bot_token: Secret | None = Field(
        default=None,
        description="The bot token, `xoxb-…`; required unless `install` (then each "
        "installation has its own).",
    )
    install: SlackInstallConfig | None = Field(
        default=None,
        description='"Add to Slack" for a distributed app: any workspace installing it is '
        "this tenant's (docs/connectors/slack.md). Without team_id, enterprise_id and "
        "bot_token.",
    )
    app_token: Secret | None = Field(
        default=None, description="The app-level token, `xapp-…`; required with socket_mode."
    )
    socket_mode: bool = Field(
        default=False,
        description="Receive events over Socket Mode (no public URL needed) instead of HTTP.",
    )
    reply_in_thread: bool = Field(
        default=True,
        description="In channels, answer in a thread under the message (DMs stay flat unless "
        "the user threads).",
    )
    channel_messages: Literal["mentions", "all"] = Field(
        default="mentions",
        description="In channels: answer only when mentioned (and in threads already "
        "answered), or everything.",
    )
    command_response: Literal["ephemeral", "in_channel"] = Field(
        default="ephemeral", description="How slash commands are answered."
    )
    command_reply_via: Literal["response_url", "web_api"] = Field(
        default="response_url", description="Where slash-command answers are posted."
    )
    handle_edits: bool = Field(
        default=False, description="An edited message (`message_changed`) is answered anew."
    )
    bot_user_id: str | None = Field(
        default=None, description="The bot's user id; learned with `auth.test` when not given."
    )
    bot_id: str | None = Field(
        default=None, description="The bot's id; learned with `auth.test` when not given."
    )
    max_message_chars: int = Field(
        default=DEFAULT_MAX_MESSAGE_CHARS,
        ge=200,
        le=SLACK_MAX_TEXT,
        description="A longer reply is split into several posts.",
    )
    response_url_prefixes: tuple[str, ...] = Field(
        default=("https://hooks.slack.com/",),
        description="The only response URLs posted to.",
    )
    request_timeout_seconds: float = Field(
        default=10,
        gt=0,
        description="Per Web API call; keep below `pipeline.delivery_timeout_seconds`.",
    )
    messages_per_second: float = Field(
        default=1.0, gt=0, description="Posts per Slack channel per second, as Slack asks."
    )
    burst: float = Field(default=3.0, ge=1, description="Posts allowed at once before pacing.")
    socket_ping_interval_seconds: float = Field(
        default=5, gt=0, description="How often the Socket Mode connection is pinged."
    )
    fetch_user_names: bool = Field(
        default=True,
        description="Look up each writer's display name and email (`users.info`, scopes "
        "users:read and users:read.email), cached in the store for "
        "`pipeline.contact_name_ttl_seconds`: agents greet people by name, a desk's customer "
        "sees the operator's as a signature, and a verified email links contacts.",
    )
    files_base_url: str = Field(
        default="https://files.slack.com",
        pattern=r"^https?://[^/\s?#@]+$",
        description="Where Slack keeps files (`scheme://host`): an inbound file is fetched, "
        "with the bot token, only from here, and uploads are posted only here; a file said to "
        "be elsewhere is refused (`host_not_allowed`).",
    )
    typing_status: str = Field(
        default="is typing…",
        min_length=1,
        max_length=50,
        description="The status shown in a Slack assistant thread while the agent writes "
        "(`assistant.threads.setStatus`).",
    )
    user_name_timeout_seconds: float = Field(
        default=1.5,
        gt=0,
        description="That look-up is given up after this (the message goes on with the id).",
    )

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
