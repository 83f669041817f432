"""What the rich-message tests share: personas that answer with every part, a scripted
agent for the parts no rules persona carries (places, contact cards, files by URL), a
gateway config that routes to them, and a real PNG."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import yaml

from agents.base import AgentContext, AgentReply, ReplyPart
from gateway.models import Attachment, Card
from tests.connectors.slack.conftest import slack_config

CARD_IMAGE = "https://cdn.example.com/pro.png"
DOCS = "https://docs.example.com/plans"


def png(width: int = 4, height: int = 4, *, filler: int = 0) -> bytes:
    """A valid PNG (its bytes differ with ``filler``); large for a big width."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(
        b"\x00" + bytes((filler + x) % 256 for x in range(width * 3)) for _ in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 0))
        + chunk(b"IEND", b"")
    )


RICH_RULES: list[dict[str, Any]] = [
    {
        "keywords": ["plans"],
        "reply": "Our plans:",
        "cards": [
            {
                "title": "Pro",
                "text": "29 a month <all in>",
                "image": {"kind": "image", "url": CARD_IMAGE, "name": "Pro plan"},
                "buttons": [
                    {"label": "Buy Pro", "value": "buy pro"},
                    {"label": "Read more", "url": DOCS},
                ],
            },
            {
                "title": "Free",
                "text": "For a start",
                "buttons": [{"label": "Start", "value": "start"}],
            },
        ],
    },
    {
        "keywords": ["menu"],
        "reply": "Which plan?",
        "options": {
            "button": "Pick a plan",
            "options": [
                {"label": "Free", "value": "plan-free", "description": "0 a month"},
                {"label": "Pro", "value": "plan-pro"},
            ],
        },
        "quick_replies": [{"label": "Talk to a person", "value": "person"}],
    },
    {"keywords": ["plan-pro"], "reply": "Pro it is."},
    {
        "keywords": ["crowded"],
        "reply": "So many:",
        "buttons": [{"label": f"Choice {n}", "value": f"choice {n}"} for n in range(30)],
    },
    {
        "keywords": ["longvalues"],
        "reply": "Pick:",
        "options": {
            "button": "Pick",
            "options": [{"label": "Long", "value": "v" * 160}, {"label": "Short", "value": "s"}],
        },
    },
    {
        "keywords": ["carousel"],
        "reply": "All of them:",
        "cards": [
            {
                "title": f"Card {n}",
                "text": "t",
                "buttons": [{"label": "Pick", "value": f"card {n}"}],
            }
            for n in range(20)
        ],
    },
]


class ScriptedAgent:
    """Answers with the parts its options name; ``card_from_photo`` puts the photo the
    person sent (as the gateway kept it) on a card."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.attachments = tuple(
            Attachment.model_validate(a) for a in options.get("attachments", ())
        )
        self.card_from_photo = bool(options.get("card_from_photo"))

    async def respond(self, context: AgentContext) -> AgentReply:
        cards: tuple[Card, ...] = ()
        kept = [a for a in context.message.attachments if a.blob is not None]
        if self.card_from_photo and kept:
            photo = kept[0].model_copy(update={"url": None})
            cards = (Card(title="Your photo", text="We got it.", image=photo),)
        return AgentReply(
            parts=(ReplyPart(text="Here:", attachments=self.attachments, cards=cards),)
        )


def rich_config(
    store_url: str, personas_dir: Path, emulator: Any, tmp_path: Path, **channel: Any
) -> dict[str, Any]:
    """The Slack test gateway, with ``rich`` (rules), ``place`` and ``photocard`` (scripted)
    personas reachable by keyword, and its files kept under ``tmp_path/media``."""
    (personas_dir / "rich.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "rich",
                "display_name": "Rich",
                "agent": {"kind": "rules", "options": {"rules": RICH_RULES}},
            }
        )
    )
    (personas_dir / "place.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "place",
                "display_name": "Place",
                "agent": {
                    "kind": "scripted",
                    "options": {
                        "attachments": [
                            {
                                "kind": "location",
                                "location": {
                                    "latitude": 48.8584,
                                    "longitude": 2.2945,
                                    "title": "Shop <Paris>",
                                    "address": "Champ de Mars",
                                },
                            },
                            {
                                "kind": "contact",
                                "contact": {
                                    "name": "Ada Support",
                                    "phones": ["+33 1 23 45 67 89"],
                                    "emails": ["ada@example.com"],
                                },
                            },
                            {
                                "kind": "image",
                                "url": "https://cdn.example.com/map.png",
                                "name": "Map",
                            },
                            {
                                "kind": "file",
                                "url": "https://cdn.example.com/terms.pdf",
                                "name": "Terms",
                            },
                            {"kind": "sticker", "name": "wave"},
                        ]
                    },
                },
            }
        )
    )
    (personas_dir / "photocard.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "photocard",
                "display_name": "Photo card",
                "agent": {"kind": "scripted", "options": {"card_from_photo": True}},
            }
        )
    )
    data = slack_config(store_url, personas_dir, emulator, **channel)
    words = ["plans", "menu", "plan-pro", "crowded", "longvalues", "carousel"]
    data["routing"]["rules"] += [
        {"persona": "rich", "keywords": words},
        {"persona": "place", "keywords": ["where"]},
        {"persona": "photocard", "keywords": ["framed"]},
    ]
    data["media"] = {"dir": str(tmp_path / "media")}
    return data
