"""A tiny FAQ bot for the webhook agent: what "bring your own bot" looks like.

It imports nothing from the gateway on purpose: signature verification is done with the
standard library, exactly as a bot written in any other language would do it. Run it with
``python -m agents.examples.faq_bot`` (``FAQ_BOT_SECRET`` must be set; port 8765).

- ``POST /bot`` verifies ``X-FlowBiz-Signature`` (any of its secrets, within 5 minutes),
  answers from a small FAQ inline, asks for a person on "human", and answers a retry (same
  ``X-FlowBiz-Idempotency-Key``) with the answer it gave the first time.
- It answers in the richest form the channel shows (``capabilities``): a card with buttons
  and quick replies where cards are shown, plain buttons otherwise. A photo the gateway
  kept (an attachment with a ``blob``) comes back on a "Photo received" card, sent by its
  blob id: the bot never downloads or uploads the file itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from aiohttp import web

__all__ = ["FAQ", "FaqBot", "verify_signature"]

FAQ: tuple[tuple[str, str], ...] = (
    (r"\b(hours?|open)\b", "We are open Monday to Friday, 9:00 to 18:00."),
    (r"\b(price|prices|pricing|plans?)\b", "Plans: Free, Pro (29/month) and Enterprise."),
    (r"\b(refund|return)\b", "Refunds within 30 days: reply with your order number."),
)


def verify_signature(
    header: str, body: bytes, secrets: Sequence[str], *, tolerance: float = 300
) -> bool:
    """``X-FlowBiz-Signature: t=<unix>,v1=<hex>[,v1=<hex>]`` — HMAC-SHA256 of ``t.body``."""
    fields = [item.strip().partition("=") for item in header.split(",")]
    timestamps = [value for key, _, value in fields if key == "t"]
    candidates = [value for key, _, value in fields if key == "v1"]
    if len(timestamps) != 1 or not timestamps[0].isdigit() or not candidates:
        return False
    if abs(time.time() - int(timestamps[0])) > tolerance:
        return False
    signed = timestamps[0].encode() + b"." + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return True
    return False


class FaqBot:
    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = list(secrets)
        self.calls: list[dict[str, Any]] = []  # every verified request, for tests
        self.rejected = 0
        self.fail_next = 0  # answer 503 to this many calls (to show the gateway's retries)
        self._answers: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/bot", self.handle)
        return app

    def answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        text = payload["message"]["text"]
        if re.search(r"\b(human|person|agent)\b", text, re.IGNORECASE):
            return {"text": "Let me get a colleague for you.", "handoff": "asked for a person"}
        for pattern, reply in FAQ:
            if re.search(pattern, text, re.IGNORECASE):
                return {"parts": [{"text": reply}]}
        name = payload["message"]["sender"]["display_name"] or "there"
        capabilities = payload["capabilities"]
        buttons = [{"label": "Opening hours", "value": "hours"}]
        if capabilities["buttons"]:
            buttons.append({"label": "Pricing", "value": "pricing"})
        photo = next(
            (
                a
                for a in payload["message"]["attachments"]
                if a.get("kind") == "image" and a.get("blob")
            ),
            None,
        )
        if photo is not None:
            text = f"Thanks for the photo, {name}!"
        else:
            text = f"Sorry {name}, I only know a few things."
        if not capabilities.get("cards"):
            return {"parts": [{"text": text, "buttons": buttons}]}
        card: dict[str, Any] = {
            "title": "Photo received" if photo is not None else "Ask me about",
            "text": "We will look at it shortly." if photo is not None else "Hours and plans.",
            "buttons": buttons[:3],
        }
        if photo is not None:
            # The kept file, by the id the gateway gave: only this conversation's files go.
            card["image"] = {"kind": "image", "blob": photo["blob"]}
        part: dict[str, Any] = {"text": text, "cards": [card]}
        if capabilities.get("quick_replies"):
            part["quick_replies"] = [{"label": "Talk to a person", "value": "human"}]
        return {"parts": [part]}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(request.headers.get("X-FlowBiz-Signature", ""), body, self.secrets):
            self.rejected += 1
            return web.json_response({"error": "bad signature"}, status=401)
        payload = json.loads(body)
        self.calls.append({"payload": payload, "headers": dict(request.headers)})
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503)
        key = request.headers.get("X-FlowBiz-Idempotency-Key", "")
        if key not in self._answers:
            self._answers[key] = self.answer(payload)
            while len(self._answers) > 10_000:
                self._answers.popitem(last=False)
        return web.json_response(self._answers[key])


def main() -> None:
    secrets = [s for s in os.environ.get("FAQ_BOT_SECRET", "").split(",") if s]
    if not secrets:
        raise SystemExit("set FAQ_BOT_SECRET (two, comma-separated, during a rotation)")
    web.run_app(FaqBot(secrets).app(), host="127.0.0.1", port=8765)


if __name__ == "__main__":
    main()
