"""(c) End to end per channel: a platform's signed webhook (or a mail) in, the rules agent, the
reply out to that platform's emulator, at a fixed rate.

For each of Slack, LINE, WhatsApp and email: one ``flowbiz serve --role all`` process on Redis
(pinned to the server core) with that channel alone, its API base URL pointing at the
platform's emulator (connectors/<channel>/emulator.py: a real server on loopback; for email
the aiosmtpd smarthost that receives the DKIM-signed replies). The emulator runs in the bench
process on the load core, beside an open-loop sender that replays the ingest case's signed
requests (bench/cases/<channel>.py: Events API callbacks, LINE webhooks, Twilio forms, mails
into the gateway's SMTP listener) at ``rate``/s. A message's latency runs from its *scheduled*
send time to its reply's arrival at the emulator: ``chat.postMessage``, LINE's reply (or
push) API, Twilio's Messages API, SMTP DATA at the smarthost. Warm-up, CPU and RSS are those of
the HTTP channel's row (:func:`bench.e2e.measure`).

Replies are matched to messages by where they go: the k-th reply to a Slack DM channel, a LINE
user or a WhatsApp number answers the k-th message accepted from it (a conversation is answered
in order, and the generators' 1,000 conversations each get a message every 1000/rate s); a
mail's reply names its message in In-Reply-To.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import aiosmtplib

from bench.cases import RequestMaker, RunContext, start_channel_gateway
from bench.cases import email as email_case
from bench.cases import line as line_case
from bench.cases import slack as slack_case
from bench.cases import whatsapp as whatsapp_case
from bench.e2e import E2EResult, Sent, measure, open_loop
from bench.procs import Server
from bench.wrk import RawRequest

IN_FLIGHT = 256  # unanswered requests at most (then sends queue; their latency still counts)
SETTLE_SECONDS = 0.5  # after the run: time for a second answer to anything to arrive
DKIM_ENV = "BENCH_DKIM_KEY"


@dataclass(slots=True)
class Platform:
    """A started emulator and what the gateway's channel needs to use it."""

    emulator: Any  # has ``async stop()``
    block: dict[str, Any]  # added to the ingest case's channel block
    env: dict[str, str]
    # The replies from index ``start`` on, in arrival order: (where it went, time.monotonic()).
    replies: Callable[[int], list[tuple[str, float]]]
    learn: Callable[[RawRequest], None] = lambda request: None  # before a request is sent
    notes: Callable[[], list[str]] = list  # after the run, for the table


@dataclass(frozen=True, slots=True)
class ChannelE2E:
    key: str  # e2e.<key>
    label: str
    requests: RequestMaker  # the ingest case's signed requests
    reply_key: Callable[[RawRequest], str]  # where the reply to a request goes
    platform: Callable[[], Awaitable[Platform]]  # start the emulator
    start: Callable[[RunContext, Platform], Server]  # start the gateway (role all, Redis)


# -- the four platforms ---------------------------------------------------------------------------
async def _slack() -> Platform:
    from connectors.slack.emulator import SlackEmulator

    emulator = await SlackEmulator(workspaces=(slack_case.WORKSPACE,)).start()
    return Platform(
        emulator=emulator,
        block={"api_base_url": emulator.api_url},
        env=slack_case.ENV,
        replies=lambda start: [(p.channel or "", p.received_at) for p in emulator.posted[start:]],
    )


async def _line() -> Platform:
    from connectors.line.emulator import LineEmulator

    emulator = await LineEmulator().start()
    emulator.add_channel(
        destination=line_case.DESTINATION,
        access_token=line_case.ENV["BENCH_LINE_TOKEN"],
        channel_secret=line_case.CHANNEL_SECRET,
    )

    def learn(request: RawRequest) -> None:  # the tokens LINE would have issued
        for event in json.loads(request.body)["events"]:
            emulator.learn_reply_token(
                event["replyToken"],
                destination=line_case.DESTINATION,
                chat_id=event["source"]["userId"],
            )

    def notes() -> list[str]:
        via = Counter(d.via for d in emulator.deliveries)
        return [f"{via['reply']} by reply token, {via['push']} by push (warm-up included)"]

    return Platform(
        emulator=emulator,
        block={"api_base_url": emulator.url},
        env=line_case.ENV,
        replies=lambda start: [(d.to, d.received_at) for d in emulator.deliveries[start:]],
        learn=learn,
        notes=notes,
    )


async def _whatsapp() -> Platform:
    from connectors.whatsapp.emulator import TwilioEmulator

    emulator = await TwilioEmulator({whatsapp_case.ACCOUNT_SID: whatsapp_case.AUTH_TOKEN}).start()
    return Platform(
        emulator=emulator,
        block={"api_base_url": emulator.url},
        env=whatsapp_case.ENV,
        replies=lambda start: [(m.to, m.received_at) for m in emulator.messages[start:]],
    )


_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
_IN_REPLY_TO = re.compile(rb"^In-Reply-To:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


def _header(pattern: re.Pattern[bytes], data: bytes) -> str:
    found = pattern.search(data.split(b"\r\n\r\n", 1)[0])
    return found.group(1).decode() if found else ""


async def _email() -> Platform:
    from connectors.email.emulator import (
        Smarthost,
        dkim_dns_record,
        dkim_verify,
        generate_dkim_key,
    )

    key = os.environ.get(DKIM_ENV) or (await asyncio.to_thread(generate_dkim_key)).decode()
    smarthost = await Smarthost().start()
    domain = email_case.ADDRESS.rsplit("@", 1)[1]

    def notes() -> list[str]:
        if not smarthost.received:
            return []
        verified = dkim_verify(smarthost.received[0].data, dns_record=dkim_dns_record(key.encode()))
        return [f"first reply's DKIM signature {'verified' if verified else 'NOT verified'}"]

    return Platform(
        emulator=smarthost,
        block={
            "api_base_url": f"smtp://127.0.0.1:{smarthost.port}",
            "dkim": {"selector": "bench", "domain": domain, "private_key": f"env:{DKIM_ENV}"},
        },
        env={DKIM_ENV: key},
        replies=lambda start: [
            (_header(_IN_REPLY_TO, m.data), m.received_at) for m in smarthost.received[start:]
        ],
        notes=notes,
    )


def _http_gateway(
    name: str, block: Callable[[], dict[str, object]]
) -> Callable[[RunContext, Platform], Server]:
    def start(ctx: RunContext, platform: Platform) -> Server:
        channel = block() | platform.block
        return start_channel_gateway(ctx, name, channel, env=platform.env, role="all")

    return start


def _email_gateway(ctx: RunContext, platform: Platform) -> Server:
    return email_case.start_gateway(
        ctx, "e2e-email", role="all", block=platform.block, env=platform.env
    )


CHANNELS = (
    ChannelE2E(
        key="slack",
        label="Slack event -> chat.postMessage",
        requests=slack_case.signed_events,
        reply_key=lambda r: str(json.loads(r.body)["event"]["channel"]),
        platform=_slack,
        start=_http_gateway("e2e-slack", slack_case.channel_block),
    ),
    ChannelE2E(
        key="line",
        label="LINE webhook -> reply API",
        requests=line_case.signed_webhooks,
        reply_key=lambda r: str(json.loads(r.body)["events"][0]["source"]["userId"]),
        platform=_line,
        start=_http_gateway("e2e-line", line_case.channel_block),
    ),
    ChannelE2E(
        key="whatsapp",
        label="Twilio webhook -> Messages API",
        requests=whatsapp_case.signed_forms,
        reply_key=lambda r: parse_qs(r.body.decode())["From"][0],
        platform=_whatsapp,
        start=_http_gateway("e2e-whatsapp", whatsapp_case.channel_block),
    ),
    ChannelE2E(
        key="email",
        label="SMTP in -> DKIM-signed reply out",
        requests=email_case.mails,
        reply_key=lambda r: _header(_MESSAGE_ID, r.body),
        platform=_email,
        start=_email_gateway,
    ),
)
BY_KEY = {c.key: c for c in CHANNELS}


# -- sending and matching -------------------------------------------------------------------------
Wire = Callable[[RawRequest], Awaitable[bool]]  # deliver one request: accepted (2xx, 250)?


@asynccontextmanager
async def _http_wire(url: str) -> AsyncIterator[Wire]:
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(request: RawRequest) -> bool:
            try:
                async with session.post(
                    url + request.target, data=request.body, headers=dict(request.headers)
                ) as response:
                    await response.read()
                    return 200 <= response.status < 300
            except aiohttp.ClientError:
                return False

        yield send


@asynccontextmanager
async def _smtp_wire(port: int) -> AsyncIterator[Wire]:
    """Mails over persistent connections, as many as are busy at once (a new one only when
    all are in a transaction), like a sending MTA's pool."""
    idle: list[aiosmtplib.SMTP] = []

    async def send(request: RawRequest) -> bool:
        if idle:
            client = idle.pop()
        else:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30, start_tls=False)
        try:
            if not client.is_connected:
                await client.connect()
            await client.sendmail(dict(request.headers)["From"], [request.target], request.body)
        except aiosmtplib.SMTPResponseException:
            idle.append(client)
            return False
        except (aiosmtplib.SMTPException, OSError):
            client.close()
            return False
        idle.append(client)
        return True

    try:
        yield send
    finally:
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


@dataclass(slots=True)
class _Ledger:
    """Pairs the k-th message accepted for a reply key with the k-th reply that went there."""

    replies: Callable[[int], list[tuple[str, float]]]
    accepted: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    arrived: dict[str, float] = field(default_factory=dict)  # "key#k" -> perf_counter time
    seen: int = 0

    def accept(self, key: str) -> str:
        self.accepted[key] += 1
        return f"{key}#{self.accepted[key] - 1}"

    def update(self) -> int:
        """Read the replies that arrived since the last call; how many."""
        new = self.replies(self.seen)
        self.seen += len(new)
        shift = time.perf_counter() - time.monotonic()  # the same clock on Linux: ~0
        for key, at in new:
            self.arrived[f"{key}#{self.answered[key]}"] = at + shift
            self.answered[key] += 1
        return len(new)

    async def wait(self, ids: Sequence[str], timeout: float) -> Mapping[str, float]:
        """Until every id is answered, or ``timeout`` s went by without a new reply."""
        missing = list(ids)
        quiet_since = time.perf_counter()
        while True:
            if self.update():
                quiet_since = time.perf_counter()
            while missing and missing[-1] in self.arrived:
                missing.pop()
            if not missing or time.perf_counter() - quiet_since > timeout:
                return self.arrived
            await asyncio.sleep(0.01)

    def extra(self) -> int:
        return sum(max(0, n - self.accepted[key]) for key, n in self.answered.items())


async def _run(
    ctx: RunContext, channel: ChannelE2E, *, rate: float, seconds: float, profile: Path | None
) -> tuple[E2EResult, list[str]]:
    platform = await channel.platform()
    try:
        server = await asyncio.to_thread(channel.start, ctx, platform)
        try:
            smtp = server.extra.get("smtp_port")
            wire = _smtp_wire(int(smtp)) if smtp else _http_wire(server.url)
            ledger = _Ledger(platform.replies)
            async with wire as deliver:

                async def send(tag: str, count: int) -> Sent:
                    made = list(channel.requests(count, tag))  # signed now, before the clock
                    keys = [channel.reply_key(r) for r in made]
                    for r in made:
                        platform.learn(r)
                    sent = Sent()

                    async def fire(n: int, scheduled: float) -> None:
                        if not await deliver(made[n]):
                            sent.failed += 1
                            return
                        sent.ack_ms.append((time.perf_counter() - scheduled) * 1e3)
                        sent.scheduled[ledger.accept(keys[n])] = scheduled

                    await open_loop(count, rate, fire, in_flight=IN_FLIGHT, lead=0.05)
                    return sent

                result = await measure(
                    server, send, ledger.wait, rate=rate, seconds=seconds, profile=profile
                )
            await asyncio.sleep(SETTLE_SECONDS)
            ledger.update()
        finally:
            await asyncio.to_thread(server.stop)
    finally:
        await platform.emulator.stop()
    return replace(result, extra_replies=ledger.extra()), platform.notes()


def fixed_rate(
    ctx: RunContext,
    channel: ChannelE2E,
    *,
    rate: float,
    seconds: float,
    profile: Path | None = None,
) -> tuple[E2EResult, list[str]]:
    """One channel end to end at ``rate`` messages/s: the result and notes for the table."""
    return asyncio.run(_run(ctx, channel, rate=rate, seconds=seconds, profile=profile))
