"""Reading Slack's payloads: pure functions over the plain dicts Slack sends.

The edge and the parse both read events through these, so what the edge admits and what the
worker makes of it are decided by the same code. Nothing here trusts a payload to match
Slack's documentation: a field of the wrong type reads as absent, never as an exception.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from connectors.slack.config import SlackChannelConfig
from gateway.errors import PayloadError

__all__ = [
    "ACCEPTED_SUBTYPES",
    "EVENTS_API",
    "INTERACTIVE",
    "SLASH_COMMANDS",
    "Screened",
    "action_value",
    "addressed_by_fields",
    "authorized_bot_user",
    "clicked_button",
    "event_source",
    "form_digest",
    "form_fields",
    "in_dm",
    "interaction_source",
    "reply_thread",
    "screen",
    "string_field",
]

# What kind of payload a stored envelope holds (Socket Mode's names), in its context["type"].
EVENTS_API, SLASH_COMMANDS, INTERACTIVE = "events_api", "slash_commands", "interactive"
ACCEPTED_SUBTYPES = frozenset({None, "file_share", "thread_broadcast", "me_message"})


def string_field(data: Any, key: str) -> str | None:
    """``data[key]`` when it is a non-empty string; Slack payloads are not trusted to match docs."""
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def form_fields(body: bytes) -> dict[str, str]:
    """A form body's fields (the first value of each)."""
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError("body is not a form") from exc
    return {key: values[0] for key, values in parsed.items() if values}


def form_digest(fields: dict[str, str]) -> str:
    """A stable id for a form that carries none of its own (a command without trigger_id)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def event_source(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """(team_id, enterprise_id) of an ``event_callback``."""
    team_id, enterprise_id = string_field(body, "team_id"), string_field(body, "enterprise_id")
    auths = body.get("authorizations")
    if isinstance(auths, list) and auths and isinstance(auths[0], dict):
        enterprise_id = enterprise_id or string_field(auths[0], "enterprise_id")
        team_id = team_id or string_field(auths[0], "team_id")
    return team_id, enterprise_id


def interaction_source(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """(team_id, enterprise_id) of an interactivity payload."""
    team, user, enterprise = payload.get("team"), payload.get("user"), payload.get("enterprise")
    team_id = string_field(team, "id") or string_field(user, "team_id")
    return team_id, string_field(enterprise, "id")


def authorized_bot_user(body: dict[str, Any]) -> str | None:
    """The bot's own user id, as an ``event_callback``'s authorizations name it."""
    auths = body.get("authorizations")
    if isinstance(auths, list):
        for auth in auths:
            if isinstance(auth, dict) and auth.get("is_bot") is True:
                return string_field(auth, "user_id")
    return None


@dataclass(frozen=True, slots=True)
class Screened:
    """A person's message that may need a turn, unwrapped from its event."""

    mention: bool  # an app_mention (always addressed), not a plain message
    event: dict[str, Any]  # the message's fields; for an edit, the edited message
    edited_ts: str | None = None


def screen(event: dict[str, Any], *, bot_user_id: str | None, handle_edits: bool) -> Screened | str:
    """The message an Events API event carries, or why it needs no turn (a metric label)."""
    etype = event.get("type")
    if etype == "app_mention":
        return "ignored_bot" if _from_a_bot(event, bot_user_id) else Screened(True, event)
    if etype != "message":
        return "ignored_event"
    subtype = event.get("subtype")
    edited_ts: str | None = None
    if subtype == "message_changed":
        inner = event.get("message")
        if not handle_edits or not isinstance(inner, dict):
            return "ignored_edit"
        edited_ts = string_field(inner.get("edited"), "ts")
        if edited_ts is None:  # an unfurl or similar change, not a person's edit
            return "ignored_edit"
        event = {
            **inner,
            "channel": event.get("channel"),
            "channel_type": string_field(event, "channel_type"),
        }
        subtype = inner.get("subtype")
    if _from_a_bot(event, bot_user_id):
        return "ignored_bot"
    if not (subtype is None or isinstance(subtype, str)) or subtype not in ACCEPTED_SUBTYPES:
        return "ignored_subtype"
    return Screened(False, event, edited_ts)


def _from_a_bot(event: dict[str, Any], bot_user_id: str | None) -> bool:
    # Most bot messages no longer carry subtype bot_message: bot_id is the reliable mark.
    if event.get("bot_id") or event.get("subtype") == "bot_message":
        return True
    return bot_user_id is not None and event.get("user") == bot_user_id


def in_dm(event: dict[str, Any], channel_id: str) -> tuple[str | None, bool]:
    """The event's channel type (``im`` for a DM channel ``D…`` that does not say) and
    whether it is a DM."""
    channel_type = string_field(event, "channel_type") or (
        "im" if channel_id.startswith("D") else None
    )
    return channel_type, channel_type == "im"


def reply_thread(config: SlackChannelConfig, event: dict[str, Any], channel_id: str) -> str | None:
    """The Slack thread a message is answered in: its own, or (in channels, when configured)
    a new one under it. DMs stay flat unless the person threads."""
    thread_ts = string_field(event, "thread_ts")
    if thread_ts is not None:
        return thread_ts
    if not config.reply_in_thread or in_dm(event, channel_id)[1]:
        return None
    return string_field(event, "ts")


def addressed_by_fields(
    config: SlackChannelConfig, bot_user_id: str | None, event: dict[str, Any]
) -> bool | None:
    """Whether a plain ``message`` is meant for the bot, from its fields alone; None for a
    follow-up in a thread, which is when the bot already answered there."""
    channel_type = string_field(event, "channel_type")
    channel_id = string_field(event, "channel") or ""
    if channel_type == "im" or (channel_type is None and channel_id.startswith("D")):
        return True
    if config.channel_messages == "all":
        return True
    text = string_field(event, "text") or ""
    if bot_user_id is not None and f"<@{bot_user_id}" in text:
        return True  # the app_mention for the same ts collapses into this one
    ts, thread_ts = string_field(event, "ts"), string_field(event, "thread_ts")
    if thread_ts is None or thread_ts == ts or not channel_id:
        return False
    return None


def action_value(action: Any) -> str | None:
    """What a person chose in one ``block_actions`` action: a button's ``value``, or the
    ``value`` of the option picked in a ``static_select``."""
    if not isinstance(action, dict):
        return None
    if action.get("type") == "button":
        return string_field(action, "value")
    if action.get("type") == "static_select":
        return string_field(action.get("selected_option"), "value")
    return None


def clicked_button(payload: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The choice a ``block_actions`` payload reports (a button with a value, or an option
    picked in a select menu) and the id of who made it; None for any other interaction (a
    link button, a view submission)."""
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    action = next(
        (
            a
            for a in (actions if isinstance(actions, list) else [])
            if isinstance(a, dict) and action_value(a) is not None
        ),
        None,
    )
    user_id = string_field(payload.get("user"), "id")
    if action is None or user_id is None:
        return None
    return action, user_id
