"""LINE webhook ingest: the gateway vs the SDK's bare ``WebhookParser`` in a bare aiohttp handler.

Both get the same requests: one complete text-message event per webhook (built by
connectors/line/emulator.py's ``LineWebhookSender``, every field the SDK requires), signed
with the channel secret (``X-Line-Signature``). LINE signatures carry no timestamp, so the
files need no refreshing.

- ``line.sdk``: ``python -m bench.cases.line PORT`` — read the body, ``WebhookParser.parse``
  (signature check and event models), answer 200 ``{}``.
- ``line.redis``: ``flowbiz serve --role web`` with a LINE tenant on Redis: verify, parse,
  dedupe on ``webhookEventId``, durable append, then the 200. Profile fetching and the
  loading indicator are off: both are calls to LINE's API, not part of ingest.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, cast

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
from connectors.line.emulator import LineWebhookSender, sign_body

DESTINATION = "U" + "b" * 32
CHANNEL_SECRET = "bench-line-channel-secret"  # noqa: S105 - the bench's own fake secret
ENV = {"BENCH_LINE_SECRET": CHANNEL_SECRET, "BENCH_LINE_TOKEN": "bench-line-access-token"}
PATH = "/line/webhook"


def _sender() -> LineWebhookSender:
    # Only its event builders and body encoder are used: no session, nothing posted.
    return LineWebhookSender(
        session=cast(Any, None),
        gateway_url="",
        destination=DESTINATION,
        channel_secret=CHANNEL_SECRET,
    )


def signed_webhooks(count: int, tag: str) -> Iterator[RawRequest]:
    """``count`` webhooks of one text event each; webhookEventIds are unique ULIDs."""
    sender = _sender()
    for n in range(count):
        conv = n % CONVERSATIONS
        event = sender.text(TEXTS[n % len(TEXTS)], user_id=f"U{conv:032x}")
        body = sender.body([event])
        yield RawRequest(
            method="POST",
            target=PATH,
            headers=(
                ("Content-Type", "application/json; charset=utf-8"),
                ("X-Line-Signature", sign_body(CHANNEL_SECRET, body)),
            ),
            body=body,
        )


def channel_block() -> dict[str, object]:
    return {
        "kind": "line",
        "destination": DESTINATION,
        "channel_secret": "env:BENCH_LINE_SECRET",
        "channel_access_token": "env:BENCH_LINE_TOKEN",
        "fetch_profiles": False,
        "loading_indicator": False,
    }


# -- the SDK baseline, run as its own process ----------------------------------------------------
def serve_sdk(port: int) -> None:
    from linebot.v3.exceptions import InvalidSignatureError
    from linebot.v3.webhook import WebhookParser

    parser = WebhookParser(CHANNEL_SECRET)

    async def webhook(request: web.Request) -> web.Response:
        body = await request.text()
        try:
            parser.parse(body, request.headers.get("X-Line-Signature", ""))
        except InvalidSignatureError:
            return web.Response(status=400)
        return web.json_response({})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(PATH, webhook)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def _start_redis(ctx: RunContext) -> Server:
    return start_channel_gateway(ctx, "line-redis", channel_block(), env=ENV)


def _start_sdk(ctx: RunContext) -> Server:
    return start_module_server(ctx, "line-sdk", "bench.cases.line")


def cases() -> list[ThroughputCase]:
    return [
        ThroughputCase(
            key="line.sdk",
            label="LINE SDK WebhookParser.parse in bare aiohttp",
            requests=signed_webhooks,
            start=_start_sdk,
            unique=False,
        ),
        ThroughputCase(
            key="line.redis",
            label="LINE webhook ingest, redis",
            requests=signed_webhooks,
            start=_start_redis,
            baseline="line.sdk",
            check=inbox_check,
            needs=("redis-server",),
            rate_cap=12_000,
        ),
    ]


if __name__ == "__main__":
    serve_sdk(int(sys.argv[1]))
