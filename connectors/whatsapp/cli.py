"""``flowbiz simulate whatsapp …``: post one signed Twilio WhatsApp webhook to a gateway."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

import aiohttp

from connectors.whatsapp.emulator import TwilioWebhookSender

__all__ = ["add_simulator"]


def add_simulator(subparsers: Any) -> None:
    sim = subparsers.add_parser(
        "whatsapp", help="post a signed Twilio WhatsApp webhook (as Twilio would)"
    )
    sim.add_argument("--url", default="http://127.0.0.1:8080", help="where the gateway listens")
    sim.add_argument(
        "--public-url",
        help="the base URL configured in Twilio, which is what gets signed (default: --url)",
    )
    sim.add_argument(
        "--via-proxy",
        action="store_true",
        help="add X-Forwarded-Proto/Host from --public-url, as a TLS-terminating proxy would",
    )
    sim.add_argument("--account-sid", required=True)
    sim.add_argument(
        "--token-env", default="TWILIO_AUTH_TOKEN", help="variable holding the Auth Token"
    )
    sim.add_argument("--from", dest="from_", default="whatsapp:+14155550100")
    sim.add_argument("--to", required=True, help="the tenant's sender, whatsapp:+…")
    sim.add_argument("--messaging-service-sid")
    sim.add_argument("--profile-name", default="Alice")
    sim.add_argument("--message-sid", help="reuse a MessageSid to simulate Twilio's retry")
    sim.add_argument(
        "--media", action="append", default=[], metavar="URL[,TYPE]", help="repeatable"
    )
    sim.add_argument("--button", metavar="PAYLOAD", help="send a quick-reply tap")
    sim.add_argument("--list-pick", metavar="ID", help="send a list picker's pick")
    sim.add_argument(
        "--location", metavar="LAT,LNG[,LABEL]", help="share a place (Latitude/Longitude/Label)"
    )
    sim.add_argument("text", nargs="?", default="")
    sim.set_defaults(func=lambda a: asyncio.run(_simulate(a)))


async def _simulate(args: argparse.Namespace) -> int:
    token = os.environ.get(args.token_env)
    if not token:
        print(f"set {args.token_env} to the channel's Twilio Auth Token")
        return 2
    media = []
    for item in args.media:
        url, _, content_type = item.partition(",")
        media.append((url, content_type or "image/jpeg"))
    place = None
    if args.location:
        latitude, _, rest = args.location.partition(",")
        longitude, _, label = rest.partition(",")
        place = (latitude, longitude, "", label)
    async with aiohttp.ClientSession() as session:
        sender = TwilioWebhookSender(
            session=session,
            gateway_url=args.url,
            account_sid=args.account_sid,
            auth_token=token,
            public_url=args.public_url,
            via_proxy=args.via_proxy,
        )
        params = sender.inbound(
            from_=args.from_,
            to=args.to,
            body=args.text,
            profile_name=args.profile_name,
            message_sid=args.message_sid,
            media=media,
            button=(args.button, args.button) if args.button else None,
            messaging_service_sid=args.messaging_service_sid,
            list_pick=(args.list_pick, args.list_pick) if args.list_pick else None,
            location=place,
        )
        status, body, content_type = await sender.post(params)
    print(f"signed over {sender.signed_url}")
    print(f"-> {status} {content_type} {body}")
    print(f"MessageSid {params['MessageSid']} (pass --message-sid to send it again)")
    return 0 if status < 300 else 1
