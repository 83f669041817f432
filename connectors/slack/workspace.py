"""The workspaces a Slack connector serves, and which one a payload belongs to.

Guarantees: a payload is given to the workspace whose ``team_id`` it names (or, for an
org-wide install, whose Enterprise Grid org it names), and only among the workspaces whose
secret or socket it came by; a team no block configures is an ``UnknownTenantError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from slack_sdk.web.async_client import AsyncWebClient

from connectors.slack.config import SlackChannelConfig
from gateway.errors import UnknownTenantError

__all__ = ["Workspace", "select_workspace"]


@dataclass(slots=True)
class Workspace:
    tenant: str
    config: SlackChannelConfig
    bot_user_id: str | None
    bot_id: str | None
    client: AsyncWebClient | None = None

    @property
    def label(self) -> str:
        return f"{self.tenant}/{self.config.name}"

    def matches(self, team_id: str | None, enterprise_id: str | None) -> int:
        """0 = not this workspace; 2 = the same team; 1 = an org-wide install of the org."""
        cfg = self.config
        if cfg.enterprise_id is not None and enterprise_id not in (None, cfg.enterprise_id):
            return 0
        if cfg.team_id is not None:
            return 2 if cfg.team_id == team_id else 0
        return 1 if cfg.enterprise_id == enterprise_id else 0


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
