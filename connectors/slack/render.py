"""How a reply looks on Slack: escaped text cut into posts, Block Kit for the rich parts
(:mod:`connectors.slack.blocks`) and the persona's signature.

Guarantees: every post's text is escaped as Slack requires (``&``, ``<``, ``>``) and no
longer than the limit it is cut to; cutting never drops a character nor splits an entity;
the rich parts are Block Kit within Slack's limits, or the whole reply is its numbered
plain text (:meth:`OutboundMessage.plain_text`) — never cut. Nothing here talks to Slack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import Block, ContextBlock, MarkdownTextObject, SectionBlock

from connectors.send_policy import utf16_fit, utf16_len
from connectors.slack.blocks import (
    BUTTON_ACTION_PREFIX,
    MAX_BLOCKS,
    SLACK_SECTION_MAX,
    TooRich,
    attachment_blocks,
    card_blocks,
    choice_blocks,
    escape,
    text_lines,
    uploads,
)
from connectors.slack.config import DEFAULT_MAX_MESSAGE_CHARS
from gateway.models import OutboundMessage

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


@dataclass(frozen=True, slots=True)
class Post:
    """One Slack message to post: a chunk of the reply, with blocks on the last one."""

    text: str
    blocks: tuple[Block, ...] = ()


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
    """The Slack messages for one reply: text chunks, the last one with the blocks.

    The rich parts are Block Kit (:mod:`connectors.slack.blocks`) when they fit Slack's
    limits, else the whole reply is :meth:`OutboundMessage.plain_text` (choices numbered,
    cards as titled paragraphs). Kept files are not here: they are uploaded after the posts
    (:func:`connectors.slack.blocks.uploads`); a reply of files alone has no post."""
    try:
        body = card_blocks(message.cards) + attachment_blocks(message)
        choices = choice_blocks(message)
        native = True
    except TooRich:
        body, choices, native = [], [], False
    posts = _posts(message, limit, body, choices, native=native)
    if native and sum(len(p.blocks) for p in posts) > MAX_BLOCKS:
        posts = _posts(message, limit, [], [], native=False)
    return posts


def _posts(
    message: OutboundMessage, limit: int, body: list[Block], choices: list[Block], *, native: bool
) -> list[Post]:
    text = escape(message.text if native else message.plain_text())
    lines = text_lines(message, native=native)
    if lines:
        text = "\n".join([text, *lines]) if text else "\n".join(lines)
    chunks = split_text(text, limit)
    signature = message.persona.signature
    if not body and not choices and not signature:
        if not text and uploads(message):
            return []
        return [Post(chunk or escape(message.persona.display_name)) for chunk in chunks]
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=piece))
        for piece in split_text(chunks[-1], SLACK_SECTION_MAX)
        if piece.strip()
    ]
    blocks += body
    if signature:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=escape(signature))]))
    blocks += choices
    # The notification text: the reply's own, or (a reply of cards or choices alone) the
    # text form of its parts, so a notification never says nothing.
    fallback = chunks[-1] or split_text(escape(message.plain_text()), limit)[0]
    posts = [Post(chunk) for chunk in chunks[:-1]]
    posts.append(Post(fallback or escape(message.persona.display_name), tuple(blocks)))
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
