"""What the emulated LINE accepts as message objects, and a sample photo.

:func:`invalid_messages` applies the Messaging API's documented limits to a reply or push
body's ``messages`` — 1..5 objects; text up to 5,000 UTF-16 units; image, video and audio
URLs (https, at most 2,000 characters; plain http only on loopback, where the tests' gateway
serves its links); audio durations; location titles and addresses (1..100); sticker ids;
Flex ``altText`` (1..1,500) and bubbles (a carousel holds 1..12; 30 KB a bubble, 50 KB a
carousel); quick replies (1..13 items, labels 1..20, postback data up to 300) — and names
the first problem as LINE's error details do. :func:`tiny_png` is a valid PNG to send.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any
from urllib.parse import urlsplit

__all__ = ["invalid_messages", "tiny_png"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_MAX_URL = 2000


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def tiny_png(width: int = 2, height: int = 2, *, rgb: tuple[int, int, int] = (6, 199, 85)) -> bytes:
    """A valid PNG of one colour (LINE green by default): a photo for tests and the demo."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _bad_url(value: Any) -> bool:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_URL:
        return True
    parts = urlsplit(value)
    if parts.scheme == "https":
        return not parts.hostname
    return parts.scheme != "http" or parts.hostname not in _LOOPBACK


def _action_problem(action: Any, *, max_label: int) -> str | None:
    if not isinstance(action, dict) or action.get("type") not in ("postback", "uri", "message"):
        return "action.type: must be postback, uri or message"
    label = action.get("label")
    if not isinstance(label, str) or not 1 <= len(label) <= max_label:
        return f"action.label: length must be between 1 and {max_label}"
    if action["type"] == "postback" and len(str(action.get("data", ""))) > 300:
        return "action.data: length must be at most 300"
    if action["type"] == "uri" and _bad_url(action.get("uri")):
        return "action.uri: must be an https URL"
    return None


def _bubble_problem(bubble: Any) -> str | None:
    if not isinstance(bubble, dict) or bubble.get("type") != "bubble":
        return "contents.type: must be bubble"
    hero = bubble.get("hero")
    if hero is not None and _bad_url(hero.get("url")):
        return "hero.url: must be an https URL"
    for button in (bubble.get("footer") or {}).get("contents", []):
        problem = _action_problem(button.get("action"), max_label=40)
        if problem is not None:
            return f"footer.{problem}"
    return None


def _flex_problem(message: dict[str, Any]) -> str | None:
    alt = message.get("altText")
    if not isinstance(alt, str) or not 1 <= len(alt) <= 1500:
        return "altText: length must be between 1 and 1500"
    contents = message.get("contents")
    size = len(json.dumps(contents, ensure_ascii=False).encode())
    if isinstance(contents, dict) and contents.get("type") == "carousel":
        bubbles = contents.get("contents")
        if not isinstance(bubbles, list) or not 1 <= len(bubbles) <= 12:
            return "contents.contents: size must be between 1 and 12"
        if size > 50_000:
            return "contents: a carousel is at most 50 KB"
    else:
        bubbles = [contents]
        if size > 30_000:
            return "contents: a bubble is at most 30 KB"
    for bubble in bubbles:
        problem = _bubble_problem(bubble)
        if problem is not None:
            return f"contents.{problem}"
    return None


def _object_problem(message: dict[str, Any]) -> str | None:
    kind = message["type"]
    if kind == "text":
        if not 1 <= _utf16_len(str(message.get("text", ""))) <= 5000:
            return "text: length must be between 1 and 5000"
    elif kind in ("image", "video"):
        if _bad_url(message.get("originalContentUrl")) or _bad_url(message.get("previewImageUrl")):
            return "originalContentUrl/previewImageUrl: must be https URLs"
    elif kind == "audio":
        if _bad_url(message.get("originalContentUrl")):
            return "originalContentUrl: must be an https URL"
        duration = message.get("duration")
        if not isinstance(duration, int) or duration <= 0:
            return "duration: must be a positive number of milliseconds"
    elif kind == "location":
        for name in ("title", "address"):
            value = message.get(name)
            if not isinstance(value, str) or not 1 <= len(value) <= 100:
                return f"{name}: length must be between 1 and 100"
        if not all(isinstance(message.get(k), int | float) for k in ("latitude", "longitude")):
            return "latitude/longitude: must be numbers"
    elif kind == "sticker":
        if not message.get("packageId") or not message.get("stickerId"):
            return "packageId/stickerId: may not be empty"
    elif kind == "flex":
        return _flex_problem(message)
    else:
        return "type: not a message type this emulator knows"
    return None


def invalid_messages(messages: Any) -> str | None:
    """The first reason LINE would refuse ``messages``, or None."""
    if not isinstance(messages, list) or not 1 <= len(messages) <= 5:
        return "messages: size must be between 1 and 5"
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or "type" not in message:
            return f"messages[{n}].type: may not be empty"
        problem = _object_problem(message)
        if problem is not None:
            return f"messages[{n}].{problem}"
        items = (message.get("quickReply") or {}).get("items", [])
        if len(items) > 13:
            return f"messages[{n}].quickReply.items: size must be between 1 and 13"
        for item in items:
            problem = _action_problem(item.get("action"), max_label=20)
            if problem is not None:
                return f"messages[{n}].quickReply.items[].{problem}"
    return None
