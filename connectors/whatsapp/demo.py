"""Demo scene: a customer writes to Acme on WhatsApp; Twilio is the local emulator."""

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
_PHOTO = f"https://api.twilio.com/2010-04-01/Accounts/{_ACCOUNT_SID}/Messages/MM1/Media/ME1"

# (what the customer does, text shown, keyword arguments for the sender)
_TURNS: list[tuple[str, dict[str, Any]]] = [
    ("hello", {"body": "hello"}),
    ("[taps: Opening hours]", {"button": ("opening hours", "Opening hours")}),
    (
        "[photo] where is my order #1042?",
        {"body": "where is my order #1042?", "media": [(_PHOTO, "image/jpeg")]},
    ),
]


class Scene:
    title = "WhatsApp via Twilio (signed webhook → gateway → Messages API emulator)"

    def __init__(self) -> None:
        self.emulator: TwilioEmulator | None = None

    async def prepare(self, config: dict[str, Any]) -> None:
        os.environ.setdefault(_TOKEN_ENV, "demo-twilio-auth-token")
        self.emulator = await TwilioEmulator(
            accounts={_ACCOUNT_SID: os.environ[_TOKEN_ENV]}
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

    async def _next_reply(self, seen: int) -> EmulatedMessage | None:
        assert self.emulator is not None
        try:
            messages = await self.emulator.wait_for(seen + 1, timeout=10)
        except TimeoutError:
            return None
        return messages[seen]

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
            for shown, fields in _TURNS:
                transcript.customer("María (WhatsApp)", shown)
                seen = len(emulator.messages)
                status, params = await sender.send(
                    from_=_CUSTOMER, to=_SENDER, profile_name="María", **fields
                )
                first = first or params
                reply = await self._next_reply(seen)
                if reply is None:
                    transcript.note(f"HTTP {status}; no reply reached the Messages API")
                    return False
                transcript.bot(
                    "Acme on WhatsApp",
                    reply.body or "",
                    note=f"webhook HTTP {status}, empty TwiML; sent as {reply.sid[:10]}…",
                )
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
        return duplicate_replies == 0 and rejected == 0

    async def close(self) -> None:
        if self.emulator is not None:
            await self.emulator.stop()
