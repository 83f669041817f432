"""How one reply looks on Slack, LINE, WhatsApp and email, for the playground.

Each preview is built by the connector's own render function — the code its send path
runs (``connectors.<kind>.connector.render``) — so what is shown is what would be sent:
Slack's escaped text and blocks, LINE's message objects with quick replies, the WhatsApp
bodies with buttons as numbered lines, the email reply's headers and plain-text part. The
connectors are imported here, when a preview is asked for, as the connector registry does:
the console is the one page that shows every platform's shape side by side.

A render that refuses (an email address it may not write) is shown as that refusal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from gateway.config import TenantConfig
from gateway.models import EmailReplyContext, OutboundMessage

__all__ = ["Preview", "previews"]

_CUSTOMER = "customer@example.com"
_OURS = "assistant@example.com"


@dataclass(frozen=True, slots=True)
class Preview:
    kind: str  # slack | line | whatsapp | email
    title: str
    payloads: list[dict[str, Any]] = field(default_factory=list)  # what the platform receives
    views: list[dict[str, Any]] = field(default_factory=list)  # the same, as a person sees it
    error: str | None = None

    @property
    def raw(self) -> str:
        return json.dumps(self.payloads, indent=2, ensure_ascii=False)


def _slack(message: OutboundMessage, tenant: TenantConfig | None) -> Preview:
    from connectors.slack.connector import DEFAULT_MAX_MESSAGE_CHARS, SlackChannelConfig, render

    limit = next(
        (
            c.max_message_chars
            for c in (tenant.channels if tenant else ())
            if isinstance(c, SlackChannelConfig)
        ),
        DEFAULT_MAX_MESSAGE_CHARS,
    )
    from connectors.slack.connector import unescape

    posts = render(message, limit)
    views = []
    for post in posts:
        blocks = post["blocks"] or []
        sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
        views.append(
            {
                "sender": post["username"],
                "text": unescape("".join(sections) if sections else post["text"]),
                "context": [
                    unescape(e["text"])
                    for b in blocks
                    if b["type"] == "context"
                    for e in b["elements"]
                ],
                "buttons": [
                    # a button's label, or the placeholder of a select menu
                    (e.get("text") or e.get("placeholder") or {}).get("text", "")
                    for b in blocks
                    if b["type"] == "actions"
                    for e in b["elements"]
                ],
            }
        )
    return Preview("slack", "Slack", posts, views)


def _line_view(o: dict[str, Any]) -> dict[str, Any]:
    """One LINE message object as a person sees it: text, a picture, or a placeholder."""
    kind = o["type"]
    buttons = [i["action"]["label"] for i in (o.get("quickReply") or {}).get("items", [])]
    if kind == "text":
        text = o["text"]
    elif kind in ("image", "video", "audio"):
        text = o["originalContentUrl"] if kind == "image" else f"[{kind}] {o['originalContentUrl']}"
    elif kind == "location":
        text = f"[location] {o['title']}, {o['address']}"
    elif kind == "sticker":
        text = f"[sticker {o['packageId']}/{o['stickerId']}]"
    elif kind == "flex":
        # A Flex card or carousel: its alternative text, and its buttons beside the quick replies.
        contents = o["contents"]
        bubbles = contents["contents"] if contents.get("type") == "carousel" else [contents]
        text = f"[card] {o['altText']}"
        buttons = [
            b["action"]["label"]
            for bubble in bubbles
            for b in (bubble.get("footer") or {}).get("contents", [])
        ] + buttons
    else:
        text = f"[{kind}]"
    return {
        "sender": (o.get("sender") or {}).get("name"),
        "text": text,
        "image": kind == "image",
        "buttons": buttons,
    }


def _line(message: OutboundMessage) -> Preview:
    from connectors.line.connector import render

    objects = render(message)
    return Preview("line", "LINE", objects, [_line_view(o) for o in objects])


def _whatsapp(message: OutboundMessage) -> Preview:
    from connectors.whatsapp.connector import render

    parts = render(message)
    views = [{"text": p["body"] or "", "media": p["media_url"]} for p in parts]
    return Preview("whatsapp", "WhatsApp", parts, views)


def _email(message: OutboundMessage, tenant: TenantConfig | None) -> Preview:
    from connectors.email.connector import EmailChannelConfig, render
    from connectors.email.headers import AddressRefused, HeaderBlockRefused

    ours = next(
        (
            c.addresses[0].address
            for c in (tenant.channels if tenant else ())
            if isinstance(c, EmailChannelConfig)
        ),
        _OURS,
    )
    context = EmailReplyContext(
        message_id="",
        subject="Playground",
        from_address=_CUSTOMER,
        to_address=ours,
    )
    try:
        reply = render(message, context, from_address=ours, recipient=_CUSTOMER)
    except (AddressRefused, HeaderBlockRefused) as exc:
        return Preview("email", "Email", error=f"not sendable: {exc}")
    parsed = message_from_bytes(reply.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)  # policy.default builds EmailMessage
    body = parsed.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    headers = {name: str(parsed[name]) for name in ("From", "To", "Subject")}
    shown = {"headers": headers, "text": text.replace("\r\n", "\n")}
    return Preview("email", "Email", [{**headers, "text/plain": shown["text"]}], [shown])


def previews(message: OutboundMessage, tenant: TenantConfig | None) -> list[Preview]:
    """The reply as each of the four platforms would receive it."""
    return [_slack(message, tenant), _line(message), _whatsapp(message), _email(message, tenant)]
