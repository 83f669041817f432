"""Slack Events API ingest: the gateway vs a plain slack-bolt ``AsyncApp`` on the same events.

Both servers get byte-for-byte the same kind of request: a complete ``event_callback``
envelope around a DM ``message`` event (built with connectors/slack/emulator.py's payload
builders), signed with slack_sdk's ``SignatureVerifier`` exactly as Slack signs it. Slack's
replay window is five minutes and enforced by the SDK on both sides, so the request file is
signed just before the case runs.

- ``slack.bolt``: ``python -m bench.cases.slack PORT`` — an ``AsyncApp`` behind bolt's own
  aiohttp adapter (``slack_bolt.adapter.aiohttp``), one no-op ``message`` listener; bolt
  verifies the signature, parses the body, runs its middleware and acks 200. ``AsyncApp``
  calls ``auth.test`` once, on the first request, and caches the answer (the
  ``token_verification_enabled=False`` switch exists only on the sync ``App``); that one call
  is answered by a Slack emulator (connectors/slack/emulator.py) inside the same process,
  during the warm-up.
- ``slack.redis``: ``flowbiz serve --role web`` with a Slack tenant on Redis: verify, read the
  admission keys from the JSON, dedupe on the message's event id, durable append of the body
  as sent, then the 200 (the worker parses it later; ``--role web`` runs no worker).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

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
from connectors.slack.emulator import EmulatedWorkspace, event_callback, message_event

WORKSPACE = EmulatedWorkspace()
SIGNING_SECRET = "bench-slack-signing-secret"  # noqa: S105 - the bench's own fake secret
ENV = {"BENCH_SLACK_SIGNING_SECRET": SIGNING_SECRET, "BENCH_SLACK_BOT_TOKEN": WORKSPACE.bot_token}
PATH = "/slack/events"


def signed_events(count: int, tag: str) -> Iterator[RawRequest]:
    """``count`` DM message events with unique event ids, signed now (5-minute window)."""
    verifier = SignatureVerifier(SIGNING_SECRET)
    timestamp = str(int(time.time()))
    for n in range(count):
        conv = n % CONVERSATIONS
        event = message_event(
            text=TEXTS[n % len(TEXTS)],
            user=f"U{conv:08d}",
            channel=f"D{conv:08d}",
            team=WORKSPACE.team_id,
        )
        envelope = event_callback(
            event,
            team_id=WORKSPACE.team_id,
            bot_user_id=WORKSPACE.bot_user_id,
            event_id=f"Ev{tag.upper()}{n:010d}",
        )
        body = json.dumps(envelope, separators=(",", ":")).encode()
        signature = verifier.generate_signature(timestamp=timestamp, body=body)
        assert signature is not None  # always set for a str timestamp
        yield RawRequest(
            method="POST",
            target=PATH,
            headers=(
                ("Content-Type", "application/json"),
                ("X-Slack-Request-Timestamp", timestamp),
                ("X-Slack-Signature", signature),
            ),
            body=body,
        )


def channel_block() -> dict[str, object]:
    return {
        "kind": "slack",
        "team_id": WORKSPACE.team_id,
        "signing_secret": "env:BENCH_SLACK_SIGNING_SECRET",
        "bot_token": "env:BENCH_SLACK_BOT_TOKEN",
        "bot_user_id": WORKSPACE.bot_user_id,  # given, so no auth.test at start
        "bot_id": WORKSPACE.bot_id,
    }


# -- the bolt baseline, run as its own process ---------------------------------------------------
async def _bolt(port: int) -> None:
    from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
    from slack_bolt.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    from connectors.slack.emulator import SlackEmulator

    emulator = await SlackEmulator(workspaces=(WORKSPACE,)).start()
    client = AsyncWebClient(token=WORKSPACE.bot_token, base_url=emulator.api_url)
    bolt = AsyncApp(client=client, signing_secret=SIGNING_SECRET)

    @bolt.event("message")
    async def on_message() -> None:  # acked by bolt; nothing else to do
        return None

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(PATH, events)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await emulator.stop()


def _start_redis(ctx: RunContext) -> Server:
    return start_channel_gateway(ctx, "slack-redis", channel_block(), env=ENV)


def _start_bolt(ctx: RunContext) -> Server:
    return start_module_server(ctx, "slack-bolt", "bench.cases.slack")


def cases() -> list[ThroughputCase]:
    return [
        ThroughputCase(
            key="slack.bolt",
            label="slack-bolt AsyncApp (aiohttp adapter), ack only",
            requests=signed_events,
            start=_start_bolt,
            unique=False,
        ),
        ThroughputCase(
            key="slack.redis",
            label="slack events ingest, redis",
            requests=signed_events,
            start=_start_redis,
            baseline="slack.bolt",
            check=inbox_check,
            needs=("redis-server",),
            rate_cap=12_000,
        ),
    ]


if __name__ == "__main__":
    asyncio.run(_bolt(int(sys.argv[1])))
