"""``flowbiz simulate slack …``: send a signed Slack event (or command) to a running gateway.

The replies go to whatever ``api_base_url`` the gateway's Slack channel points at (Slack,
or a ``SlackEmulator``); this command shows what the gateway answered to Slack's request.

A retry is what Slack sends: the first attempt's payload again, byte for byte apart from
the retry headers. So ``--retry-num`` needs the ``--event-id`` and ``--ts`` the first
send printed; the event's time is derived from its ``ts`` so both sends carry the same one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from typing import Any

import aiohttp

from connectors.slack.emulator import (
    SlackSender,
    app_mention_event,
    event_callback,
    message_event,
    slash_command_fields,
)

__all__ = ["add_simulator"]

_TS = re.compile(r"[0-9]{1,12}\.[0-9]{6}")


def add_simulator(channels: Any) -> None:
    slack = channels.add_parser("slack", help="send a signed Slack event to the gateway")
    slack.add_argument("--url", default="http://127.0.0.1:8080")
    slack.add_argument("--team", default="T0FLOWBIZ", help="team_id (selects the tenant)")
    slack.add_argument("--channel", default="D0DIRECT", help="D… for a DM, C… for a channel")
    slack.add_argument("--user", default="U0CUSTOMER")
    slack.add_argument("--bot-user", default="U0FLOWBOT", help="the bot's user id, for --mention")
    slack.add_argument("--mention", action="store_true", help="send an app_mention")
    slack.add_argument("--thread-ts", help="reply inside this thread")
    slack.add_argument("--command", help="send a slash command (e.g. /flowbiz) instead")
    slack.add_argument("--response-url", default="https://hooks.slack.com/commands/T/1/x")
    slack.add_argument("--event-id", help="Slack's event_id (reuse it to test dedupe)")
    slack.add_argument(
        "--ts", type=_slack_ts, help="the message's ts (a retry repeats the first send's)"
    )
    slack.add_argument(
        "--retry-num",
        type=int,
        help="send as Slack's n-th retry of the send with this --event-id and --ts",
    )
    slack.add_argument(
        "--secret-env", default="SLACK_SIGNING_SECRET", help="variable holding the secret"
    )
    slack.add_argument("text")
    slack.set_defaults(func=lambda a: asyncio.run(_simulate(a)))


def _slack_ts(value: str) -> str:
    if not _TS.fullmatch(value):
        raise argparse.ArgumentTypeError(f"not a Slack ts (seconds.micros): {value!r}")
    return value


async def _simulate(args: argparse.Namespace) -> int:
    if args.retry_num is not None and not args.command and not (args.event_id and args.ts):
        print("a retry repeats the first send: give the --event-id and --ts it printed")
        return 2
    secret = os.environ.get(args.secret_env)
    if not secret:
        print(f"set {args.secret_env} to the Slack app's signing secret")
        return 2
    async with aiohttp.ClientSession() as session:
        sender = SlackSender(session=session, gateway_url=args.url, signing_secret=secret)
        if args.command:
            fields = slash_command_fields(
                command=args.command,
                text=args.text,
                response_url=args.response_url,
                team_id=args.team,
                channel_id=args.channel,
                user_id=args.user,
            )
            status, body = await sender.command(fields)
            print(f"-> {args.command} {status} {body!r}")
            return 0 if status < 300 else 1
        if args.mention:
            event = app_mention_event(
                text=args.text,
                bot_user_id=args.bot_user,
                user=args.user,
                channel=args.channel,
                ts=args.ts,
                thread_ts=args.thread_ts,
                team=args.team,
            )
        else:
            event = message_event(
                text=args.text,
                user=args.user,
                channel=args.channel,
                channel_type="im" if args.channel.startswith("D") else "channel",
                ts=args.ts,
                thread_ts=args.thread_ts,
                team=args.team,
            )
        envelope = event_callback(
            event,
            team_id=args.team,
            bot_user_id=args.bot_user,
            event_id=args.event_id,
            event_time=int(float(event["ts"])),
        )
        status, body = await sender.event(envelope, retry_num=args.retry_num)
        again = f"--event-id {envelope['event_id']} --ts {event['ts']}"
        print(f"-> {envelope['event_id']} {status} {body!r}  (to retry: {again})")
        print(json.dumps({"event": {k: event[k] for k in ("type", "channel", "ts")}}))
        return 0 if status < 300 else 1
