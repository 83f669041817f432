"""Demo scene: a customer writes to Acme on WhatsApp; Twilio is the local emulator.

The customer says hello (answered with quick-reply buttons, a Content resource), taps one,
sends a photo (fetched from the emulator's media resource with the account's credentials,
kept, and answered with a ``twilio/card`` whose image Twilio fetches back from the
gateway's signed link), and asks about an order. Each reply is printed from what the
emulator received, Content resources filled in with their variables.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

from connectors.whatsapp.emulator import EmulatedMessage, TwilioEmulator, TwilioWebhookSender
from gateway.demo_scene import Transcript

__all__ = ["Scene"]

_ACCOUNT_SID = "AC" + "de" * 16
_TOKEN_ENV = "ACME_TWILIO_AUTH_TOKEN"  # noqa: S105 - the variable's name, not a credential
_SENDER = "whatsapp:+14155238886"
_PUBLIC_URL = "https://wa.acme.example"  # what the Twilio console would be configured with
_CUSTOMER = "whatsapp:+34600123456"
# A small PNG (its magic number is what the gateway judges the type by).
_PHOTO = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
_PHOTO_TURN = "[photo]"

# (what the customer does, keyword arguments for the sender)
_TURNS: list[tuple[str, dict[str, Any]]] = [
    ("hello", {"body": "hello"}),
    ("[taps: Opening hours]", {"button": ("opening hours", "Opening hours")}),
    (_PHOTO_TURN, {"body": ""}),
    ("where is my order #1042?", {"body": "where is my order #1042?"}),
]


def shown(message: EmulatedMessage) -> str:
    """What the customer sees of one message the Messages API accepted."""
    if not message.content:
        if message.media_urls:
            return f"[media] {message.media_urls[0].split('?')[0]}"
        return message.body or ""
    kind, body = next(iter(message.content.items()))
    if kind == "twilio/card":
        lines = [body.get("title", "")]
        lines += [f"[image] {url.split('?')[0]}" for url in body.get("media", ())]
    else:
        lines = [body.get("body", "")]
    choices = [a.get("title", "") for a in body.get("actions", ())]
    choices += [i.get("item", "") for i in body.get("items", ())]
    if choices:
        lines.append(" ".join(f"[{c}]" for c in choices))
    return "\n".join(lines)


class Scene:
    title = "WhatsApp via Twilio (signed webhook → gateway → Messages API emulator)"

    def __init__(self) -> None:
        self.emulator: TwilioEmulator | None = None

    async def prepare(self, config: dict[str, Any]) -> None:
        os.environ.setdefault(_TOKEN_ENV, "demo-twilio-auth-token")
        self.emulator = await TwilioEmulator(
            accounts={_ACCOUNT_SID: os.environ[_TOKEN_ENV]}, fetch_media=True
        ).start()
        block = {
            "kind": "whatsapp",
            "account_sid": _ACCOUNT_SID,
            "auth_token": f"env:{_TOKEN_ENV}",
            "from_number": _SENDER,
            "public_base_url": _PUBLIC_URL,
            "api_base_url": self.emulator.url,
            "templates": {
                "core": {"content_sid": "HX" + "0d" * 16, "variables": {"1": "$profile_name"}}
            },
        }
        for tenant in config["tenants"]:
            if tenant["id"] == "acme":
                tenant.setdefault("channels", []).append(block)

    async def _next_reply(self, seen: int) -> list[EmulatedMessage]:
        """The messages of one reply: the first, then whatever follows it closely."""
        assert self.emulator is not None
        try:
            await self.emulator.wait_for(seen + 1, timeout=10)
        except TimeoutError:
            return []
        count = 0
        while count != len(self.emulator.messages):
            count = len(self.emulator.messages)
            await asyncio.sleep(0.3)
        return self.emulator.messages[seen:]

    async def play(self, gateway_url: str, transcript: Transcript) -> bool:
        emulator = self.emulator
        assert emulator is not None
        emulator.gateway_url = gateway_url  # status callbacks reach the gateway "behind" its URL
        async with aiohttp.ClientSession() as session:
            sender = TwilioWebhookSender(
                session=session,
                gateway_url=gateway_url,
                account_sid=_ACCOUNT_SID,
                auth_token=os.environ[_TOKEN_ENV],
                public_url=_PUBLIC_URL,
            )
            first: dict[str, str] | None = None
            cards = 0
            for said, fields in _TURNS:
                transcript.customer("María (WhatsApp)", said)
                seen = len(emulator.messages)
                if said == _PHOTO_TURN:
                    url = emulator.rich.seed_media(_ACCOUNT_SID, _PHOTO, "image/png")
                    fields = {**fields, "media": [(url, "image/png")]}
                status, params = await sender.send(
                    from_=_CUSTOMER, to=_SENDER, profile_name="María", **fields
                )
                first = first or params
                replies = await self._next_reply(seen)
                if not replies:
                    transcript.note(f"HTTP {status}; no reply reached the Messages API")
                    return False
                for reply in replies:
                    kind = next(iter(reply.content), "text") if reply.content else "text"
                    cards += kind == "twilio/card"
                    transcript.bot(
                        "Acme on WhatsApp",
                        shown(reply),
                        note=f"{kind}, {(reply.content_sid or reply.sid)[:10]}…",
                    )
            asked = len(emulator.rich.media_requests)
            at_host = emulator.rich.media_host_requests
            unauthenticated = all(r.authorization is None for r in at_host)
            transcript.note(
                f"the photo: {asked} authenticated GET of its Twilio media URL, "
                f"{len(at_host)} redirect to the media host (without the token: "
                f"{'yes' if unauthenticated else 'NO'}), kept by the gateway"
            )
            fetched_ok = asked == 1 and len(at_host) == 1 and unauthenticated
            assert first is not None
            # Twilio retries a webhook whose connection failed: same MessageSid, no new reply.
            seen = len(emulator.messages)
            status, _, _ = await sender.post(first)
            await asyncio.sleep(0.5)
            duplicate_replies = len(emulator.messages) - seen
            transcript.note(
                f"Twilio re-sent MessageSid {first['MessageSid'][:10]}…: HTTP {status}, "
                f"{duplicate_replies} extra replies"
            )
            await asyncio.sleep(0.3)  # let the last status callbacks arrive
            reads = sum(1 for c in emulator.callbacks if c.params["MessageStatus"] == "read")
            rejected = sum(1 for c in emulator.callbacks if c.http_status != 200)
            transcript.note(
                f"{len(emulator.callbacks)} signed status callbacks stored as receipts "
                f"({reads} read, {rejected} refused)"
            )
        return duplicate_replies == 0 and rejected == 0 and cards == 1 and fetched_ok

    async def close(self) -> None:
        if self.emulator is not None:
            await self.emulator.stop()
