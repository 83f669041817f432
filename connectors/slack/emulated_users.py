"""The people of an emulated Slack workspace, as ``users.info`` describes them.

:class:`~connectors.slack.emulator.SlackEmulator` keeps them by user id; tests seed them
with ``add_user`` and ``set_user_email`` and count the look-ups with ``users_info_calls``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["slack_user", "users_info_calls"]


class _Call(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def args(self) -> dict[str, Any]: ...


def slack_user(
    user_id: str,
    team_id: str,
    *,
    display_name: str,
    real_name: str | None = None,
) -> dict[str, Any]:
    """A ``users.info`` user object (the profile's ``email`` and the user's
    ``is_email_confirmed`` are added by ``SlackEmulator.set_user_email``)."""
    profile: dict[str, Any] = {
        "display_name": display_name,
        "real_name": real_name or display_name,
        "display_name_normalized": display_name,
    }
    user: dict[str, Any] = {
        "id": user_id,
        "team_id": team_id,
        "name": display_name.lower(),
        "real_name": real_name or display_name,
        "is_bot": False,
        "deleted": False,
        "profile": profile,
    }
    return user


def users_info_calls(calls: Iterable[_Call], user_id: str | None = None) -> int:
    """How many ``users.info`` calls reached the emulator (for ``user_id``, if given)."""
    return sum(
        1
        for c in calls
        if c.method == "users.info" and (user_id is None or c.args.get("user") == user_id)
    )
