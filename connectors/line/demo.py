"""Demo scene: people talk to Acme's LINE Official Account through the emulated LINE platform.

Nok adds the account, says hello, taps a quick reply and sends a photo: the gateway fetches it
from LINE's content API, keeps it, and the core persona answers with a card — a Flex bubble,
printed with its title and buttons — which Nok taps. A group message and a redelivery follow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp

from connectors.line.emulator import Delivery, LineEmulator, LineWebhookSender, tiny_png
from gateway.demo_scene import Transcript

__all__ = ["Scene"]

DESTINATION = "U" + "de" * 16  # the demo bot's user id
NOK = "U" + "4e6f6b" * 5 + "00"
KEN = "U" + "4b656e" * 5 + "00"
GROUP = "C" + "0123456789abcdef" * 2


def _bubble(bubble: dict[str, Any]) -> list[str]:
    texts = [c.get("text", "") for c in (bubble.get("body") or {}).get("contents", [])]
    buttons = [b["action"]["label"] for b in (bubble.get("footer") or {}).get("contents", [])]
    lines = [f"┌ {texts[0] if texts else ''}", *(f"│ {t}" for t in texts[1:])]
    if bubble.get("hero"):
        lines.insert(0, "┌ [picture]")
    lines.append("└ " + " ".join(f"[{b}]" for b in buttons))
    return lines


def _render(delivery: Delivery) -> str:
    lines: list[str] = []
    for message in delivery.messages:
        kind = message.get("type")
        if kind == "text":
            lines.append(message["text"])
        elif kind == "flex":
            contents = message["contents"]
            bubbles = contents["contents"] if contents["type"] == "carousel" else [contents]
            for bubble in bubbles:
                lines += _bubble(bubble)
        elif kind in ("image", "video", "audio"):
            lines.append(f"[{kind}] {message['originalContentUrl']}")
        items = (message.get("quickReply") or {}).get("items", [])
        if items:
            lines.append(" ".join(f"[{i['action']['label']}]" for i in items))
    return "\n".join(lines)


class Scene:
    title = "LINE Official Account (signed webhook → gateway → reply token or push)"

    def __init__(self) -> None:
        self.emulator: LineEmulator | None = None
        self.media_dir: Path | None = None
        self.photo = tiny_png(4, 3)
        self._copies_before = 0

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
            "data_api_base_url": self.emulator.url,
        }
        # The photo Nok sends is kept where the demo keeps files (gateway/demo.py: ./var).
        media = config.setdefault("media", {})
        media.setdefault("dir", str(Path.cwd() / "var" / "media"))
        self.media_dir = Path(media["dir"]) if Path(media["dir"]).is_absolute() else None
        for tenant in config["tenants"]:
            if tenant["id"] == "acme":
                tenant.setdefault("channels", []).append(block)

    async def play(self, gateway_url: str, transcript: Transcript) -> bool:
        emulator = self.emulator
        assert emulator is not None
        self._copies_before = self._copies()
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
                ("Nok (LINE)", "(sends a photo)", line.image(self.photo, user_id=NOK)),
                (
                    "Nok (LINE)",
                    "(taps [Opening hours] on the card)",
                    line.postback("opening hours", user_id=NOK),
                ),
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
                if said == "(sends a photo)" and not self._photo_kept(emulator, transcript):
                    return False
            status = await line.post([line.redelivery(hello)])
            transcript.note(
                f"LINE redelivered the 'hello' event: HTTP {status}, "
                f"replies still {len(emulator.deliveries)} (deduped on webhookEventId)"
            )
        return len(emulator.deliveries) == expected

    def _copies(self) -> int:
        """Kept files holding the photo's bytes (earlier demo runs may have left some)."""
        if self.media_dir is None or not self.media_dir.is_dir():
            return 0
        return sum(
            1
            for p in self.media_dir.rglob("*")
            if p.is_file() and p.suffix != ".json" and p.read_bytes() == self.photo
        )

    def _photo_kept(self, emulator: LineEmulator, transcript: Transcript) -> bool:
        fetched = [c for c in emulator.calls_to("content") if c.status == 200]
        kept = self._copies() > self._copies_before
        transcript.note(
            f"the gateway fetched the photo from LINE's content API ({len(fetched)} call)"
            + (f" and kept its {len(self.photo)} bytes in {self.media_dir}" if kept else "")
        )
        delivery = emulator.deliveries[-1]
        if not delivery.of_type("flex"):
            transcript.note("the photo was not answered with a card")
            return False
        return len(fetched) == 1

    async def close(self) -> None:
        if self.emulator is not None:
            await self.emulator.stop()
