"""The emulated Slack's posted messages and ``chat.update``.

:class:`PostedMessage` is a message the emulated Slack accepted (and would show), as kept
in ``SlackEmulator.posted``. :class:`EmulatedUpdates` adds ``POST /api/chat.update`` to a
:class:`~connectors.slack.emulator.SlackEmulator`: it changes the bot's posted message
``ts`` in ``channel`` in place (so ``posted`` shows what the channel shows), with Slack's
errors (``message_not_found`` for a ``ts`` never posted there, ``cant_update_message`` for
another workspace's message, ``no_text``, ``msg_too_long``, ``invalid_blocks``), honours
the emulator's ``fail_next("chat.update")`` and records each update in
:attr:`EmulatedUpdates.by_ts` (the message as it became); :attr:`EmulatedUpdates.delay`
makes it slow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aiohttp import web

from connectors.slack.emulated_blocks import blocks_valid
from connectors.slack.emulated_host import SlackApiHost

__all__ = ["EmulatedUpdates", "PostedMessage"]


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """A message that Slack accepted (and would show)."""

    via: Literal["chat.postMessage", "chat.postEphemeral", "response_url"]
    team_id: str | None
    channel: str | None
    text: str
    ts: str
    thread_ts: str | None = None
    user: str | None = None  # the viewer of an ephemeral message
    username: str | None = None
    icon_url: str | None = None
    blocks: tuple[dict[str, Any], ...] = ()
    response_type: str | None = None
    received_at: float = field(default_factory=time.monotonic)

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """(label, value) of the buttons in the message's actions blocks."""
        return [
            (e["text"]["text"], e.get("value", ""))
            for b in self.blocks
            if b.get("type") == "actions"
            for e in b.get("elements", [])
            if e.get("type") == "button"
        ]

    @property
    def shown_sections(self) -> list[str]:
        """Each section's text as a person sees it (entities decoded)."""
        return [
            _decoded(b["text"]["text"])
            for b in self.blocks
            if b.get("type") == "section" and "text" in b
        ]

    @property
    def shown_text(self) -> str:
        """The text as a person sees it: the sections when blocks are present."""
        return "".join(self.shown_sections) or _decoded(self.text)


def _decoded(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class _Slack(SlackApiHost, Protocol):
    """What this needs of the emulator it adds to, besides its Web API handling."""

    posted: list[PostedMessage]
    max_text: int


class EmulatedUpdates:
    def __init__(self, emulator: _Slack) -> None:
        self.emulator = emulator
        self.by_ts: dict[str, list[PostedMessage]] = {}
        self.delay = 0.0  # seconds before an update is applied and answered: a slow Slack

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.by_ts.values())

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat.update", self._update)

    async def _update(self, request: web.Request) -> web.Response:
        method = "chat.update"
        slack = self.emulator
        args, token = await slack._args(request)
        injected = await slack._injected(method, args, token, request)
        if injected is not None:
            return injected
        if self.delay:
            await asyncio.sleep(self.delay)

        def no(error: str) -> web.Response:
            return slack._answer(method, args, token, {"ok": False, "error": error})

        ws = slack._workspace(token)
        if ws is None:
            return no("invalid_auth")
        channel, ts = args.get("channel"), args.get("ts")
        at = next(
            (
                i
                for i, p in enumerate(slack.posted)
                if p.via == "chat.postMessage" and p.channel == channel and p.ts == ts
            ),
            None,
        )
        if at is None or not isinstance(ts, str):
            return no("message_not_found")
        if slack.posted[at].team_id != ws.team_id:
            return no("cant_update_message")
        text = args.get("text") or ""
        blocks = args.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if not text and not blocks:
            return no("no_text")
        if len(text) > slack.max_text:
            return no("msg_too_long")
        if not blocks_valid(blocks):
            return no("invalid_blocks")
        updated = dataclasses.replace(slack.posted[at], text=text, blocks=tuple(blocks))
        slack.posted[at] = updated
        self.by_ts.setdefault(ts, []).append(updated)
        await slack._notify()
        return slack._answer(
            method,
            args,
            token,
            {
                "ok": True,
                "channel": channel,
                "ts": ts,
                "text": text,
                "message": {"type": "message", "text": text, "bot_id": ws.bot_id},
            },
        )
