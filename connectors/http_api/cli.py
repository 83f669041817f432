"""``flowbiz simulate http``: post one signed message to the HTTP API channel and print the
replies."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

import aiohttp

from connectors.http_api.emulator import HttpChannelClient

__all__ = ["add_simulator"]


def add_simulator(channels: Any) -> None:
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
    http.set_defaults(func=lambda a: asyncio.run(_simulate(a)))


async def _simulate(args: argparse.Namespace) -> int:
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
