"""``flowbiz simulate CHANNEL …``: send signed, platform-shaped traffic to a gateway.

Each connector package may ship ``cli.py`` with ``add_simulator(subparsers)``; the HTTP API
channel's simulator lives here as the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
from typing import Any

import aiohttp

from connectors.http_api.emulator import HttpChannelClient
from connectors.registry import CONNECTORS

__all__ = ["add_simulators"]


def add_simulators(channels: Any) -> None:
    http = channels.add_parser("http", help="post a message to the HTTP API channel")
    http.add_argument("--url", default="http://127.0.0.1:8080")
    http.add_argument("--tenant", required=True)
    http.add_argument("--conversation", required=True)
    http.add_argument("--user", default="user-1")
    http.add_argument("--event-id")
    http.add_argument(
        "--secret-env", default="FLOWBIZ_SIGNING_SECRET", help="variable holding the secret"
    )
    http.add_argument("--wait", type=float, default=10, help="seconds to wait for replies")
    http.add_argument("text")
    http.set_defaults(func=lambda a: asyncio.run(_simulate_http(a)))
    for kind in CONNECTORS:
        if kind == "http":
            continue
        module_name = CONNECTORS[kind].partition(":")[0] + ".cli"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # that connector ships no simulator (yet)
            raise
        module.add_simulator(channels)


async def _simulate_http(args: argparse.Namespace) -> int:
    secret = os.environ.get(args.secret_env)
    if not secret:
        print(f"set {args.secret_env} to the channel's signing secret")
        return 2
    async with aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=args.url, tenant=args.tenant, signing_secret=secret
        )
        status, body = await client.send(
            conversation_id=args.conversation,
            text=args.text,
            user_id=args.user,
            event_id=args.event_id,
        )
        print(f"-> {status} {json.dumps(body)}")
        if status >= 300:
            return 1
        replies = await client.replies(conversation_id=args.conversation, wait=args.wait)
        for reply in replies["replies"]:
            print(f"<- {reply['persona']['display_name']}: {reply['text']}")
    return 0
