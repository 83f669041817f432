"""Slack payloads as Slack sends them, and a sender that signs and posts them as Slack does.

The builders (:func:`message_event`, :func:`app_mention_event`, :func:`event_callback`,
:func:`slash_command_fields`, :func:`block_actions_payload`) produce complete payloads in the
shapes Slack documents; :class:`SlackSender` signs requests exactly as Slack does (``v0``
HMAC with slack_sdk's ``SignatureVerifier``) and posts Events API callbacks (with
``X-Slack-Retry-Num`` retries), slash commands and interactivity payloads. Test and bench
infrastructure, re-exported by :mod:`connectors.slack.emulator`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from slack_sdk.signature import SignatureVerifier

__all__ = [
    "ACME_FILE",
    "SlackSender",
    "app_mention_event",
    "block_actions_payload",
    "event_callback",
    "message_event",
    "slash_command_fields",
    "static_select_payload",
]

# -- payloads, as Slack sends them ---------------------------------------------------------------
ACME_FILE: dict[str, Any] = {
    "id": "F0INVOICE",
    "created": 1700000000,
    "timestamp": 1700000000,
    "name": "invoice.png",
    "title": "invoice.png",
    "mimetype": "image/png",
    "filetype": "png",
    "pretty_type": "PNG",
    "user": "U0CUSTOMER",
    "user_team": "T0FLOWBIZ",
    "editable": False,
    "size": 52_344,
    "mode": "hosted",
    "is_external": False,
    "external_type": "",
    "is_public": False,
    "public_url_shared": False,
    "display_as_bot": False,
    "username": "",
    "url_private": "https://files.slack.com/files-pri/T0FLOWBIZ-F0INVOICE/invoice.png",
    "url_private_download": (
        "https://files.slack.com/files-pri/T0FLOWBIZ-F0INVOICE/download/invoice.png"
    ),
    "permalink": "https://flowbiz-demo.slack.com/files/U0CUSTOMER/F0INVOICE/invoice.png",
    "original_w": 800,
    "original_h": 600,
    "has_rich_preview": False,
}
"""A complete ``files[]`` entry as Slack puts it on a file_share message."""


@dataclass(frozen=True, slots=True)
class EmulatedWorkspace:
    team_id: str = "T0FLOWBIZ"
    bot_token: str = "xoxb-emulated-bot-token"  # noqa: S105 - the emulator's own fake token
    bot_user_id: str = "U0FLOWBOT"
    bot_id: str = "B0FLOWBOT"
    app_token: str = "xapp-emulated-app-token"  # noqa: S105 - the emulator's own fake token
    app_id: str = "A0FLOWAPP"
    enterprise_id: str | None = None
    team_domain: str = "flowbiz-demo"


def message_event(
    *,
    text: str,
    user: str = "U0CUSTOMER",
    channel: str = "D0DIRECT",
    channel_type: str = "im",
    ts: str | None = None,
    thread_ts: str | None = None,
    team: str = "T0FLOWBIZ",
    **extra: Any,
) -> dict[str, Any]:
    ts = ts or _new_ts()
    client_msg_id = _client_msg_id(team, channel, user, ts)
    event: dict[str, Any] = {
        "type": "message",
        "channel": channel,
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel_type": channel_type,
        "team": team,
        "client_msg_id": client_msg_id,
        "blocks": [
            {
                "type": "rich_text",
                "block_id": client_msg_id[:5],
                "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
                ],
            }
        ],
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
        event["parent_user_id"] = user
    event.update(extra)
    return event


def app_mention_event(
    *,
    text: str,
    bot_user_id: str = "U0FLOWBOT",
    user: str = "U0CUSTOMER",
    channel: str = "C0GENERAL",
    ts: str | None = None,
    thread_ts: str | None = None,
    team: str = "T0FLOWBIZ",
) -> dict[str, Any]:
    ts = ts or _new_ts()
    event: dict[str, Any] = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{bot_user_id}> {text}",
        "ts": ts,
        "team": team,
        "channel": channel,
        "event_ts": ts,
        "client_msg_id": _client_msg_id(team, channel, user, ts),
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def event_callback(
    event: dict[str, Any],
    *,
    team_id: str = "T0FLOWBIZ",
    api_app_id: str = "A0FLOWAPP",
    bot_user_id: str = "U0FLOWBOT",
    event_id: str | None = None,
    enterprise_id: str | None = None,
    event_time: int | None = None,
) -> dict[str, Any]:
    """The Events API envelope around one event (the current ``authorizations`` shape).
    Everything but ``event_time`` follows from the arguments, so the same ones (and the same
    ``event_time``) make the same envelope, as a retry is."""
    event_id = event_id or f"Ev{uuid.uuid4().hex[:10].upper()}"
    return {
        "token": "legacy-verification-token",
        "team_id": team_id,
        "enterprise_id": enterprise_id,
        "context_team_id": team_id,
        "context_enterprise_id": enterprise_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()) if event_time is None else event_time,
        "authorizations": [
            {
                "enterprise_id": enterprise_id,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{uuid.uuid5(uuid.NAMESPACE_URL, f'slack:{event_id}').hex}",
    }


def slash_command_fields(
    *,
    command: str,
    text: str,
    response_url: str,
    team_id: str = "T0FLOWBIZ",
    channel_id: str = "C0GENERAL",
    user_id: str = "U0CUSTOMER",
    user_name: str = "alice",
    api_app_id: str = "A0FLOWAPP",
) -> dict[str, str]:
    return {
        "token": "legacy-verification-token",
        "team_id": team_id,
        "team_domain": "flowbiz-demo",
        "channel_id": channel_id,
        "channel_name": "general",
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
    }


def block_actions_payload(
    *,
    value: str,
    label: str = "Button",
    message_ts: str,
    thread_ts: str | None = None,
    team_id: str = "T0FLOWBIZ",
    channel_id: str = "D0DIRECT",
    user_id: str = "U0CUSTOMER",
    response_url: str = "https://hooks.slack.com/actions/T0FLOWBIZ/1/x",
    is_ephemeral: bool = False,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel_id,
        "is_ephemeral": is_ephemeral,
    }
    message: dict[str, Any] = {
        "type": "message",
        "subtype": "bot_message",
        "text": "…",
        "ts": message_ts,
        "bot_id": "B0FLOWBOT",
    }
    if thread_ts is not None:
        container["thread_ts"] = thread_ts
        message["thread_ts"] = thread_ts
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": "alice", "name": "alice", "team_id": team_id},
        "api_app_id": "A0FLOWAPP",
        "token": "legacy-verification-token",
        "container": container,
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
        "team": {"id": team_id, "domain": "flowbiz-demo"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": "directmessage"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": "flowbiz_button_0",
                "block_id": "flowbiz_buttons",
                "text": {"type": "plain_text", "text": label, "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
        "state": {"values": {}},
    }
    if not is_ephemeral:
        payload["message"] = message
    return payload


def static_select_payload(
    *, value: str, label: str = "Option", message_ts: str, **fields: Any
) -> dict[str, Any]:
    """The ``block_actions`` Slack sends when a person picks an option of a select menu."""
    payload = block_actions_payload(value=value, label=label, message_ts=message_ts, **fields)
    option = {"text": {"type": "plain_text", "text": label, "emoji": True}, "value": value}
    payload["actions"] = [
        {
            "type": "static_select",
            "action_id": "flowbiz_select",
            "block_id": "flowbiz_options",
            "selected_option": option,
            "placeholder": {"type": "plain_text", "text": "Choose", "emoji": True},
            "action_ts": f"{time.time():.6f}",
        }
    ]
    payload["state"] = {
        "values": {
            "flowbiz_options": {
                "flowbiz_select": {"type": "static_select", "selected_option": option}
            }
        }
    }
    return payload


def _client_msg_id(team: str, channel: str, user: str, ts: str) -> str:
    """The same for every event of one post (its message and app_mention events, and any
    retry of either), as Slack's is; a new post has a new ``ts``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"slack:{team}/{channel}/{user}/{ts}"))


def _new_ts() -> str:
    return f"{time.time():.6f}"


# -- the sender ----------------------------------------------------------------------------------
@dataclass(slots=True)
class SlackSender:
    """Posts signed, Slack-shaped requests to a gateway, as Slack's servers do."""

    session: aiohttp.ClientSession
    gateway_url: str
    signing_secret: str
    sent: list[tuple[str, int]] = field(default_factory=list)

    def headers(self, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = SignatureVerifier(self.signing_secret).generate_signature(
            timestamp=ts, body=body
        )
        assert signature is not None  # always set for a str timestamp
        return {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }

    async def post(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str,
        headers: dict[str, str] | None = None,
        sign: bool = True,
        timestamp: int | None = None,
    ) -> tuple[int, str]:
        all_headers = {"Content-Type": content_type}
        if sign:
            all_headers.update(self.headers(body, timestamp=timestamp))
        all_headers.update(headers or {})
        async with self.session.post(
            f"{self.gateway_url}{path}", data=body, headers=all_headers
        ) as response:
            self.sent.append((path, response.status))
            return response.status, await response.text()

    async def event(
        self,
        envelope: dict[str, Any],
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> tuple[int, str]:
        """Deliver an Events API callback; ``retry_num`` marks it as Slack's n-th retry."""
        headers = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
        return await self.post(
            "/slack/events",
            json.dumps(envelope).encode(),
            content_type="application/json",
            headers=headers,
        )

    async def url_verification(self, challenge: str) -> tuple[int, str]:
        body = {"token": "legacy-verification-token", "challenge": challenge}
        body["type"] = "url_verification"
        return await self.post(
            "/slack/events", json.dumps(body).encode(), content_type="application/json"
        )

    async def command(self, fields: dict[str, str]) -> tuple[int, str]:
        return await self.post(
            "/slack/commands",
            urlencode(fields).encode(),
            content_type="application/x-www-form-urlencoded",
        )

    async def interaction(self, payload: dict[str, Any]) -> tuple[int, str]:
        return await self.post(
            "/slack/interactivity",
            f"payload={quote(json.dumps(payload))}".encode(),
            content_type="application/x-www-form-urlencoded",
        )
