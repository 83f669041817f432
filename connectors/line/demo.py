"""Demo scene: people talk to Acme's LINE Official Account through the emulated LINE platform."""

from __future__ import annotations

import os
from typing import Any

import aiohttp

from connectors.line.emulator import Delivery, LineEmulator, LineWebhookSender
from gateway.demo_scene import Transcript

__all__ = ["Scene"]

DESTINATION = "U" + "de" * 16  # the demo bot's user id
NOK = "U" + "4e6f6b" * 5 + "00"
KEN = "U" + "4b656e" * 5 + "00"
GROUP = "C" + "0123456789abcdef" * 2


def _render(delivery: Delivery) -> str:
    lines: list[str] = []
    for message in delivery.messages:
        if message.get("type") == "text":
            lines.append(message["text"])
        items = (message.get("quickReply") or {}).get("items", [])
        if items:
            lines.append(" ".join(f"[{i['action']['label']}]" for i in items))
    return "\n".join(lines)


class Scene:
    title = "LINE Official Account (signed webhook → gateway → reply token or push)"

    def __init__(self) -> None:
        self.emulator: LineEmulator | None = None

    async def prepare(self, config: dict[str, Any]) -> None:
        secret = os.environ.setdefault("ACME_LINE_CHANNEL_SECRET", "demo-line-channel-secret")
        token = os.environ.setdefault("ACME_LINE_ACCESS_TOKEN", "demo-line-access-token")
        self.emulator = await LineEmulator().start()
        self.emulator.add_channel(
            destination=DESTINATION, access_token=token, channel_secret=secret
        )
        self.emulator.add_profile(NOK, "Nok")
        self.emulator.add_profile(KEN, "Ken")
        block = {
            "kind": "line",
            "destination": DESTINATION,
            "channel_secret": "env:ACME_LINE_CHANNEL_SECRET",
            "channel_access_token": "env:ACME_LINE_ACCESS_TOKEN",
            "api_base_url": self.emulator.url,
            "reply_token_margin_seconds": 10,
        }
        for tenant in config["tenants"]:
            if tenant["id"] == "acme":
                tenant.setdefault("channels", []).append(block)

    async def play(self, gateway_url: str, transcript: Transcript) -> bool:
        emulator = self.emulator
        assert emulator is not None
        async with aiohttp.ClientSession() as session:
            line = LineWebhookSender(
                session=session,
                gateway_url=gateway_url,
                destination=DESTINATION,
                channel_secret=emulator.channel_secret(DESTINATION),
                emulator=emulator,
            )
            hello = line.text("hello", user_id=NOK)
            steps: list[tuple[str, str, dict[str, Any]]] = [
                ("Nok (LINE)", "(adds the account as a friend)", line.follow(user_id=NOK)),
                ("Nok (LINE)", "hello", hello),
                ("Nok (LINE)", "(taps [Pricing])", line.postback("pricing", user_id=NOK)),
                (
                    "Ken (LINE group)",
                    "we have an outage on checkout",
                    line.text("we have an outage on checkout", user_id=KEN, group_id=GROUP),
                ),
            ]
            expected = 0
            for who, said, event in steps:
                transcript.customer(who, said)
                status = await line.post([event])
                expected += 1
                try:
                    deliveries = await emulator.wait_for(expected, timeout=10)
                except TimeoutError:
                    transcript.note(f"no reply arrived (webhook answered HTTP {status})")
                    return False
                reply = deliveries[-1]
                sender = (reply.messages[0].get("sender") or {}).get("name", "bot")
                transcript.bot(sender, _render(reply), note=f"HTTP {status}; sent by {reply.via}")
            status = await line.post([line.redelivery(hello)])
            transcript.note(
                f"LINE redelivered the 'hello' event: HTTP {status}, "
                f"replies still {len(emulator.deliveries)} (deduped on webhookEventId)"
            )
        return len(emulator.deliveries) == expected

    async def close(self) -> None:
        if self.emulator is not None:
            await self.emulator.stop()
