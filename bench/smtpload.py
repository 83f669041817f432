"""An SMTP load generator (wrk does not speak SMTP): ``python -m bench.smtpload``.

Reads mails from a request file in ``bench/wrk.py``'s record format (method ``SMTP``, the
target is the recipient, one ``From`` header is the envelope sender, the body is the
message) and delivers them over ``--connections`` persistent aiosmtplib connections, each
with one transaction in flight (MAIL, RCPT, DATA; the load is bounded by the connection
count), until ``--seconds`` passed or the file is used up. Prints one JSON object: messages
accepted, elapsed seconds, p50/p99 latency per transaction, refusals and errors. Runs as its
own process so it can be pinned to the load core like wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiosmtplib


@dataclass(frozen=True, slots=True)
class Mail:
    mail_from: str
    rcpt_to: str
    data: bytes


def read_mails(path: Path) -> Iterator[Mail]:
    """The mails of a request file written by ``bench.wrk.write_requests``."""
    with path.open("rb") as f:
        while method := f.readline().rstrip(b"\n"):
            target = f.readline().rstrip(b"\n").decode()
            headers = {}
            for _ in range(int(f.readline())):
                name = f.readline().rstrip(b"\n").decode()
                headers[name.lower()] = f.readline().rstrip(b"\n").decode()
            size = int(f.readline())
            body = f.read(size)
            f.readline()
            if method != b"SMTP":
                raise ValueError(f"not a mail record: {method!r}")
            yield Mail(mail_from=headers.get("from", ""), rcpt_to=target, data=body)


@dataclass(frozen=True, slots=True)
class SmtpResult:
    requests: int  # transactions answered 250
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int  # transactions refused (4xx/5xx)
    socket_errors: int  # connections lost, timeouts
    wrapped: int  # always 0: the run stops when the file is used up
    exhausted: bool  # the file ran out before the time was up


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def run(
    host: str, port: int, mails: Sequence[Mail], *, seconds: float, connections: int
) -> SmtpResult:
    queue = iter(mails)
    latencies: list[float] = []
    refused = errors = 0
    exhausted = False
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal refused, errors, exhausted
        client = aiosmtplib.SMTP(hostname=host, port=port, timeout=30, start_tls=False)
        await client.connect()
        try:
            while time.perf_counter() < deadline:
                mail = next(queue, None)
                if mail is None:
                    exhausted = True
                    return
                began = time.perf_counter()
                try:
                    await client.sendmail(mail.mail_from, [mail.rcpt_to], mail.data)
                except aiosmtplib.SMTPResponseException:
                    refused += 1
                    continue
                except (aiosmtplib.SMTPException, OSError):
                    errors += 1
                    client = aiosmtplib.SMTP(hostname=host, port=port, timeout=30)
                    await client.connect()
                    continue
                latencies.append(time.perf_counter() - began)
        finally:
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    return SmtpResult(
        requests=len(latencies),
        seconds=elapsed,
        rps=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 0.5) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
        non_2xx=refused,
        socket_errors=errors,
        wrapped=0,
        exhausted=exhausted,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.smtpload", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    mails = list(read_mails(args.file))
    result = asyncio.run(
        run(args.host, args.port, mails, seconds=args.seconds, connections=args.connections)
    )
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
