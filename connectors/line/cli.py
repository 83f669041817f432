"""``flowbiz simulate line …``: post a signed LINE webhook to a running gateway."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

import aiohttp

from connectors.line.emulator import LineWebhookSender, sign_body

__all__ = ["add_simulator"]


def add_simulator(channels: Any) -> None:
    line = channels.add_parser("line", help="post a signed LINE webhook event")
    line.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's base URL")
    line.add_argument("--path", default="/line/webhook")
    line.add_argument("--destination", required=True, help="the bot's user id (U + 32 hex)")
    line.add_argument("--user", default="U" + "0" * 32, help="the sender's LINE user id")
    line.add_argument("--group", help="send from this group id instead of a 1:1 chat")
    line.add_argument("--room", help="send from this room id instead of a 1:1 chat")
    line.add_argument(
        "--event",
        choices=["text", "follow", "unfollow", "postback", "verify"],
        default="text",
    )
    line.add_argument("--event-id", help="reuse a webhookEventId (to try a redelivery)")
    line.add_argument(
        "--redelivery", action="store_true", help="mark as deliveryContext redelivery"
    )
    line.add_argument(
        "--secret-env", default="LINE_CHANNEL_SECRET", help="variable holding the channel secret"
    )
    line.add_argument("--print-body", action="store_true", help="print the signed body")
    line.add_argument("text", nargs="?", default="hello", help="message text or postback data")
    line.set_defaults(func=lambda a: asyncio.run(_simulate(a)))


async def _simulate(args: argparse.Namespace) -> int:
    secret = os.environ.get(args.secret_env)
    if not secret:
        print(f"set {args.secret_env} to the channel secret")
        return 2
    async with aiohttp.ClientSession() as session:
        sender = LineWebhookSender(
            session=session,
            gateway_url=args.url.rstrip("/"),
            destination=args.destination,
            channel_secret=secret,
            path=args.path,
        )
        events: list[dict[str, Any]] = []
        if args.event == "text":
            events = [
                sender.text(args.text, user_id=args.user, group_id=args.group, room_id=args.room)
            ]
        elif args.event == "follow":
            events = [sender.follow(user_id=args.user)]
        elif args.event == "unfollow":
            events = [sender.unfollow(user_id=args.user)]
        elif args.event == "postback":
            events = [sender.postback(args.text, user_id=args.user)]
        for event in events:
            if args.event_id:
                event["webhookEventId"] = args.event_id
            if args.redelivery:
                event["deliveryContext"] = {"isRedelivery": True}
        body = sender.body(events)
        if args.print_body:
            print(body.decode())
        status, text = await sender.post_raw(body, signature=sign_body(secret, body))
        ids = [e["webhookEventId"] for e in events]
        print(f"-> {status} {text.strip() or '(empty)'} webhookEventId={json.dumps(ids)}")
        # The reply token is not one LINE issued, so the gateway's reply falls back to a push.
    return 0 if status == 200 else 1
