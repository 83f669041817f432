"""A long soak of a real deployment, with a worker killed and Redis restarted on a schedule.

``python -m bench.soak --minutes 60`` (``make soak``) starts a redis-server with
``appendonly yes`` and ``appendfsync always`` on a free loopback port, one ``--role web``
and two ``--role worker`` gateway processes on it, a LINE platform emulator and a signed
callback receiver for the HTTP channel, and offers a steady rate of messages over many
conversations (HTTP channel and LINE webhooks), each conversation sending its next message
once the previous one was acknowledged, retrying on 503 or a refused connection like a
platform does. Every ``--fault-minutes`` (10) it SIGKILLs redis-server and restarts it on the
same port from its AOF, and half a period later SIGKILLs one worker (in turn) and starts a
new one in its place.

Every ``--sample-seconds`` (10) it appends a line to ``<out>/samples.jsonl`` (flushed, so a
crash of the soak still leaves its record): messages sent, acknowledged, answered, duplicate
answers, lost so far (acknowledged more than two minutes ago and unanswered), dead letters,
stream lengths, Redis ``used_memory`` and the RSS of each gateway process; fault moments are
lines of their own. At the end it waits for the backlog, writes ``summary.json`` and
``samples.csv`` and exits 0 only if every acknowledged message was answered exactly once and
in order per conversation (:meth:`bench.soak_ledger.Ledger.verdict`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

import aiohttp
import redis

from bench import gateway
from bench.e2e import SignedCallbackEndpoint
from bench.procs import REPO, Server, free_port, rss_mib, spawn
from bench.soak_ledger import Ledger
from bench.soak_operator import replay_unknown_outcomes
from connectors.line.emulator import LineEmulator, LineWebhookSender, sign_body
from gateway.signing import SIGNATURE_HEADER, sign_request
from gateway.store import Keyspace

LINE_DEST = "U" + "5a" * 16
LINE_ENV = {
    "SOAK_LINE_SECRET": "soak-line-channel-secret",
    "SOAK_LINE_TOKEN": "soak-line-access-token",
}
LINE_SECRET, LINE_TOKEN = LINE_ENV["SOAK_LINE_SECRET"], LINE_ENV["SOAK_LINE_TOKEN"]
ECHO_PERSONA = "name: core\ndisplay_name: Echo\nagent: {kind: echo, options: {prefix: ''}}\n"
MESSAGES_PATH = f"/v1/channels/http/{gateway.TENANT}/messages"
_T = TypeVar("_T")
RETRY_STATUSES = frozenset({0, 429, 500, 502, 503, 504})
GIVE_UP_SECONDS = 120.0  # a platform's retries of one event stop after about this long


# -- redis-server that can be killed and restarted on its port ---------------------------------
@dataclass(slots=True)
class AofRedis:
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> AofRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (bash .ci/system-deps)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--dir", str(self.workdir), "--save", "", "--protected-mode", "no"]
        # ``always``: an admit that returned is on disk, so a SIGKILL loses nothing acked.
        cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        cores = tuple(sorted(os.sched_getaffinity(0)))
        self.proc = spawn(cmd, cores=cores, log_path=self.workdir / "redis.log")
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.client().ping() is True:
                    return self
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.workdir}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)


def redis_figures(server: AofRedis, keyspace: Keyspace) -> dict[str, Any]:
    """used_memory, key count, AOF size and the stream lengths; None while Redis is away."""
    client = server.client()
    try:
        memory = client.info("memory")
        persistence = client.info("persistence")
        pipe = client.pipeline(transaction=False)
        for p in range(keyspace.partitions):
            pipe.xlen(keyspace.inbox(p))
            pipe.xlen(keyspace.outbox(p))
            pipe.xlen(keyspace.dead_letters(p))
        lengths = pipe.execute()
        return {
            "redis_used_memory": int(memory["used_memory"]),
            "redis_rss": int(memory["used_memory_rss"]),
            "redis_keys": int(client.dbsize()),
            "aof_bytes": int(persistence.get("aof_current_size", 0)),
            "inbox_len": sum(lengths[0::3]),
            "outbox_len": sum(lengths[1::3]),
            "dead_letters": sum(lengths[2::3]),
        }
    except (redis.RedisError, OSError):
        return {"redis_used_memory": None, "redis_down": True}
    finally:
        client.close()


def ready(server: Server) -> bool:
    try:
        with urllib.request.urlopen(server.extra["ops_url"] + "/readyz", timeout=1) as r:  # noqa: S310 - loopback
            status: int = r.status
    except OSError:
        return False
    return 200 <= status < 300


# -- the callback receiver of the HTTP channel ---------------------------------------------------
@dataclass(slots=True)
class LedgerReceiver(SignedCallbackEndpoint):
    """Books each distinct reply (by idempotency key) in the ledger; counts wire retries."""

    ledger: Ledger = field(default_factory=Ledger)
    wire_retries: int = 0
    _keys: set[str] = field(default_factory=set)

    async def accept(self, body: bytes, key: str, arrived: float) -> None:
        if key in self._keys:
            self.wire_retries += 1
            return
        self._keys.add(key)
        payload = json.loads(body)
        self.ledger.answered(payload["conversation_id"], payload["text"])


# -- the soak --------------------------------------------------------------------------------
@dataclass(slots=True)
class Soak:
    out: Path
    workdir: Path
    minutes: float
    fault_minutes: float
    rate: float
    http_conversations: int
    line_users: int
    sample_seconds: float
    outage_seconds: float
    ledger: Ledger = field(default_factory=Ledger)
    servers: dict[str, Server] = field(default_factory=dict)
    record: TextIO | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    began: float = 0.0
    began_utc: str = ""
    pipeline: dict[str, Any] = field(default_factory=dict)  # config overrides (a short test)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    sending: bool = True
    line_seen: int = 0
    worker_kills: int = 0
    redis_restarts: int = 0
    replayed: int = 0  # outcome_unknown letters replayed (bench/soak_operator.py)

    def log(self, line: dict[str, Any]) -> None:
        line = {"t": round(time.monotonic() - self.began, 1), "utc": _utc(), **line}
        assert self.record is not None
        self.record.write(json.dumps(line) + "\n")
        self.record.flush()

    async def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        personas = self.workdir / "personas"
        personas.mkdir(parents=True, exist_ok=True)
        (personas / "core.yaml").write_text(ECHO_PERSONA)
        keyspace = Keyspace(partitions=gateway.PARTITIONS)
        store = await asyncio.to_thread(AofRedis(self.workdir / "redis").start)
        receiver = LedgerReceiver(gateway.CALLBACK_SECRET, ledger=self.ledger)
        await receiver.start()
        line = await LineEmulator().start()
        line.add_channel(destination=LINE_DEST, access_token=LINE_TOKEN, channel_secret=LINE_SECRET)
        data = gateway.config(
            store.url, callback_url=receiver.url, personas_dir=personas, pipeline=self.pipeline
        )
        data["tenants"][0]["channels"].append(
            {
                "kind": "line",
                "destination": LINE_DEST,
                "channel_secret": "env:SOAK_LINE_SECRET",
                "channel_access_token": "env:SOAK_LINE_TOKEN",
                "api_base_url": line.url,
                "fetch_profiles": False,
                "loading_indicator": False,
            }
        )
        cores = tuple(sorted(os.sched_getaffinity(0)))

        def start(name: str, role: str) -> Server:
            return gateway.start(
                name, data, workdir=self.workdir, cores=cores, role=role, env=LINE_ENV
            )

        self.record = (self.out / "samples.jsonl").open("a")
        try:
            for name, role in (("worker-a", "worker"), ("worker-b", "worker"), ("web", "web")):
                # Again on failure: a free port can be taken by another process before the
                # gateway binds it (seen on a busy machine).
                self.servers[name] = await self._again(functools.partial(start, name, role), name)
            self.began, self.began_utc = time.monotonic(), _utc()
            self.log({"event": "start", "pids": {n: s.pid for n, s in self.servers.items()}})
            end = self.began + self.minutes * 60
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=400),
                timeout=aiohttp.ClientTimeout(total=15),
            ) as session:
                web = self.servers["web"]
                sender = LineWebhookSender(
                    session=session,
                    gateway_url=web.url,
                    destination=LINE_DEST,
                    channel_secret=LINE_SECRET,
                    emulator=line,
                )
                conversations = self.http_conversations + self.line_users
                period = conversations / self.rate  # seconds between one conversation's sends
                senders = [
                    self._conversation(
                        f"h{n}", self._http_post(session, web.url), end, period, n / self.rate
                    )
                    for n in range(self.http_conversations)
                ] + [
                    self._conversation(
                        "U" + f"{n:032x}",
                        self._line_post(sender),
                        end,
                        period,
                        (self.http_conversations + n) / self.rate,
                    )
                    for n in range(self.line_users)
                ]
                sampler = asyncio.create_task(self._sampler(store, keyspace, line))
                faults = asyncio.create_task(self._faults(store, start, end))
                await asyncio.gather(*senders)
                self.sending = False
                self.log({"event": "sending stopped"})
                # Not cancelled: a restart under way finishes, so no process is left behind.
                self.stopping.set()
                await faults
                await self._drain(line, store.url, keyspace)
                sampler.cancel()
                await asyncio.gather(sampler, return_exceptions=True)
                self._book_line(line)
                self.samples.append(self._sample(store, keyspace))
                self.log(self.samples[-1])
            verdict = self.ledger.verdict()
            summary = {
                "began_utc": self.began_utc,
                "ended_utc": _utc(),
                "minutes_planned": self.minutes,
                "minutes_sending": round((min(time.monotonic(), end) - self.began) / 60, 2),
                "fault_minutes": self.fault_minutes,
                "offered_rate": self.rate,
                "http_conversations": self.http_conversations,
                "line_users": self.line_users,
                "worker_kills": self.worker_kills,
                "redis_restarts": self.redis_restarts,
                "http_wire_retries": receiver.wire_retries,
                "line_push_409": sum(1 for c in line.calls if c.status == 409),
                "dead_letters": self.samples[-1].get("dead_letters"),
                "dead_letters_replayed": self.replayed,
                **verdict,
            }
            summary["ok"] = bool(verdict["ok"]) and not summary["dead_letters"]
            self.log({"event": "summary", **summary})
            return summary
        finally:
            for server in self.servers.values():
                await asyncio.to_thread(server.stop)
            await asyncio.to_thread(store.stop)
            await line.stop()
            await receiver.stop()
            if self.record is not None:
                self.record.close()
            _write_csv(self.out / "samples.csv", self.samples)

    # -- load -----------------------------------------------------------------------------------
    def _http_post(
        self, session: aiohttp.ClientSession, url: str
    ) -> Callable[[str, str], Awaitable[int]]:
        async def post(conversation: str, text: str) -> int:
            body = json.dumps(
                {
                    "conversation_id": conversation,
                    "event_id": text,
                    "user": {"id": f"user-{conversation}", "name": "Soak User"},
                    "text": text,
                }
            ).encode()
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign_request(
                    [gateway.SIGNING_SECRET], "POST", MESSAGES_PATH, body
                ),
            }
            async with session.post(url + MESSAGES_PATH, data=body, headers=headers) as r:
                await r.read()
                return r.status

        return post

    def _line_post(self, sender: LineWebhookSender) -> Callable[[str, str], Awaitable[int]]:
        bodies: dict[str, bytes] = {}

        async def post(user: str, text: str) -> int:
            # A retry is the same webhook (same webhookEventId, same bytes) as LINE redelivers.
            body = bodies.setdefault(text, sender.body([sender.text(text, user_id=user)]))
            try:
                status, _ = await sender.post_raw(body, signature=sign_body(LINE_SECRET, body))
            finally:
                if len(bodies) > 1000:
                    bodies.clear()
            return status

        return post

    async def _conversation(
        self,
        conversation: str,
        post: Callable[[str, str], Awaitable[int]],
        end: float,
        period: float,
        offset: float,
    ) -> None:
        next_at = self.began + offset
        seq = 0
        while True:
            delay = min(next_at, end) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() >= end:
                return
            text = f"{conversation}:{seq}"
            seq += 1
            self.ledger.offered()
            give_up_at = time.monotonic() + GIVE_UP_SECONDS
            pause = 0.2
            while True:
                try:
                    status = await post(conversation, text)
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                self.ledger.attempt(status)
                if 200 <= status < 300:
                    self.ledger.acknowledged(conversation, text, time.monotonic())
                    break
                if status not in RETRY_STATUSES or time.monotonic() > give_up_at:
                    self.ledger.gave_up()
                    break
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
            next_at = max(next_at + period, time.monotonic())

    # -- faults ---------------------------------------------------------------------------------
    async def _faults(
        self, store: AofRedis, start: Callable[[str, str], Server], end: float
    ) -> None:
        """Redis SIGKILLed at every whole period, a worker half a period later, in turn."""
        period = self.fault_minutes * 60
        moments = []
        k = 1
        while self.began + k * period - period / 2 < end:
            moments.append((self.began + k * period - period / 2, "worker"))
            if self.began + k * period < end:
                moments.append((self.began + k * period, "redis"))
            k += 1
        for at, kind in moments:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max(0.0, at - time.monotonic()))
            if self.stopping.is_set():
                return
            if kind == "redis":
                store.kill()
                self.log({"event": "redis killed"})
                began = time.monotonic()
                await asyncio.sleep(self.outage_seconds)
                await self._again(store.start, "redis restart")
                self.redis_restarts += 1
                self.log({"event": "redis restarted", "down_s": _since(began)})
            else:
                name = ("worker-a", "worker-b")[self.worker_kills % 2]
                victim = self.servers[name]
                victim.proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(victim.proc.wait)
                self.worker_kills += 1
                self.log({"event": "worker killed", "name": name, "pid": victim.pid})
                began = time.monotonic()
                restart = functools.partial(start, name, "worker")
                self.servers[name] = await self._again(restart, name)
                self.log(
                    {
                        "event": "worker restarted",
                        "name": name,
                        "pid": self.servers[name].pid,
                        "ready_after_s": _since(began),
                    }
                )

    async def _again(self, start: Callable[[], _T], what: str) -> _T:
        """``start()`` in a thread until it succeeds (a restart must not end the soak)."""
        while True:
            try:
                return await asyncio.to_thread(start)
            except (RuntimeError, OSError) as exc:
                self.log({"event": "restart failed", "what": what, "error": str(exc)[:200]})
                await asyncio.sleep(2.0)

    # -- sampling -------------------------------------------------------------------------------
    def _book_line(self, line: LineEmulator) -> None:
        for delivery in line.deliveries[self.line_seen :]:
            for text in delivery.texts:
                self.ledger.answered(delivery.to, text)
        self.line_seen = len(line.deliveries)

    def _books(self) -> dict[str, Any]:
        """The ledger's figures. On the event loop: the senders and receivers change the
        ledger there, and reading its dicts from another thread can meet one mid-change."""
        now = time.monotonic()
        return {
            "t": round(now - self.began, 1),
            "utc": _utc(),
            "sent": self.ledger.sent,
            "acknowledged": self.ledger.acknowledged_count,
            "answered": self.ledger.answered_count,
            "duplicates": self.ledger.duplicates,
            "unanswered": self.ledger.unanswered(),
            "lost_so_far": self.ledger.lost_so_far(now),
            "refused": self.ledger.refused,
            "retried_posts": self.ledger.post_attempts - self.ledger.sent,
        }

    def _processes(self, store: AofRedis, keyspace: Keyspace) -> dict[str, Any]:
        """Redis' figures, each process' RSS and readiness (blocking: run in a thread)."""
        sample = redis_figures(store, keyspace)
        for name, server in list(self.servers.items()):
            rss = rss_mib(server.pid)
            sample[f"rss_{name}"] = None if rss is None else round(rss, 1)
            sample[f"ready_{name}"] = ready(server)
        own = rss_mib(os.getpid())
        sample["rss_soak"] = None if own is None else round(own, 1)
        return sample

    def _sample(self, store: AofRedis, keyspace: Keyspace) -> dict[str, Any]:
        return self._books() | self._processes(store, keyspace)

    async def _sampler(self, store: AofRedis, keyspace: Keyspace, line: LineEmulator) -> None:
        while True:
            await asyncio.sleep(self.sample_seconds)
            try:
                self._book_line(line)
                books = self._books()
                sample = books | await asyncio.to_thread(self._processes, store, keyspace)
                if sample.get("dead_letters"):
                    await self._replay(store.url, keyspace)
            except Exception as exc:  # noqa: BLE001 - a sample lost must not end the record
                self.log({"event": "sample failed", "error": f"{type(exc).__name__}: {exc}"})
                continue
            self.samples.append(sample)
            self.log(sample)
            print(_progress(sample), flush=True)

    async def _drain(
        self, line: LineEmulator, url: str, keyspace: Keyspace, *, patience: float = 180.0
    ) -> None:
        """Until every acknowledged message is answered, or nothing moved for ``patience`` s;
        then a few seconds more, in which a second answer to anything would arrive."""
        last, moved = -1, time.monotonic()
        while time.monotonic() - moved < patience:
            self._book_line(line)
            left = self.ledger.unanswered()
            if left == 0:
                break
            if left != last:
                last, moved = left, time.monotonic()
            await self._replay(url, keyspace)
            await asyncio.sleep(0.5)
        await asyncio.sleep(3.0)

    async def _replay(self, url: str, keyspace: Keyspace) -> None:
        for letter in await replay_unknown_outcomes(url, keyspace):
            self.replayed += 1
            self.log({"event": "dead letter replayed", "code": letter.code, "to": letter.channel})


def _since(began: float) -> float:
    return round(time.monotonic() - began, 2)


def _utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _progress(sample: dict[str, Any]) -> str:
    rss = " ".join(f"{k[4:]}={v}" for k, v in sample.items() if k.startswith("rss_"))
    return (
        f"[{sample['utc']} t={sample['t']:.0f}s] sent {sample['sent']} acked "
        f"{sample['acknowledged']} answered {sample['answered']} dup {sample['duplicates']} "
        f"lost-so-far {sample['lost_so_far']} dead {sample.get('dead_letters')} "
        f"redis {sample.get('redis_used_memory')} B; RSS MiB {rss}"
    )


def _write_csv(path: Path, samples: list[dict[str, Any]]) -> None:
    if not samples:
        return
    columns: list[str] = []
    for sample in samples:
        columns += [k for k in sample if k not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to send")
    parser.add_argument("--fault-minutes", type=float, default=10.0, help="fault period")
    parser.add_argument("--rate", type=float, default=30.0, help="messages per second offered")
    parser.add_argument("--http-conversations", type=int, default=240)
    parser.add_argument("--line-users", type=int, default=60)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--outage-seconds", type=float, default=2.0, help="Redis down this long")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / f"soak-{stamp}")
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / f"soak-{stamp}")
    args = parser.parse_args(argv)
    soak = Soak(
        out=args.out.resolve(),
        workdir=args.workdir.resolve(),  # the gateways run in the repository root
        minutes=args.minutes,
        fault_minutes=args.fault_minutes,
        rate=args.rate,
        http_conversations=args.http_conversations,
        line_users=args.line_users,
        sample_seconds=args.sample_seconds,
        outage_seconds=args.outage_seconds,
    )
    print(f"soak: {args.minutes} min at {args.rate}/s; record in {args.out}", flush=True)
    summary = asyncio.run(soak.run())
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
