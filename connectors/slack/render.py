"""How a reply looks on Slack: escaped text cut into posts, Block Kit for buttons and the
persona's signature.

Guarantees: every post's text is escaped as Slack requires (``&``, ``<``, ``>``) and no
longer than the limit it is cut to; cutting never drops a character nor splits an entity;
buttons keep their order and are bounded by Slack's own limits (25 per actions block,
75-character labels, 2,000-character values). Nothing here talks to Slack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    SectionBlock,
)

from connectors.send_policy import utf16_fit, utf16_len
from connectors.slack.config import DEFAULT_MAX_MESSAGE_CHARS
from gateway.models import Attachment, OutboundMessage

__all__ = [
    "BUTTON_ACTION_PREFIX",
    "SLACK_SECTION_MAX",
    "Post",
    "escape",
    "post_fields",
    "render",
    "render_posts",
    "split_text",
    "unescape",
]

SLACK_SECTION_MAX = 3_000  # a section block's text; above it Slack answers invalid_blocks
BUTTON_ACTION_PREFIX = "flowbiz_button_"
_MAX_BUTTONS = 25  # elements in one actions block
_BUTTON_LABEL_MAX = 75
_BUTTON_VALUE_MAX = 2_000


@dataclass(frozen=True, slots=True)
class Post:
    """One Slack message to post: a chunk of the reply, with blocks on the last one."""

    text: str
    blocks: tuple[Block, ...] = ()


def escape(text: str) -> str:
    """Slack's required escaping of the three control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def split_text(text: str, limit: int) -> list[str]:
    """Cut (escaped) text into pieces of at most ``limit`` UTF-16 code units, in order.

    Slack does not say how it counts its limits; UTF-16 units (an emoji counts 2) are never
    fewer than characters, so a piece fits however it counts. Prefers a line break, then a
    space, in the second half of the window; never cuts inside an ``&amp;``-style entity or
    a surrogate pair. Nothing is dropped: ``"".join(parts) == text``.
    """
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        fit = max(1, utf16_fit(rest, limit))
        window = rest[:fit]
        cut = -1
        for sep in ("\n", " "):
            at = window.rfind(sep)
            if at >= fit // 2:
                cut = at + 1
                break
        if cut == -1:
            cut = fit
        amp = window.rfind("&", max(0, cut - 5), cut)
        if amp > 0 and ";" not in window[amp:cut]:
            cut = amp
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest or not parts:
        parts.append(rest)
    return parts


def render_posts(message: OutboundMessage, limit: int) -> list[Post]:
    """The Slack messages for one reply: text chunks, the last one with blocks if needed."""
    text = escape(message.text)
    links = [_link(a) for a in message.attachments if a.url]
    if links:
        text = "\n".join([text, *links]) if text else "\n".join(links)
    chunks = split_text(text, limit)
    signature = message.persona.signature
    if not message.buttons and not signature:
        return [Post(chunk) for chunk in chunks]
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=piece))
        for piece in split_text(chunks[-1], SLACK_SECTION_MAX)
        if piece.strip()
    ]
    if signature:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=escape(signature))]))
    if message.buttons:
        blocks.append(
            ActionsBlock(
                block_id="flowbiz_buttons",
                elements=[
                    ButtonElement(
                        text=button.label[:_BUTTON_LABEL_MAX],
                        action_id=f"{BUTTON_ACTION_PREFIX}{n}",
                        value=button.value[:_BUTTON_VALUE_MAX],
                    )
                    for n, button in enumerate(message.buttons[:_MAX_BUTTONS])
                ],
            )
        )
    posts = [Post(chunk) for chunk in chunks[:-1]]
    posts.append(Post(chunks[-1] or escape(message.persona.display_name), tuple(blocks)))
    return posts


def post_fields(message: OutboundMessage, post: Post) -> dict[str, Any]:
    """What a post says and who it is from: the fields of ``chat.postMessage`` that do not
    depend on where it goes."""
    return {
        "text": post.text,
        "blocks": list(post.blocks) or None,
        "username": message.persona.display_name,
        "icon_url": message.persona.icon_url,
    }


def render(
    message: OutboundMessage, limit: int = DEFAULT_MAX_MESSAGE_CHARS
) -> list[dict[str, Any]]:
    """The ``chat.postMessage`` bodies :meth:`SlackConnector.send` posts for ``message``
    (without the channel and thread), blocks as JSON: what the console previews."""
    return [
        {
            **fields,
            "blocks": [b.to_dict() for b in fields["blocks"]] if fields["blocks"] else None,
        }
        for fields in (post_fields(message, post) for post in render_posts(message, limit))
    ]


def _link(attachment: Attachment) -> str:
    url = attachment.url or ""
    name = attachment.name or url
    if any(c in url for c in "<>| "):
        return escape(url)
    return f"<{url}|{escape(name)}>"
