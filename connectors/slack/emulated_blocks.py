"""What the emulated Slack refuses as ``invalid_blocks``: Block Kit over Slack's limits.

Guarantees: :func:`blocks_valid` is false for more than 50 blocks, a section text over
3,000 characters (or empty), an actions block with no element or over 25, a button label
over 75 characters or value over 2,000, a select with no option, over 100, a placeholder
over 150, an option text over 75 or value over 150, duplicate block ids or action ids in a
block, an image (block or accessory) without its URL or alt text, or a block type it does
not know.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_SECTION", "blocks_valid"]

MAX_SECTION = 3_000


def blocks_valid(blocks: Any) -> bool:
    if not isinstance(blocks, list) or len(blocks) > 50:
        return False
    block_ids = [b.get("block_id") for b in blocks if isinstance(b, dict) and b.get("block_id")]
    if len(block_ids) != len(set(block_ids)):
        return False
    return all(isinstance(block, dict) and _block_valid(block) for block in blocks)


def _block_valid(block: dict[str, Any]) -> bool:
    kind = block.get("type")
    if kind == "section":
        text = block.get("text", {}).get("text", "")
        accessory = block.get("accessory")
        if not text or len(text) > MAX_SECTION:
            return False
        return accessory is None or _image_valid(accessory)
    if kind == "image":
        return _image_valid(block)
    if kind == "actions":
        elements = block.get("elements", [])
        action_ids = [e.get("action_id") for e in elements]
        if not elements or len(elements) > 25 or len(action_ids) != len(set(action_ids)):
            return False
        return all(_element_valid(e) for e in elements)
    return kind in ("divider", "context", "header", "rich_text")


def _image_valid(image: dict[str, Any]) -> bool:
    url = image.get("image_url", "")
    return bool(url) and len(url) <= 3000 and 0 < len(image.get("alt_text", "")) <= 2000


def _element_valid(element: dict[str, Any]) -> bool:
    if element.get("type") == "button":
        text = element.get("text", {}).get("text", "")
        return 0 < len(text) <= 75 and len(element.get("value", "")) <= 2000
    if element.get("type") == "static_select":
        options = element.get("options", [])
        placeholder = element.get("placeholder", {}).get("text", "")
        return (
            0 < len(options) <= 100
            and 0 < len(placeholder) <= 150
            and all(
                0 < len(o["text"]["text"]) <= 75 and 0 < len(o.get("value", "")) <= 150
                for o in options
            )
        )
    return False
