"""CPU and store commands per message of the worker and the dispatcher, in one process.

The end-to-end bench row (:mod:`bench.e2e`) measures a whole gateway process under load,
where what one message costs depends on how many store commands share a pipeline (the
busier the process, the cheaper each message) and on whatever else the machine runs. This
runs the real :class:`~gateway.worker.Worker` and :class:`~gateway.dispatcher.Dispatcher`
one message at a time over a private redis-server (AOF ``everysec``), with the rules agent
and a :class:`~connectors.collecting.CollectingConnector` as the output, and reports:

- CPU per message (``time.process_time`` around ``Worker.handle`` and ``Dispatcher.handle``;
  the store's pipeline task runs inside those awaits, so its work is counted, the server's
  is not);
- Redis commands per message, counted by the server (``INFO commandstats``; the commands a
  Lua script runs count too), so a change that adds or folds store work shows as a number,
  not as noise.

One message at a time is the worst case for batching: every store call is its own round
trip. Run it as ``FLOWBIZ_BENCH=1 python -m bench.turn_cost [--messages N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agents.persona import load_personas
from bench import gateway
from bench.procs import RedisServer
from connectors.collecting import CollectingConnector
from gateway.config import parse_config
from gateway.deadletters import OUTBOX_GROUP
from gateway.dispatcher import Dispatcher
from gateway.ingest import INBOX_GROUP
from gateway.metrics import Metrics
from gateway.models import (
    Channel,
    ConversationKey,
    HttpReplyContext,
    InboundMessage,
    Participant,
)
from gateway.quotas import QuotaPolicy
from gateway.store import Keyspace, Store, open_store
from gateway.worker import Worker

__all__ = ["TurnCost", "measure"]

CONVERSATIONS = 50
_TEXTS = ("hello there", "what are your opening hours?", "I want a refund please", "thanks!")
_CALLS = re.compile(rb"cmdstat_(\w+):calls=(\d+)")


@dataclass(frozen=True, slots=True)
class TurnCost:
    messages: int
    worker_us: float  # CPU per message in Worker.handle
    dispatcher_us: float  # CPU per reply in Dispatcher.handle
    worker_commands: float  # Redis commands per message (script steps included)
    dispatcher_commands: float
    replies: int


def _commands(redis: RedisServer) -> int:
    """Commands the server has run so far, not counting the INFO that asks."""
    stats = redis.reply("INFO", "commandstats")
    return sum(int(n) for name, n in _CALLS.findall(stats) if name != b"info")


async def _run(redis: RedisServer, messages: int, warmup: int) -> TurnCost:
    os.environ.update(gateway.SECRETS)  # the config's env: references
    config = parse_config(gateway.config(redis.url))
    store: Store = await open_store(redis.url)
    try:
        keyspace = Keyspace(prefix=config.store.prefix, partitions=config.store.partitions)
        metrics = Metrics()
        output = CollectingConnector()
        worker = Worker(
            config=config,
            store=store,
            keyspace=keyspace,
            personas=load_personas(config.personas_dir),
            connectors={Channel.HTTP: output},
            metrics=metrics,
            quotas=QuotaPolicy(config=config, store=store, keyspace=keyspace, metrics=metrics),
        )
        dispatcher = Dispatcher(
            config=config,
            store=store,
            keyspace=keyspace,
            connectors={Channel.HTTP: output},
            metrics=metrics,
        )
        for partition in range(keyspace.partitions):
            await store.ensure_group(keyspace.inbox(partition), INBOX_GROUP)
            await store.ensure_group(keyspace.outbox(partition), OUTBOX_GROUP)

        async def one(n: int) -> tuple[float, float, int, int, int]:
            conv = ConversationKey(
                tenant=gateway.TENANT,
                channel=Channel.HTTP,
                conversation_id=f"conv-{n % CONVERSATIONS}",
            )
            message = InboundMessage(
                conversation=conv,
                sender=Participant(id=f"user-{n % CONVERSATIONS}", display_name="Bench User"),
                text=_TEXTS[n % len(_TEXTS)],
                event_id=f"ev-{n}",
                reply_context=HttpReplyContext(),
            )
            partition = keyspace.partition(conv.key)
            inbox, outbox = keyspace.inbox(partition), keyspace.outbox(partition)
            await store.append(inbox, message.model_dump_json().encode())
            read = await store.read_group(
                [inbox], group=INBOX_GROUP, consumer="c", count=10, block=1.0
            )
            before = _commands(redis)
            started = time.process_time()
            for _, entry in read:
                await worker.handle(partition, entry)
            worker_cpu = time.process_time() - started
            middle = _commands(redis)
            read = await store.read_group(
                [outbox], group=OUTBOX_GROUP, consumer="c", count=10, block=1.0
            )
            after_read = _commands(redis)
            started = time.process_time()
            for _, entry in read:
                await dispatcher.handle(partition, entry)
            dispatcher_cpu = time.process_time() - started
            end = _commands(redis)
            return worker_cpu, dispatcher_cpu, middle - before, end - after_read, len(read)

        for n in range(warmup):
            await one(n)
        gc.collect()
        gc.freeze()  # as the gateway does once started (gateway/server.py: settle_heap)
        totals = [0.0, 0.0, 0, 0, 0]
        for n in range(warmup, warmup + messages):
            for i, value in enumerate(await one(n)):
                totals[i] += value
        worker_cpu, dispatcher_cpu, worker_cmds, dispatcher_cmds, replies = totals
        return TurnCost(
            messages=messages,
            worker_us=worker_cpu / messages * 1e6,
            dispatcher_us=dispatcher_cpu / max(1, replies) * 1e6,
            worker_commands=worker_cmds / messages,
            dispatcher_commands=dispatcher_cmds / max(1, replies),
            replies=int(replies),
        )
    finally:
        await store.aclose()


def measure(workdir: Path, *, messages: int = 2000, warmup: int = 300) -> TurnCost:
    """Start a private redis-server in ``workdir`` and measure ``messages`` turns on it."""
    redis = RedisServer(workdir, cores=tuple(range(os.cpu_count() or 1))).start()
    try:
        return asyncio.run(_run(redis, messages, warmup))
    finally:
        if redis.proc is not None:
            redis.proc.terminate()
            redis.proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.turn_cost", description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    opts = parser.parse_args()
    if os.environ.get("FLOWBIZ_BENCH") != "1":
        parser.error("set FLOWBIZ_BENCH=1 to run benchmarks")
    with tempfile.TemporaryDirectory(prefix="turn-cost-") as where:
        cost = measure(Path(where), messages=opts.messages, warmup=opts.warmup)
    print(
        f"worker {cost.worker_us:.0f} us CPU and {cost.worker_commands:.1f} Redis commands per "
        f"message; dispatcher {cost.dispatcher_us:.0f} us CPU and "
        f"{cost.dispatcher_commands:.1f} Redis commands per reply "
        f"({cost.messages} messages, {cost.replies} replies, one at a time)"
    )


if __name__ == "__main__":
    main()
