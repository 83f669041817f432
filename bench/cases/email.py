"""Email: the gateway's SMTP listener ingest vs an aiosmtpd server whose handler does nothing.

wrk does not speak SMTP: both cases are driven by ``bench.smtpload`` (aiosmtplib, a fixed
number of persistent connections with one transaction in flight on each) in its own process
on the load core. Both get the same mails: plain-text customer mails as a mail client
writes them (connectors/email/emulator.py's ``MailSender.compose``), each with its own
Message-ID, over 1,000 senders.

- ``email.aiosmtpd``: ``python -m bench.cases.email PORT`` — aiosmtpd's ``SMTPServerProtocol``
  with the gateway's listener options, no hooks but ``handle_DATA`` answering 250.
- ``email.redis``: ``flowbiz serve --role web`` with an email tenant whose SMTP listener is
  on a loopback port: RCPT checked against the configured address, the mail parsed and
  screened (loops, auto-replies), deduped on its Message-ID and appended on Redis before
  the 250.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench.cases import RunContext, ThroughputCase, inbox_check, start_channel_gateway
from bench.cases.http_api import CONVERSATIONS, TEXTS
from bench.procs import Server, free_port, python_module, spawn
from bench.wrk import RawRequest
from connectors.email.emulator import MailSender

ADDRESS = "support@bench.example"
_ID_MARK = b"BENCHMESSAGEID"
_FROM_MARK = b"benchsender"


def _template(text: str) -> bytes:
    message = MailSender(host="127.0.0.1", port=0).compose(
        from_addr=f"{_FROM_MARK.decode()}@customer.example",
        from_name="Bench Customer",
        to=ADDRESS,
        subject="A question",
        text=text,
        message_id=f"<{_ID_MARK.decode()}@customer.example>",
    )
    return message.as_bytes()


def mails(count: int, tag: str) -> Iterator[RawRequest]:
    """``count`` mails from 1,000 senders, each with a unique Message-ID."""
    templates = [_template(text) for text in TEXTS]
    for n in range(count):
        conv = n % CONVERSATIONS
        sender = f"customer{conv:04d}"
        data = (
            templates[n % len(templates)]
            .replace(_ID_MARK, f"{tag}.{n}".encode())
            .replace(_FROM_MARK, sender.encode())
        )
        yield RawRequest(
            method="SMTP",
            target=ADDRESS,
            headers=(("From", f"{sender}@customer.example"),),
            body=data,
        )


def wait_smtp(port: int, proc: subprocess.Popen[bytes], *, timeout: float = 30.0) -> None:
    """Until a server greets on ``port`` (the listener is up); fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"220"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no SMTP greeting on port {port} within {timeout}s")
        time.sleep(0.05)


# -- the no-op baseline, run as its own process --------------------------------------------------
class _NoOp:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 2.0.0 Message accepted"


async def _serve_noop(port: int) -> None:
    from aiosmtpd.smtp import SMTP as SMTPServerProtocol

    loop = asyncio.get_running_loop()
    handler = _NoOp()

    def factory() -> SMTPServerProtocol:
        return SMTPServerProtocol(
            handler,
            data_size_limit=25 * 1024 * 1024,
            enable_SMTPUTF8=True,
            hostname="bench.localhost",
            ident="Bench ESMTP",
            loop=loop,
        )

    server = await loop.create_server(factory, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def _start_noop(ctx: RunContext) -> Server:
    where = ctx.scratch("email-aiosmtpd")
    port = free_port()
    log_path = where / "aiosmtpd.log"
    proc = spawn(
        python_module("bench.cases.email", str(port)), cores=ctx.placement.server, log_path=log_path
    )
    server = Server(name="email-aiosmtpd", url="", proc=proc, log_path=log_path)
    server.extra["smtp_port"] = str(port)
    try:
        wait_smtp(port, proc)
    except BaseException:
        server.stop()
        raise
    return server


def start_gateway(
    ctx: RunContext,
    name: str,
    *,
    role: str = "web",
    block: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Server:
    """The gateway with an email tenant whose SMTP listener is on a loopback port (in
    ``extra["smtp_port"]``), ready when the listener greets; ``block`` adds to the channel."""
    port = free_port()
    channel = {
        "kind": "email",
        "addresses": [{"address": ADDRESS}],
        "listener": {"host": "127.0.0.1", "port": port},
        "outbound": {"security": "none"},
        **(block or {}),
    }
    server = start_channel_gateway(ctx, name, channel, env=env, role=role)
    server.extra["smtp_port"] = str(port)
    try:
        wait_smtp(port, server.proc)
    except BaseException:
        server.stop()
        raise
    return server


def _start_redis(ctx: RunContext) -> Server:
    return start_gateway(ctx, "email-redis")


def cases() -> list[ThroughputCase]:
    return [
        ThroughputCase(
            key="email.aiosmtpd",
            label="aiosmtpd, no-op handler",
            requests=mails,
            start=_start_noop,
            unique=False,
            driver="smtp",
            vs_bare_http=False,
        ),
        ThroughputCase(
            key="email.redis",
            label="email SMTP listener ingest, redis",
            requests=mails,
            start=_start_redis,
            baseline="email.aiosmtpd",
            check=inbox_check,
            needs=("redis-server",),
            rate_cap=4_000,
            driver="smtp",
            vs_bare_http=False,
        ),
    ]


if __name__ == "__main__":
    asyncio.run(_serve_noop(int(sys.argv[1])))
