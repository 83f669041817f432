"""WhatsApp (Twilio) webhook ingest: the gateway vs twilio's ``RequestValidator`` in bare aiohttp.

Both get the same requests: complete inbound-message form bodies as Twilio posts them
(connectors/whatsapp/emulator.py's ``TwilioWebhookSender.inbound``), signed with the twilio
SDK over the public URL Twilio is configured with (``PUBLIC_URL`` + the webhook path; the
gateway's channel has that ``public_base_url``, so the loopback port does not matter).

- ``whatsapp.sdk``: ``python -m bench.cases.whatsapp PORT`` — read the form,
  ``RequestValidator.validate``, answer the empty TwiML the gateway answers.
- ``whatsapp.redis``: ``flowbiz serve --role web`` with a WhatsApp tenant on Redis: verify,
  parse, dedupe on the MessageSid, durable append, then the TwiML.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import urlencode

from aiohttp import web

from bench.cases import (
    RunContext,
    ThroughputCase,
    inbox_check,
    start_channel_gateway,
    start_module_server,
)
from bench.cases.http_api import CONVERSATIONS, TEXTS
from bench.procs import Server
from bench.wrk import RawRequest
from connectors.whatsapp.emulator import TwilioWebhookSender

ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-twilio-auth-token"  # noqa: S105 - the bench's own fake secret
OUR_NUMBER = "whatsapp:+14155238886"
PUBLIC_URL = "https://bench.example"
PATH = "/whatsapp/webhook"
ENV = {"BENCH_TWILIO_TOKEN": AUTH_TOKEN}
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response />'


def _sender() -> TwilioWebhookSender:
    # Only its payload builder and signer are used: no session, nothing posted.
    return TwilioWebhookSender(
        session=cast(Any, None),
        gateway_url=PUBLIC_URL,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        path=PATH,
    )


def signed_forms(count: int, tag: str) -> Iterator[RawRequest]:
    """``count`` inbound WhatsApp messages with unique MessageSids, signed over the public URL."""
    sender = _sender()
    prefix = f"{zlib.crc32(tag.encode()):08x}"
    for n in range(count):
        conv = n % CONVERSATIONS
        params = sender.inbound(
            from_=f"whatsapp:+1415{conv:07d}",
            to=OUR_NUMBER,
            body=TEXTS[n % len(TEXTS)],
            message_sid=f"SM{prefix}{n:024x}",
        )
        yield RawRequest(
            method="POST",
            target=PATH,
            headers=(
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Twilio-Signature", sender.sign(params)),
            ),
            body=urlencode(params).encode(),
        )


def channel_block() -> dict[str, object]:
    return {
        "kind": "whatsapp",
        "account_sid": ACCOUNT_SID,
        "auth_token": "env:BENCH_TWILIO_TOKEN",
        "from_number": OUR_NUMBER,
        "public_base_url": PUBLIC_URL,
        "status_callback": False,
    }


# -- the SDK baseline, run as its own process ----------------------------------------------------
def serve_sdk(port: int) -> None:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(AUTH_TOKEN)
    url = PUBLIC_URL + PATH

    async def webhook(request: web.Request) -> web.Response:
        form = await request.post()
        params = {key: str(form[key]) for key in form}
        if not validator.validate(url, params, request.headers.get("X-Twilio-Signature", "")):
            return web.Response(status=403)
        return web.Response(body=EMPTY_TWIML, content_type="text/xml")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(PATH, webhook)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def _start_sdk(ctx: RunContext) -> Server:
    return start_module_server(ctx, "whatsapp-sdk", "bench.cases.whatsapp")


def _start_redis(ctx: RunContext) -> Server:
    return start_channel_gateway(ctx, "whatsapp-redis", channel_block(), env=ENV)


def cases() -> list[ThroughputCase]:
    return [
        ThroughputCase(
            key="whatsapp.sdk",
            label="twilio RequestValidator in bare aiohttp",
            requests=signed_forms,
            start=_start_sdk,
            unique=False,
        ),
        ThroughputCase(
            key="whatsapp.redis",
            label="WhatsApp webhook ingest, redis",
            requests=signed_forms,
            start=_start_redis,
            baseline="whatsapp.sdk",
            check=inbox_check,
            needs=("redis-server",),
            rate_cap=12_000,
        ),
    ]


if __name__ == "__main__":
    serve_sdk(int(sys.argv[1]))
