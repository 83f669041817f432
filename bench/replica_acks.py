"""What ``store.replica_acks`` costs an admission: latency and CPU, with 0 and 1 replica.

The throughput rows of the main bench (``http.redis`` beside ``http.redis-replica``) show
the cost at saturation, where group commit shares one ``WAIT`` among many admissions; on a
shared machine their latencies are mostly queueing. This measures the store alone, in one
process, against one private primary with one replica (both AOF ``everysec``, as in the
bench), over the same connection set-up for both settings, interleaved round by round so
that drift hits both alike:

- one admission at a time (the worst case: every admission waits for its own round trip
  to the replica), p50 and p99 of its latency and the process's CPU per admission;
- 64 admissions in flight (a busy edge: group commit), admissions per second and p99.

Run it as ``FLOWBIZ_BENCH=1 python -m bench.replica_acks [--admissions N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.procs import RedisServer
from gateway.store import Admission, Keyspace, ReplicaAcks, Store, open_store

KEYS = Keyspace(prefix="bench", partitions=8)
CONCURRENCY = 64


def _admission(tag: str, n: int) -> Admission:
    partition = n % KEYS.partitions
    return Admission(
        KEYS.inbound_seen(partition, "http", "bench", f"{tag}-{n}"),
        KEYS.inbox(partition),
        b'{"text":"hello"}' * 8,
    )


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def _one_at_a_time(store: Store, tag: str, count: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    cpu = time.process_time()
    for n in range(count):
        began = time.perf_counter()
        await store.admit([_admission(tag, n)], dedupe_ttl=3600)
        latencies.append(time.perf_counter() - began)
    return latencies, (time.process_time() - cpu) / count


async def _concurrent(store: Store, tag: str, count: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(range(count))

    async def lane() -> None:
        for n in queue:
            began = time.perf_counter()
            await store.admit([_admission(tag, n)], dedupe_ttl=3600)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
    return count / (time.perf_counter() - began), latencies


async def _measure(
    primary: RedisServer, admissions: int, rounds: int
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, list[float]]] = {}
    for round_ in range(rounds):
        for replicas in (0, 1):
            acks = ReplicaAcks(replicas, 1000) if replicas else None
            store = await open_store(primary.url, replica_acks=acks)
            try:
                tag = f"r{round_}-{replicas}"
                single, cpu = await _one_at_a_time(store, tag + "s", admissions)
                rate, busy = await _concurrent(store, tag + "c", admissions * 4)
            finally:
                await store.aclose()
            into = results.setdefault(str(replicas), {})
            into.setdefault("single", []).extend(single)
            into.setdefault("cpu", []).append(cpu)
            into.setdefault("rate", []).append(rate)
            into.setdefault("busy", []).extend(busy)
    return {
        replicas: {
            "p50_ms": _p(r["single"], 50) * 1000,
            "p99_ms": _p(r["single"], 99) * 1000,
            "cpu_us": statistics.median(r["cpu"]) * 1e6,
            "rate": statistics.median(r["rate"]),
            "busy_p99_ms": _p(r["busy"], 99) * 1000,
        }
        for replicas, r in results.items()
    }


def measure(where: Path, *, admissions: int, rounds: int) -> dict[str, dict[str, float]]:
    """Start a primary and its replica in ``where`` and measure both settings against them;
    per setting ("0", "1"): one-at-a-time p50/p99, CPU per admission, concurrent rate/p99."""
    cores = tuple(sorted(os.sched_getaffinity(0)))
    no_delay = ["--repl-diskless-sync-delay", "0"]  # sync the replica at once, not in 5 s
    primary = RedisServer(where / "primary", cores, extra=no_delay).start()
    replica = RedisServer(
        where / "replica", cores, extra=["--replicaof", "127.0.0.1", str(primary.port)]
    )
    try:
        replica.start()
        deadline = time.monotonic() + 30
        while b"master_link_status:up" not in replica.reply("INFO", "replication"):
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync")
            time.sleep(0.1)
        return asyncio.run(_measure(primary, admissions, rounds))
    finally:
        stop(replica)
        stop(primary)


def stop(server: RedisServer) -> None:
    """Stop ``server``; SIGKILL it if it takes longer than its grace (a loaded machine)."""
    try:
        server.stop()
    except subprocess.TimeoutExpired:
        if server.proc is not None:
            server.proc.kill()
            server.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replica_acks", description=__doc__)
    parser.add_argument("--admissions", type=int, default=2000, help="per round, one at a time")
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    if os.environ.get("FLOWBIZ_BENCH") != "1":
        parser.error("set FLOWBIZ_BENCH=1 to run benchmarks")
    with tempfile.TemporaryDirectory(prefix="replica-acks-") as where:
        found = measure(Path(where), admissions=opts.admissions, rounds=opts.rounds)
    print(
        f"{'replica_acks':>12} | {'one at a time p50/p99 ms':>24} | {'CPU us/admit':>12} | "
        f"{CONCURRENCY} in flight: admits/s, p99 ms"
    )
    for replicas, row in found.items():
        print(
            f"{replicas:>12} | {row['p50_ms']:>10.2f} / {row['p99_ms']:<11.2f} | "
            f"{row['cpu_us']:>12.0f} | {row['rate']:>10,.0f}, {row['busy_p99_ms']:.1f}"
        )
    print(
        f"({opts.rounds} rounds of {opts.admissions} one at a time + {opts.admissions * 4} "
        f"at {CONCURRENCY} in flight per setting, interleaved; "
        f"redis-server {RedisServer(Path(), ()).version()})"
    )


if __name__ == "__main__":
    main()
