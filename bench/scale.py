"""Scale-out, Redis memory per conversation and gateway RSS over many messages.

All three drive the real pipeline (HTTP channel in, ``core`` persona's rules agent, signed
callback out) on a private redis-server, from the bench process (pinned to the load core),
with a lean callback receiver that keeps counters rather than every arrival, so that a
million-message run does not grow the load generator.

- :func:`scale_out`: N gateway processes (``--role all``: web, worker and dispatcher) on one
  Redis, saturated by a closed loop (a fixed number of conversations, one message in flight
  each, spread round-robin over the processes' HTTP ports); replies delivered per second.
- :func:`redis_memory`: N conversations made through the pipeline, then ``MEMORY USAGE`` of
  every key, summed per key family (:func:`key_family`), per conversation.
- :func:`rss_run`: one gateway process at a steady rate for COUNT messages, its RSS (and
  Redis' ``used_memory``) sampled as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import redis

from bench import gateway
from bench.cases import RunContext
from bench.cases.http_api import TEXTS
from bench.e2e import SignedCallbackEndpoint, open_loop, percentile
from bench.procs import Server, cpu_seconds, rss_mib
from gateway.signing import SIGNATURE_HEADER, sign_request
from gateway.store import Keyspace

MESSAGES_PATH = f"/v1/channels/http/{gateway.TENANT}/messages"


def body(conversation: str, event_id: str, text: str) -> bytes:
    return json.dumps(
        {
            "conversation_id": conversation,
            "event_id": event_id,
            "user": {"id": f"user-{conversation}", "name": "Bench User"},
            "text": text,
        },
        separators=(",", ":"),
    ).encode()


def signed_headers(data: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_request([gateway.SIGNING_SECRET], "POST", MESSAGES_PATH, data),
    }


@dataclass(slots=True)
class LeanReceiver(SignedCallbackEndpoint):
    """Counts distinct replies and resolves whoever waits for one."""

    delivered: int = 0  # distinct replies (by idempotency key)
    waiting: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    early: dict[str, float] = field(default_factory=dict)  # arrived before anyone waited
    _keys: set[str] = field(default_factory=set)
    _target: int = 0
    _reached: asyncio.Event | None = None

    async def accept(self, body: bytes, key: str, arrived: float) -> None:
        if key in self._keys:
            return
        self._keys.add(key)
        self.delivered += 1
        if self._reached is not None and self.delivered >= self._target:
            self._reached.set()
        message_id = json.loads(body)["in_reply_to"]
        future = self.waiting.pop(message_id, None)
        if future is None:
            self.early[message_id] = arrived
        elif not future.done():
            future.set_result(arrived)

    async def wait_delivered(self, count: int, *, timeout: float) -> None:
        """Until ``count`` distinct replies arrived in all, or ``timeout`` s passed."""
        if self.delivered >= count:
            return
        self._target, self._reached = count, asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reached.wait(), timeout)
        self._reached = None

    def forget_keys(self) -> None:
        """Drop the idempotency keys and unclaimed arrival times seen so far (a long run that
        only counts replies would otherwise keep one of each per message)."""
        self._keys.clear()
        self.early.clear()

    async def reply_to(self, message_id: str, *, timeout: float) -> float:
        """When the (first) reply to ``message_id`` arrived."""
        if message_id in self.early:
            return self.early.pop(message_id)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[message_id] = future
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.waiting.pop(message_id, None)


async def _post(session: aiohttp.ClientSession, url: str, data: bytes) -> str | None:
    """POST one signed message; the gateway's message id, or None if it was not accepted."""
    try:
        async with session.post(url + MESSAGES_PATH, data=data, headers=signed_headers(data)) as r:
            if r.status != 202:
                return None
            reply: dict[str, Any] = await r.json()
            return str(reply["id"])
    except aiohttp.ClientError:
        return None


# -- scale-out ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ScaleResult:
    processes: int
    cores: list[list[int]]
    seconds: float
    delivered: int
    per_s: float
    p50_ms: float
    p99_ms: float
    failed: int
    cpu_us_per_message: float  # all gateway processes together
    core_share: list[float]  # each process' CPU seconds per second of the run
    load_share: float  # the bench process (load generator and receiver), same measure
    redis_share: float  # redis-server (every master of a cluster), same measure
    rss: list[float | None]


async def _closed_loop(
    urls: Sequence[str],
    receiver: LeanReceiver,
    *,
    conversations: int,
    seconds: float,
    tag: str,
) -> tuple[int, list[float], int]:
    """``conversations`` senders, one message in flight each, for ``seconds``; counted are the
    replies that arrived within the window: (delivered, latencies ms, failed)."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    failed = 0
    connector = aiohttp.TCPConnector(limit=conversations + 8)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def sender(conv: int) -> None:
            nonlocal failed
            url = urls[conv % len(urls)]
            seq = 0
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                data = body(f"{tag}-{conv}", f"{tag}-{conv}-{seq}", TEXTS[seq % len(TEXTS)])
                seq += 1
                message_id = await _post(session, url, data)
                if message_id is None:
                    failed += 1
                    continue
                try:
                    arrived = await receiver.reply_to(message_id, timeout=30)
                except TimeoutError:
                    failed += 1
                    continue
                if arrived <= deadline:
                    latencies.append((arrived - began) * 1e3)

        await asyncio.gather(*(sender(c) for c in range(conversations)))
    return len(latencies), latencies, failed


def _lease_owners(url: str, role: str, partitions: int, *, cluster: bool) -> set[str]:
    keyspace = Keyspace(partitions=partitions)
    leases = [keyspace.lease(role, p) for p in range(partitions)]
    if cluster:  # the lease keys lie in many slots: one GET per slot
        nodes = redis.RedisCluster.from_url(url)
        try:
            owners = nodes.mget_nonatomic(leases)
        finally:
            nodes.close()
    else:
        client = redis.Redis.from_url(url)
        try:
            owners = client.mget(leases)
        finally:
            client.close()
    return {o.decode() if isinstance(o, bytes) else str(o) for o in owners if o is not None}


def _wait_balanced(url: str, processes: int, *, cluster: bool, timeout: float = 30.0) -> None:
    """Until every partition's worker and dispatcher lease is held, by ``processes`` owners."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(
            len(_lease_owners(url, role, gateway.PARTITIONS, cluster=cluster)) == processes
            for role in ("worker", "dispatcher")
        ):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the partitions were not spread over {processes} processes in {timeout}s")


def scale_out(
    ctx: RunContext,
    *,
    processes: int,
    seconds: float,
    warmup: float,
    conversations: int = 64,
    store: str = "redis",
) -> ScaleResult:
    """``processes`` times ``flowbiz serve --role all`` on one Redis (``store="redis"``) or on
    a 3-master Redis Cluster (``"redis-cluster"``), saturated by a closed loop.

    Process 1 runs on the server core; process 2 on the load core, beside the load generator
    and redis-server (a 2-core machine has no third core). The cluster's masters share the
    load core as the single redis-server does.
    """
    cluster = store == "redis-cluster"
    placements = [ctx.placement.server, ctx.placement.load][:processes]

    async def run() -> ScaleResult:
        receiver = await LeanReceiver(gateway.CALLBACK_SECRET).start()
        where = ctx.scratch(f"scale-{processes}-{store}")
        url = ctx.store_url(store, where)
        # Short leases so a second process gets its share of the partitions within seconds.
        data = gateway.config(
            url, callback_url=receiver.url, pipeline={"lease_seconds": 3}, cluster=cluster
        )
        servers: list[Server] = []
        try:
            for n, cores in enumerate(placements):
                servers.append(
                    await asyncio.to_thread(
                        gateway.start,
                        f"scale-{processes}-{n}",
                        data,
                        workdir=where,
                        cores=cores,
                        role="all",
                    )
                )
            await asyncio.to_thread(_wait_balanced, url, processes, cluster=cluster)
            urls = [s.url for s in servers]
            await _closed_loop(
                urls, receiver, conversations=conversations, seconds=warmup, tag="warm"
            )
            cpu_before = [cpu_seconds(s.pid) or 0.0 for s in servers]
            redis_pids = _redis_pids(ctx, cluster=cluster)
            load_before = cpu_seconds(os.getpid()) or 0.0
            redis_before = sum(cpu_seconds(pid) or 0.0 for pid in redis_pids)
            began = time.perf_counter()
            delivered, latencies, failed = await _closed_loop(
                urls, receiver, conversations=conversations, seconds=seconds, tag="run"
            )
            elapsed = time.perf_counter() - began
            cpu_after = [cpu_seconds(s.pid) or 0.0 for s in servers]
            load_used = (cpu_seconds(os.getpid()) or 0.0) - load_before
            redis_used = sum(cpu_seconds(pid) or 0.0 for pid in redis_pids) - redis_before
            cpu_used = [a - b for a, b in zip(cpu_after, cpu_before, strict=True)]
            rss = [rss_mib(s.pid) for s in servers]
        finally:
            for s in servers:
                await asyncio.to_thread(s.stop)
            await receiver.stop()
        return ScaleResult(
            processes=processes,
            cores=[list(c) for c in placements],
            seconds=round(elapsed, 2),
            delivered=delivered,
            per_s=delivered / seconds,
            p50_ms=percentile(latencies, 0.5),
            p99_ms=percentile(latencies, 0.99),
            failed=failed,
            cpu_us_per_message=sum(cpu_used) / delivered * 1e6 if delivered else math.nan,
            core_share=[round(c / elapsed, 2) for c in cpu_used],
            load_share=round(load_used / elapsed, 2),
            redis_share=round(redis_used / elapsed, 2),
            rss=rss,
        )

    return asyncio.run(run())


def _redis_pids(ctx: RunContext, *, cluster: bool) -> list[int]:
    """The redis-server processes behind the store (every master of a cluster)."""
    if cluster:
        return ctx.redis_cluster.pids if ctx.redis_cluster else []
    return [ctx.redis.proc.pid] if ctx.redis and ctx.redis.proc else []


# -- Redis memory per conversation --------------------------------------------------------------
_FAMILIES: tuple[tuple[str, str], ...] = (
    (r"^[^:]+:\{p\d+\}:c:[^:]+:state$", "conversation state"),
    (r"^[^:]+:\{p\d+\}:c:[^:]+:(replies|receipts)$", "conversation {0} log"),
    (r"^[^:]+:\{p\d+\}:c:[^:]+:in:", "inbound marker (per message)"),
    (r"^[^:]+:\{p\d+\}:c:[^:]+:posted:", "callback posted claim (per reply)"),
    (r"^[^:]+:\{p\d+\}:c:[^:]+:([^:]+)", "conversation record {0}"),
    (r"^[^:]+:\{p\d+\}:ix:", "conversation index entry"),
    (r"^[^:]+:\{p\d+\}:seen:", "dedupe claim (seen)"),
    (r"^[^:]+:\{p\d+\}:delivered:", "delivery record"),
    (r"^[^:]+:\{p\d+\}:dead:replayed:", "dead-letter replay claim"),
    (r"^[^:]+:\{p\d+\}:(inbox|outbox|dead)$", "{0} stream"),
    (r"^[^:]+:bucket:in:", "inbound token bucket (per user)"),
    (r"^[^:]+:usage:", "usage counters"),
    (r"^[^:]+:q:", "quota counters"),
    (r"^[^:]+:(lease|members):", "leases and membership"),
    (r"^[^:]+:ch:", "channel records"),
    (r"^[^:]+:t:", "tenant records"),
    (r"^[^:]+:audit$", "audit stream"),
    (r"^[^:]+:audit:t:", "audit stream per tenant"),
)


def key_family(key: str) -> str:
    """The family a store key belongs to (the shapes built in gateway/store/keys.py)."""
    for pattern, name in _FAMILIES:
        match = re.match(pattern, key)
        if match is not None:
            return name.format(*match.groups())
    return "other"


# Families whose keys exist once per conversation (or per user) for as long as it lives;
# the rest grow with messages (dedupe claims, markers and delivery records until their TTL,
# stream entries until trimmed).
PER_CONVERSATION = (
    "conversation state",
    "conversation replies log",
    "conversation receipts log",
    "conversation record",
    "conversation index entry",
    "inbound token bucket (per user)",
)
PER_MESSAGE = (
    "dedupe claim (seen)",
    "inbound marker (per message)",
    "callback posted claim (per reply)",
    "delivery record",
    "inbox stream",
    "outbox stream",
)


@dataclass(frozen=True, slots=True)
class MemoryResult:
    conversations: int
    messages: int
    used_memory_delta: int  # INFO memory used_memory after - before, bytes
    families: dict[str, dict[str, float]]  # family -> keys, bytes, bytes per conversation
    history_bytes_per_conversation: float  # the history array inside the state JSON
    state_value_bytes_per_conversation: float  # the whole state JSON
    per_conversation_beyond_history: float  # per-conversation families minus the history
    retained_per_message: float  # dedupe claims, delivery records, stream entries
    replies: int


def _measure_keys(url: str) -> tuple[dict[str, list[int]], float, float, int]:
    """MEMORY USAGE of every key by family; the history and state JSON sizes; used_memory."""
    client = redis.Redis.from_url(url)
    families: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    history = state_total = 0.0
    try:
        for key in client.scan_iter(count=1000):
            name = key.decode()
            family = key_family(name)
            usage = client.memory_usage(key, samples=0) or 0
            families[family][0] += 1
            families[family][1] += usage
            if family == "conversation state":
                found = client.get(key)  # "<version>:<state JSON>"
                if found is not None:
                    value = found.partition(b":")[2]
                    state_total += len(value)
                    parsed = json.loads(value)
                    history += len(json.dumps(parsed.get("history", []), separators=(",", ":")))
        used = int(client.info("memory")["used_memory"])
    finally:
        client.close()
    return dict(families), history, state_total, used


def _used_memory(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def redis_memory(ctx: RunContext, *, conversations: int, rate: float = 400) -> MemoryResult:
    """``conversations`` conversations of one message (and its reply) each, then idle."""

    async def run() -> MemoryResult:
        receiver = await LeanReceiver(gateway.CALLBACK_SECRET).start()
        where = ctx.scratch("memory")
        url = ctx.store_url("redis", where)
        before = _used_memory(url)
        data = gateway.config(url, callback_url=receiver.url)
        try:
            server = await asyncio.to_thread(
                gateway.start,
                "memory",
                data,
                workdir=where,
                cores=ctx.placement.server,
                role="all",
            )
            try:
                async with aiohttp.ClientSession() as session:
                    sent = await _open_loop(
                        session,
                        server.url,
                        rate=rate,
                        count=conversations,
                        make=lambda n: body(f"idle-{n}", f"idle-{n}", TEXTS[n % len(TEXTS)]),
                    )
                    await receiver.wait_delivered(sent, timeout=60)
            finally:
                await asyncio.to_thread(server.stop)  # idle: leases released, nothing reading
        finally:
            await receiver.stop()
        families, history, state_total, after = await asyncio.to_thread(_measure_keys, url)
        per = {
            name: {"keys": keys, "bytes": size, "per_conversation": size / conversations}
            for name, (keys, size) in sorted(families.items(), key=lambda kv: -kv[1][1])
        }
        conv_bytes = sum(
            size for name, (_, size) in families.items() if name.startswith(PER_CONVERSATION)
        )
        retained = sum(size for name, (_, size) in families.items() if name in PER_MESSAGE)
        return MemoryResult(
            conversations=conversations,
            messages=sent,
            used_memory_delta=after - before,
            families=per,
            history_bytes_per_conversation=history / conversations,
            state_value_bytes_per_conversation=state_total / conversations,
            per_conversation_beyond_history=(conv_bytes - history) / conversations,
            retained_per_message=retained / max(1, sent),
            replies=receiver.delivered,
        )

    return asyncio.run(run())


async def _open_loop(
    session: aiohttp.ClientSession,
    url: str,
    *,
    rate: float,
    count: int,
    make: Callable[[int], bytes],
    in_flight: int = 256,
    on_progress: Callable[[int], None] | None = None,
    until: float | None = None,
) -> int:
    """POST ``count`` messages at ``rate``/s (at most ``in_flight`` unanswered), or as many as
    fit before ``until`` (a perf_counter time); how many were accepted. Messages are made as
    they are sent, so a long run holds only the in-flight ones."""
    accepted = 0

    async def one(n: int, scheduled: float) -> None:
        nonlocal accepted
        if await _post(session, url, make(n)) is not None:
            accepted += 1

    await open_loop(count, rate, one, in_flight=in_flight, until=until, on_progress=on_progress)
    return accepted


# -- RSS over many messages ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RssResult:
    requested: int
    sent: int
    delivered: int
    rate: float
    seconds: float
    samples: list[tuple[int, float | None, int]]  # (messages sent, RSS MiB, redis used_memory)
    rss_after_warmup: float | None
    rss_peak: float | None
    rss_end: float | None
    growth_mib: float | None  # end - after warm-up
    redis_growth_bytes_per_message: float
    cpu_us_per_message: float
    stopped_by_time: bool


def rss_run(
    ctx: RunContext,
    *,
    count: int,
    rate: float,
    conversations: int = 1000,
    max_seconds: float | None = None,
    samples: int = 20,
    progress: Callable[[str], None] | None = None,
) -> RssResult:
    """One ``--role all`` gateway on Redis, ``count`` messages at ``rate``/s; RSS sampled."""

    async def run() -> RssResult:
        receiver = await LeanReceiver(gateway.CALLBACK_SECRET).start()
        where = ctx.scratch("rss")
        url = ctx.store_url("redis", where)
        data = gateway.config(url, callback_url=receiver.url)
        every = max(1, count // samples)
        taken: list[tuple[int, float | None, int]] = []
        try:
            server = await asyncio.to_thread(
                gateway.start,
                "rss",
                data,
                workdir=where,
                cores=ctx.placement.server,
                role="all",
            )
            try:
                cpu_before = cpu_seconds(server.pid) or 0.0

                def progressed(n: int) -> None:
                    if n % every == 0:
                        taken.append((n, rss_mib(server.pid), _used_memory(url)))
                        receiver.forget_keys()
                        if progress is not None:
                            progress(f"{n:,} sent, gateway RSS {taken[-1][1]} MiB")

                began = time.perf_counter()
                until = None if max_seconds is None else began + max_seconds
                connector = aiohttp.TCPConnector(limit=300)
                async with aiohttp.ClientSession(connector=connector) as session:
                    sent = await _open_loop(
                        session,
                        server.url,
                        rate=rate,
                        count=count,
                        make=lambda n: body(
                            f"rss-{n % conversations}", f"rss-{n}", TEXTS[n % len(TEXTS)]
                        ),
                        on_progress=progressed,
                        until=until,
                    )
                    # Drain a backlog (the gateway fell behind the rate) while it progresses.
                    stalled = -1
                    while receiver.delivered < sent and receiver.delivered > stalled:
                        stalled = receiver.delivered
                        await receiver.wait_delivered(sent, timeout=30)
                elapsed = time.perf_counter() - began
                taken.append((sent, rss_mib(server.pid), _used_memory(url)))
                cpu_used = (cpu_seconds(server.pid) or 0.0) - cpu_before
            finally:
                await asyncio.to_thread(server.stop)
        finally:
            await receiver.stop()
        warm = next((s for s in taken if s[0] >= count // 10), taken[0])
        rss_values = [s[1] for s in taken if s[1] is not None]
        growth = None
        if warm[1] is not None and taken[-1][1] is not None:
            growth = taken[-1][1] - warm[1]
        redis_growth = (taken[-1][2] - warm[2]) / max(1, taken[-1][0] - warm[0])
        return RssResult(
            requested=count,
            sent=sent,
            delivered=receiver.delivered,
            rate=rate,
            seconds=round(elapsed, 1),
            samples=taken,
            rss_after_warmup=warm[1],
            rss_peak=max(rss_values, default=None),
            rss_end=taken[-1][1],
            growth_mib=growth,
            redis_growth_bytes_per_message=redis_growth,
            cpu_us_per_message=cpu_used / max(1, receiver.delivered) * 1e6,
            stopped_by_time=sent < count,
        )

    return asyncio.run(run())
