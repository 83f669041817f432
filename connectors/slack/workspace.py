"""The workspaces a Slack connector serves, and which one a payload belongs to.

Guarantees: a payload is given to the workspace whose ``team_id`` it names (or, for an
org-wide install, whose Enterprise Grid org it names), and only among the workspaces whose
secret or socket it came by; a team no block configures is an ``UnknownTenantError`` (the
connector then asks the installs of the app blocks among them, :mod:`connectors.slack.install`).
A block with ``install`` is an app, not a workspace: it matches no payload by itself; each
of its installations is a :class:`Workspace` of its own, with the installation's token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from slack_sdk.web.async_client import AsyncWebClient

from connectors.slack.config import SlackChannelConfig
from gateway.errors import UnknownTenantError

__all__ = ["InstalledToken", "Workspace", "select_workspace"]


@dataclass(frozen=True, slots=True)
class InstalledToken:
    """What an installation gives a workspace: where it is, and its bot token."""

    team_id: str | None
    enterprise_id: str | None
    org_wide: bool
    token: str
    expires_at: int | None = None  # a rotating token's expiry (epoch seconds)


@dataclass(slots=True)
class Workspace:
    tenant: str
    config: SlackChannelConfig
    bot_user_id: str | None
    bot_id: str | None
    client: AsyncWebClient | None = None
    installed: InstalledToken | None = None

    @property
    def label(self) -> str:
        where = "" if self.installed is None else f"@{self.team_id or self.enterprise_id}"
        return f"{self.tenant}/{self.config.name}{where}"

    @property
    def is_app(self) -> bool:
        """An "Add to Slack" app block: its workspaces are its installations."""
        return self.config.install is not None and self.installed is None

    @property
    def team_id(self) -> str | None:
        if self.installed is not None:
            return None if self.installed.org_wide else self.installed.team_id
        return self.config.team_id

    @property
    def enterprise_id(self) -> str | None:
        return self.config.enterprise_id if self.installed is None else self.installed.enterprise_id

    @property
    def token(self) -> str:
        if self.installed is not None:
            return self.installed.token
        assert self.config.bot_token is not None  # the config's check: a workspace has one
        return self.config.bot_token.get_secret_value()

    def matches(self, team_id: str | None, enterprise_id: str | None) -> int:
        """0 = not this workspace; 2 = the same team; 1 = an org-wide install of the org."""
        if self.is_app:
            return 0
        own_org, own_team = self.enterprise_id, self.team_id
        if own_org is not None and enterprise_id not in (None, own_org):
            return 0
        if own_team is not None:
            return 2 if own_team == team_id else 0
        return 1 if own_org == enterprise_id else 0


def select_workspace(
    candidates: Sequence[Workspace], team_id: str | None, enterprise_id: str | None
) -> Workspace:
    best: Workspace | None = None
    score = 0
    for ws in candidates:
        found = ws.matches(team_id, enterprise_id)
        if found > score:
            best, score = ws, found
    if best is None:
        raise UnknownTenantError("no Slack channel is configured for this workspace")
    return best
