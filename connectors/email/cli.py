"""``flowbiz simulate email …``: send a real message into a running gateway's SMTP listener."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from connectors.email.emulator import MailSender

__all__ = ["add_simulator"]


def add_simulator(channels: Any) -> None:
    email = channels.add_parser("email", help="send a message into the SMTP listener")
    email.add_argument("--host", default="127.0.0.1", help="the gateway's SMTP listener host")
    email.add_argument("--port", type=int, default=2525, help="the gateway's SMTP listener port")
    email.add_argument("--from", dest="from_addr", default="jane@customer.example")
    email.add_argument("--name", default="Jane Doe", help="the sender's display name")
    email.add_argument("--to", required=True, help="one of the channel's addresses")
    email.add_argument("--subject", default="Hello")
    email.add_argument("--message-id", help="reuse a Message-ID (to try a redelivery)")
    email.add_argument("--in-reply-to", help="the Message-ID this answers (threads it)")
    email.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="an extra header, e.g. 'Auto-Submitted: auto-replied' (repeatable)",
    )
    email.add_argument("--envelope-from", help="MAIL FROM, if not the From address ('' = <>)")
    email.add_argument("text", nargs="?", default="hello")
    email.set_defaults(func=lambda a: asyncio.run(_simulate(a)))


async def _simulate(args: argparse.Namespace) -> int:
    sender = MailSender(args.host, args.port)
    headers = {}
    for item in args.header:
        name, _, value = item.partition(":")
        headers[name.strip()] = value.strip()
    message = sender.compose(
        from_addr=args.from_addr,
        from_name=args.name,
        to=args.to,
        subject=args.subject,
        text=args.text,
        message_id=args.message_id,
        in_reply_to=args.in_reply_to,
        references=[args.in_reply_to] if args.in_reply_to else [],
        headers=headers,
    )
    try:
        code, reply = await sender.send(message, mail_from=args.envelope_from)
    except OSError as exc:
        print(f"cannot reach {args.host}:{args.port}: {exc.strerror or exc}")
        return 2
    print(f"Message-ID: {message['Message-ID']}")
    print(f"-> {code} {reply}")
    return 0 if code == 250 else 1
