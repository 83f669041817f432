"""(c) End to end at a fixed rate and (d) a worker SIGKILLed mid-run, through real processes.

The load generator and the callback receiver run in the bench process (pinned to the load
core): a message's latency is from its *scheduled* send time (so a late sender counts
against the result, not for it) to the arrival of its signed callback at the receiver.
:func:`open_loop` (the sender's clock) and :func:`measure` (warm-up, timed run, CPU and RSS)
also serve the per-channel rows (:mod:`bench.channels_e2e`) and :mod:`bench.scale`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
from aiohttp import web

from bench import gateway
from bench.cases import RunContext
from bench.cases.http_api import message_body
from bench.procs import Server, cpu_seconds, rss_mib, start_profiler
from gateway.errors import VerificationError
from gateway.signing import SIGNATURE_HEADER, sign_request, verify_request


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(slots=True)
class SignedCallbackEndpoint:
    """A lean tenant webhook endpoint: verify the signature, then ``accept`` the reply."""

    secret: str
    port: int = 0
    calls: int = 0
    rejected: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callbacks"

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post("/callbacks", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        body = await request.read()
        self.calls += 1
        try:
            verify_request(
                request.headers.get(SIGNATURE_HEADER),
                request.method,
                request.rel_url.raw_path,
                request.rel_url.raw_query_string,
                body,
                [self.secret],
            )
        except VerificationError:
            self.rejected += 1
            return web.Response(status=401)
        await self.accept(body, request.headers.get("X-FlowBiz-Idempotency-Key", ""), arrived)
        return web.Response(status=204)

    async def accept(self, body: bytes, key: str, arrived: float) -> None:
        raise NotImplementedError


@dataclass(slots=True)
class Receiver(SignedCallbackEndpoint):
    """Notes each reply's first arrival and text, for latency and order."""

    first_arrival: dict[str, float] = field(default_factory=dict)  # in_reply_to -> time
    keys_by_message: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    texts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def accept(self, body: bytes, key: str, arrived: float) -> None:
        payload: dict[str, Any] = json.loads(body)
        message_id = payload["in_reply_to"]
        if key not in self.keys_by_message[message_id]:
            self.keys_by_message[message_id].add(key)
            self.texts[payload["conversation_id"]].append(payload["text"])
        self.first_arrival.setdefault(message_id, arrived)
        async with self._arrived:
            self._arrived.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], *, timeout: float) -> None:
        """Wait until ``predicate()`` holds after some arrival, or ``timeout`` s passed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self._arrived:
                await self._arrived.wait_for(predicate)

    async def wait_for(self, ids: Sequence[str], *, timeout: float) -> None:
        """Wait until a callback arrived for each of ``ids`` (or ``timeout`` s passed)."""
        missing = [i for i in ids if i not in self.first_arrival]

        def arrived() -> bool:
            while missing and missing[-1] in self.first_arrival:
                missing.pop()
            return not missing

        await self.wait_until(arrived, timeout=timeout)


def _signed(target: str, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_request([gateway.SIGNING_SECRET], "POST", target, body),
    }


@dataclass(slots=True)
class Sent:
    scheduled: dict[str, float] = field(default_factory=dict)  # message id -> scheduled time
    ack_ms: list[float] = field(default_factory=list)
    failed: int = 0


async def open_loop(
    count: int,
    rate: float,
    fire: Callable[[int, float], Awaitable[object]],
    *,
    in_flight: int | None = None,
    until: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    lead: float = 0.0,
) -> int:
    """Start ``fire(n, scheduled)`` for n = 0, 1, … ``count`` - 1 at ``scheduled`` = start +
    n / ``rate`` (perf_counter times; start is ``lead`` s from now), whether or not earlier
    ones finished — an open loop — but with at most ``in_flight`` unfinished when given; stop
    starting at ``until``. Waits for all of them; returns how many were started."""
    slots = asyncio.Semaphore(in_flight) if in_flight is not None else None
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int, scheduled: float) -> None:
        try:
            await fire(n, scheduled)
        finally:
            if slots is not None:
                slots.release()

    start = time.perf_counter() + lead
    started = 0
    for n in range(count):
        if until is not None and time.perf_counter() > until:
            break
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if slots is not None:
            await slots.acquire()
        task = asyncio.create_task(one(n, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        started += 1
        if on_progress is not None:
            on_progress(n)
    if tasks:
        await asyncio.gather(*tasks)
    return started


async def _send_at_rate(
    session: aiohttp.ClientSession, url: str, *, rate: float, count: int, tag: str
) -> Sent:
    target = f"{url}/v1/channels/http/{gateway.TENANT}/messages"
    bodies = [message_body(n, tag) for n in range(count)]
    requests = [(b, _signed(target, b)) for b in bodies]
    sent = Sent()

    async def post(n: int, scheduled: float) -> None:
        body, headers = requests[n]
        try:
            async with session.post(target, data=body, headers=headers) as response:
                data = await response.json() if response.status == 202 else None
        except aiohttp.ClientError:
            data = None
        if data is None:
            sent.failed += 1
            return
        sent.ack_ms.append((time.perf_counter() - scheduled) * 1e3)
        sent.scheduled[data["id"]] = scheduled

    await open_loop(count, rate, post, lead=0.05)
    return sent


@dataclass(frozen=True, slots=True)
class E2EResult:
    offered_rate: float
    sent: int
    delivered: int
    lost: int
    delivered_per_s: float
    ack_p50_ms: float
    ack_p99_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_before: float | None
    rss_after: float | None
    failed_posts: int
    cpu_us_per_message: float  # the gateway's CPU time per message, all of its work included
    extra_replies: int | None = None  # replies beyond one per message (None: not counted)


# What a run sends: (tag, count) -> the messages sent at the rate, by id.
SendBatch = Callable[[str, int], Awaitable[Sent]]
# Waits (at most about ``timeout`` s) for the replies to ``ids``: arrival time by id.
Arrivals = Callable[[Sequence[str], float], Awaitable[Mapping[str, float]]]


async def measure(
    server: Server,
    send: SendBatch,
    arrivals: Arrivals,
    *,
    rate: float,
    seconds: float,
    profile: Path | None,
) -> E2EResult:
    """A warm-up, then ``rate`` x ``seconds`` messages through ``server``: latency from each
    message's scheduled send time to its reply's arrival, the gateway's CPU and RSS."""
    # Warm-up: leases taken, code paths hot; not measured.
    warm = await send("e2e-warm", max(50, int(rate)))
    await arrivals(list(warm.scheduled), 15)
    rss_before = rss_mib(server.pid)
    cpu_before = cpu_seconds(server.pid)
    began = time.perf_counter()
    sent = await send("e2e", int(rate * seconds))
    ids = list(sent.scheduled)
    arrived = await arrivals(ids, 15)
    finished = max((arrived.get(i, 0.0) for i in ids), default=began)
    rss_after = rss_mib(server.pid)
    cpu_after = cpu_seconds(server.pid)
    if profile is not None:  # an extra pass under py-spy, after the measured one
        spy = start_profiler(server.pid, profile / f"{server.name}.collapsed", seconds)
        if spy is not None:
            more = await send("e2e-prof", int(rate * seconds))
            await arrivals(list(more.scheduled), 15)
            await asyncio.to_thread(spy.wait, seconds + 30)
    cpu_us = math.nan
    if cpu_before is not None and cpu_after is not None and ids:
        cpu_us = (cpu_after - cpu_before) / len(ids) * 1e6
    latencies = [(arrived[i] - sent.scheduled[i]) * 1e3 for i in ids if i in arrived]
    return E2EResult(
        offered_rate=rate,
        sent=len(ids),
        delivered=len(latencies),
        lost=len(ids) - len(latencies),
        delivered_per_s=len(latencies) / max(1e-9, finished - began),
        ack_p50_ms=percentile(sent.ack_ms, 0.5),
        ack_p99_ms=percentile(sent.ack_ms, 0.99),
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=math.nan),
        rss_before=rss_before,
        rss_after=rss_after,
        failed_posts=sent.failed,
        cpu_us_per_message=cpu_us,
    )


async def _fixed_rate(
    server: Server, receiver: Receiver, *, rate: float, seconds: float, profile: Path | None
) -> E2EResult:
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(tag: str, count: int) -> Sent:
            return await _send_at_rate(session, server.url, rate=rate, count=count, tag=tag)

        async def arrivals(ids: Sequence[str], timeout: float) -> Mapping[str, float]:
            await receiver.wait_for(ids, timeout=timeout)
            return receiver.first_arrival

        return await measure(server, send, arrivals, rate=rate, seconds=seconds, profile=profile)


def fixed_rate(
    ctx: RunContext, *, store: str, rate: float, seconds: float, profile: Path | None = None
) -> E2EResult:
    """One gateway process (``--role all``, rules agent) driven at ``rate`` messages/s."""

    async def run() -> E2EResult:
        receiver = await Receiver(gateway.CALLBACK_SECRET).start()
        where = ctx.scratch(f"e2e-{store}")
        url = ctx.store_url(store, where)
        data = gateway.config(url, callback_url=receiver.url)
        data["store"] |= ctx.store_options(store)
        try:
            server = await asyncio.to_thread(
                gateway.start,
                f"e2e-{store}",
                data,
                workdir=where,
                cores=ctx.placement.server,
                role="all",
            )
            try:
                result: E2EResult = await _fixed_rate(
                    server, receiver, rate=rate, seconds=seconds, profile=profile
                )
            finally:
                await asyncio.to_thread(server.stop)
        finally:
            await receiver.stop()
        return result

    return asyncio.run(run())


# -- (d) a worker SIGKILLed during a 2,000-message run ------------------------------------------
@dataclass(frozen=True, slots=True)
class CrashResult:
    messages: int
    delivered: int
    lost: int
    answered_twice: int
    out_of_order: int
    wire_retries: int
    recovery_gap_ms: float
    p50_ms: float
    p99_ms: float
    seconds: float


_ECHO_PERSONA = "name: core\ndisplay_name: Echo\nagent: {kind: echo, options: {prefix: ''}}\n"


def crash(
    ctx: RunContext, *, store: str, messages: int = 2000, conversations: int = 40
) -> CrashResult:
    """Web and two worker processes; the first worker is SIGKILLed a quarter of the way in."""

    async def run() -> CrashResult:
        receiver = await Receiver(gateway.CALLBACK_SECRET).start()
        where = ctx.scratch(f"crash-{store}")
        personas = where / "personas"
        personas.mkdir()
        (personas / "core.yaml").write_text(_ECHO_PERSONA)
        data = gateway.config(
            ctx.store_url(store, where),
            callback_url=receiver.url,
            personas_dir=personas,
            pipeline={"lease_seconds": 2.0, "retry_base_seconds": 0.05},
        )
        cores = ctx.placement.server
        servers: list[Server] = []
        try:
            first_worker = await asyncio.to_thread(
                gateway.start, "worker-1", data, workdir=where, cores=cores, role="worker"
            )
            servers.append(first_worker)
            edge = await asyncio.to_thread(
                gateway.start, "edge", data, workdir=where, cores=cores, role="web"
            )
            servers.append(edge)
            result = await _crash_run(
                edge,
                servers,
                receiver,
                data,
                where,
                cores=cores,
                messages=messages,
                per=conversations,
            )
        finally:
            for s in servers:
                await asyncio.to_thread(s.stop)
            await receiver.stop()
        return result

    return asyncio.run(run())


async def _crash_run(
    edge: Server,
    servers: list[Server],
    receiver: Receiver,
    data: dict[str, Any],
    where: Path,
    *,
    cores: tuple[int, ...],
    messages: int,
    per: int,
) -> CrashResult:
    victim = servers[0]
    sent: dict[str, list[str]] = defaultdict(list)
    scheduled: dict[str, float] = {}
    target = f"{edge.url}/v1/channels/http/{gateway.TENANT}/messages"

    async def conversation(session: aiohttp.ClientSession, conv: int) -> None:
        for seq in range(messages // per):
            text = f"c{conv}:{seq}"
            body = json.dumps(
                {
                    "conversation_id": f"c{conv}",
                    "event_id": text,
                    "user": {"id": f"u{conv}"},
                    "text": text,
                }
            ).encode()
            began = time.perf_counter()
            async with session.post(target, data=body, headers=_signed(target, body)) as response:
                if response.status != 202:
                    raise RuntimeError(f"edge answered {response.status}")
                reply = await response.json()
            scheduled[reply["id"]] = began
            sent[f"c{conv}"].append(text)

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        producer = asyncio.create_task(
            asyncio.wait_for(asyncio.gather(*(conversation(session, c) for c in range(per))), 120)
        )
        await receiver.wait_until(
            lambda: len(receiver.first_arrival) >= messages // 4 or producer.done(), timeout=60
        )
        killed_at = time.perf_counter()
        victim.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.proc.wait)
        successor = await asyncio.to_thread(
            gateway.start,
            "worker-2",
            data,
            workdir=where,
            cores=cores,
            role="worker",
        )
        servers.append(successor)
        await producer
        await receiver.wait_for(list(scheduled), timeout=90)
        await asyncio.sleep(1.0)  # a second answer to anything would arrive in this time
    seconds = time.perf_counter() - started
    arrivals = sorted(t for t in receiver.first_arrival.values() if t >= killed_at)
    gaps = [b - a for a, b in zip([killed_at, *arrivals], arrivals, strict=False)]
    latencies = [
        (receiver.first_arrival[i] - t) * 1e3
        for i, t in scheduled.items()
        if i in receiver.first_arrival
    ]
    delivered = sum(1 for i in scheduled if i in receiver.first_arrival)
    return CrashResult(
        messages=len(scheduled),
        delivered=delivered,
        lost=len(scheduled) - delivered,
        answered_twice=sum(1 for keys in receiver.keys_by_message.values() if len(keys) > 1),
        out_of_order=sum(1 for conv, texts in sent.items() if receiver.texts[conv] != texts),
        wire_retries=receiver.calls - sum(len(k) for k in receiver.keys_by_message.values()),
        recovery_gap_ms=max(gaps, default=math.nan) * 1e3,
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
        seconds=seconds,
    )
