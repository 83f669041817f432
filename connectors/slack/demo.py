"""Demo scene: a Slack workspace talks to the personas through the local Slack emulator."""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from typing import Any

import aiohttp

from connectors.slack.emulator import (
    EmulatedWorkspace,
    PostedMessage,
    SlackEmulator,
    SlackSender,
    app_mention_event,
    block_actions_payload,
    event_callback,
    message_event,
    slash_command_fields,
)
from gateway.demo_scene import Transcript

__all__ = ["Scene"]

_SIGNING_VARIABLE = "ACME_SLACK_SIGNING_SECRET"
_BOT_VARIABLE = "ACME_SLACK_BOT_TOKEN"
_WORKSPACE = EmulatedWorkspace()


class Scene:
    title = (
        "Slack (Events API, buttons, threads, slash command → Web API / response_url, "
        "a photo kept and answered with a card)"
    )

    def __init__(self) -> None:
        self.emulator: SlackEmulator | None = None

    async def prepare(self, config: dict[str, Any]) -> None:
        os.environ.setdefault(_SIGNING_VARIABLE, "demo-slack-signing-secret")
        os.environ.setdefault(_BOT_VARIABLE, _WORKSPACE.bot_token)
        self.emulator = await SlackEmulator(workspaces=(_WORKSPACE,)).start()
        # Alice as users.info describes her: the persona greets her by name, not by id.
        self.emulator.add_user("U0ALICE", display_name="Alice", real_name="Alice Example")
        for tenant in config["tenants"]:
            if tenant["id"] == "acme":
                tenant.setdefault("channels", []).append(
                    {
                        "kind": "slack",
                        "team_id": _WORKSPACE.team_id,
                        "signing_secret": f"env:{_SIGNING_VARIABLE}",
                        "bot_token": f"env:{_BOT_VARIABLE}",
                        "api_base_url": self.emulator.api_url,
                        "response_url_prefixes": [f"{self.emulator.base_url}/hooks/"],
                        "files_base_url": self.emulator.base_url,
                    }
                )

    async def play(self, gateway_url: str, transcript: Transcript) -> bool:
        emulator = self.emulator
        assert emulator is not None
        async with aiohttp.ClientSession() as session:
            sender = SlackSender(
                session=session,
                gateway_url=gateway_url,
                signing_secret=os.environ[_SIGNING_VARIABLE],
            )

            async def reply(expected: int, note: str) -> PostedMessage | None:
                try:
                    posts = await emulator.wait_for_posts(expected, timeout=10)
                except TimeoutError:
                    transcript.note("no reply arrived")
                    return None
                post = posts[-1]
                buttons = "".join(f"\n[{label}]" for label, _ in post.buttons)
                # Each section on a line of its own: a card's is not part of the text above it.
                shown = "\n".join(post.shown_sections) or post.shown_text
                where = f"{post.via}, thread {post.thread_ts}" if post.thread_ts else post.via
                transcript.bot(
                    post.username or "(response_url)",
                    shown + buttons,
                    note=f"{note}; {where}",
                )
                return post

            # 1. A direct message; the persona answers with buttons.
            transcript.customer("alice (Slack DM)", "hello")
            dm = event_callback(message_event(text="hello", channel="D0ALICE", user="U0ALICE"))
            status, _ = await sender.event(dm)
            greeting = await reply(1, f"HTTP {status}")
            if greeting is None:
                return False

            # 2. Slack retries the same event (as after a slow ack): no second reply.
            status, _ = await sender.event(dm, retry_num=1, retry_reason="http_timeout")
            transcript.note(f"Slack retried the event (X-Slack-Retry-Num: 1): HTTP {status}")

            # 3. Alice clicks the first button; its value comes back as her next message.
            label, value = greeting.buttons[0]
            transcript.customer("alice (Slack DM)", f"[clicks {label}]")
            status, _ = await sender.interaction(
                block_actions_payload(
                    value=value,
                    label=label,
                    message_ts=greeting.ts,
                    channel_id="D0ALICE",
                    user_id="U0ALICE",
                )
            )
            if await reply(2, f"HTTP {status}, block_actions") is None:
                return False

            # 4. A mention in a channel: answered in a thread under it, by the infra persona.
            transcript.customer("bob (#ops)", f"@{_WORKSPACE.bot_user_id} we have an outage")
            mention = app_mention_event(text="we have an outage", channel="C0OPS", user="U0BOB")
            status, _ = await sender.event(event_callback(mention))
            if await reply(3, f"HTTP {status}, app_mention") is None:
                return False

            # 5. A slash command: acked at once, answered privately through its response_url.
            transcript.customer("carol (#general)", "/flowbiz pricing")
            fields = slash_command_fields(
                command="/flowbiz",
                text="pricing",
                response_url=emulator.response_url(_WORKSPACE.team_id),
                user_id="U0CAROL",
                user_name="carol",
            )
            status, _ = await sender.command(fields)
            if await reply(4, f"HTTP {status}, ephemeral") is None:
                return False
            # 6. Alice sends a photo: the gateway fetches it from Slack's file host with the
            #    bot token and keeps it; the persona answers with a card (Block Kit).
            transcript.customer("alice (Slack DM)", "[sends a photo] my parcel arrived")
            photo = emulator.files.host(_photo(), name="parcel.png", user="U0ALICE")
            shared = message_event(
                text="my parcel arrived",
                channel="D0ALICE",
                user="U0ALICE",
                subtype="file_share",
                files=[photo],
            )
            status, _ = await sender.event(event_callback(shared))
            card = await reply(5, f"HTTP {status}, file_share; the photo kept")
            if card is None:
                return False
            kinds = ", ".join(b["type"] for b in card.blocks)
            transcript.note(f"Block Kit: {kinds}")
            await asyncio.sleep(0.3)  # a late duplicate of step 2 would show up by now
            transcript.note(f"replies posted in Slack: {len(emulator.posted)} (expected 5)")
        return len(emulator.posted) == 5

    async def close(self) -> None:
        if self.emulator is not None:
            await self.emulator.stop()


def _photo() -> bytes:
    """A small real PNG (the gateway judges files on their bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + bytes(range(24)) for _ in range(8))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(rows)),
            chunk(b"IEND", b""),
        )
    )
