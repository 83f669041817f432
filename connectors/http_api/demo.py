"""Demo scene: a website talks to each persona over the HTTP API channel."""

from __future__ import annotations

import os
from typing import Any

import aiohttp

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from gateway.demo_scene import Transcript

__all__ = ["Scene"]

_CONVERSATIONS = [
    ("web-alice", "Alice", "hello there"),
    ("web-alice", "Alice", "what are your prices?"),
    ("web-bob", "Bob", "/persona docs how do I install it?"),
    ("web-carol", "Carol", "we have an outage on checkout"),
]


class Scene:
    title = "HTTP API channel (website → gateway → signed webhook)"

    def __init__(self) -> None:
        self.receiver: CallbackReceiver | None = None

    async def prepare(self, config: dict[str, Any]) -> None:
        self.receiver = await CallbackReceiver(
            secrets=[os.environ["ACME_HTTP_CALLBACK_SECRET"]]
        ).start()
        for tenant in config["tenants"]:
            for channel in tenant["channels"]:
                if channel["kind"] == "http":
                    channel["callback_url"] = self.receiver.url
                    # The receiver listens on this machine, which the SSRF guard refuses
                    # unless the operator says it is meant.
                    channel["callback_allow_private"] = True

    async def play(self, gateway_url: str, transcript: Transcript) -> bool:
        assert self.receiver is not None
        async with aiohttp.ClientSession() as session:
            client = HttpChannelClient(
                session=session,
                base_url=gateway_url,
                tenant="acme",
                signing_secret=os.environ["ACME_HTTP_SIGNING_SECRET"],
            )
            for n, (conversation, user, text) in enumerate(_CONVERSATIONS):
                transcript.customer(f"{user} (web)", text)
                status, _ = await client.send(
                    conversation_id=conversation,
                    text=text,
                    user_id=user.lower(),
                    user_name=user,
                    event_id=f"demo-{os.getpid()}-{n}",
                )
                try:
                    received = await self.receiver.wait_for(n + 1, timeout=10)
                except TimeoutError:
                    transcript.note("no reply arrived")
                    return False
                reply = received[-1].payload
                transcript.bot(
                    reply["persona"]["display_name"],
                    reply["text"] + "".join(f"\n[{b['label']}]" for b in reply["buttons"]),
                    note=f"HTTP {status}; webhook signature verified",
                )
            # A retry of the same event must not produce a second reply.
            status, body = await client.send(
                conversation_id="web-alice",
                text="hello there",
                user_id="alice",
                event_id=f"demo-{os.getpid()}-0",
            )
            transcript.note(f"re-sent event demo-…-0: HTTP {status}, duplicate={body['duplicate']}")
        return self.receiver.rejected == 0

    async def close(self) -> None:
        if self.receiver is not None:
            await self.receiver.stop()
