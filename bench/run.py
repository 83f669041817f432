"""``python -m bench``: run every case in one go and print one table (see bench/__init__.py)."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import channels_e2e, e2e, scale, wrk
from bench.cases import RequestMaker, RunContext, ThroughputCase, all_cases
from bench.procs import (
    REPO,
    Placement,
    RedisServer,
    Server,
    cpu_seconds,
    pinned,
    python_module,
    rss_mib,
    start_profiler,
)

E2E_STORES = ("sqlite", "redis", "redis-replica")
DEFAULT_RPS_GUESS = 15_000.0  # sizes the request file when no baseline ran first


@dataclass(slots=True)
class Row:
    key: str
    label: str
    load: str
    rps: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    vs_bare: float = math.nan
    vs_own: float = math.nan
    cpu_vs_bare: float = math.nan  # bare's CPU per request / this case's: the ratio on a free core
    cpu_us: float = math.nan  # server CPU time per request: steadier than req/s when shared
    rss_before: float | None = None
    rss_after: float | None = None
    notes: list[str] = field(default_factory=list)
    failed: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Options:
    seconds: float
    warmup: float
    connections: int
    smtp_connections: int
    threads: int
    rate: float
    channel_rate: float
    e2e_seconds: float
    crash: bool
    repeat_baseline: bool
    selected: set[str] | None
    profile: Path | None
    conversations: int
    scale_conversations: int
    rss_count: int
    rss_rate: float
    rss_max_seconds: float | None


class RequestFiles:
    """Pre-signed request files, made once per (generator, size, tag) and reused."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._made: dict[tuple[int, int, str], tuple[Path, float]] = {}

    def get(self, maker: RequestMaker, count: int, tag: str) -> tuple[Path, float]:
        """The file and how long signing it took."""
        key = (id(maker), count, tag)
        if key not in self._made:
            began = time.perf_counter()
            # Named by generator too: several generators make files of the same size and tag.
            name = f"{maker.__module__.rsplit('.', 1)[-1]}.{maker.__name__}"
            path = self.folder / f"requests-{name}-{tag}-{count}.txt"
            wrk.write_requests(path, maker(count, tag))
            self._made[key] = (path, time.perf_counter() - began)
        return self._made[key]


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line[:200] for line in text[-lines:])


def _profile(server: Server, out: Path, seconds: float, load: Callable[[], object]) -> str:
    """py-spy record the server while ``load`` runs again (not measured)."""
    spy = start_profiler(server.pid, out / f"{server.name}.collapsed", seconds)
    if spy is None:
        return "profile skipped: py-spy not installed (pip install py-spy)"
    load()
    spy.wait(timeout=seconds + 30)
    return f"profile: {out / server.name}.collapsed"


def run_throughput(
    case: ThroughputCase,
    ctx: RunContext,
    files: RequestFiles,
    opts: Options,
    *,
    expected_rps: float,
) -> Row:
    smtp = case.driver == "smtp"
    connections = opts.smtp_connections if smtp else opts.connections
    row = Row(
        key=case.key,
        label=case.label,
        load=f"{'smtpload' if smtp else 'wrk'} {connections} conns, {opts.seconds:g}s",
    )
    missing = [p for p in case.needs if shutil.which(p) is None]
    if missing:
        row.failed = f"needs {', '.join(missing)}"
        return row
    # Enough distinct requests for the run, sized from the baseline's rate (an upper bound).
    rate = expected_rps if case.rate_cap is None else min(expected_rps, case.rate_cap)
    if case.unique or smtp:  # smtpload stops when its file is used up: size it too
        main_count = int(rate * opts.seconds * 1.2) + 2 * connections
        warm_count = int(rate * opts.warmup * 1.2) + 2 * connections
    else:
        main_count = warm_count = 20_000
    warm_file, _ = files.get(case.requests, warm_count, "warm")
    main_file, signing = files.get(case.requests, main_count, "main")
    row.detail["requests_file"] = main_count
    row.detail["signing_seconds"] = round(signing, 2)
    try:
        server = case.start(ctx)
    except RuntimeError as exc:
        row.failed = str(exc)
        logs = sorted(ctx.workdir.glob("*/*.log"), key=lambda p: p.stat().st_mtime)
        if logs:
            row.failed += f": {_tail(logs[-1])}"
        return row
    try:
        row.rss_before = rss_mib(server.pid)

        exhausted: list[bool] = []

        def load(path: Path, seconds: float) -> wrk.WrkResult:
            if smtp:
                result, ran_out = smtp_run(
                    int(server.extra["smtp_port"]),
                    path,
                    seconds=seconds,
                    connections=connections,
                    cores=ctx.placement.load,
                )
                exhausted.append(ran_out)
                return result
            return wrk.run(
                server.url,
                path,
                seconds=seconds,
                connections=connections,
                threads=opts.threads,
                cores=ctx.placement.load,
            )

        if opts.warmup > 0:
            load(warm_file, opts.warmup)
        cpu_before = cpu_seconds(server.pid)
        result = load(main_file, opts.seconds)
        cpu_after = cpu_seconds(server.pid)
        row.rss_after = rss_mib(server.pid)
        if cpu_before is not None and cpu_after is not None and result.requests:
            row.cpu_us = (cpu_after - cpu_before) / result.requests * 1e6
            share = (cpu_after - cpu_before) / result.seconds
            row.detail["server_core_share"] = round(share, 2)
            row.notes.append(f"server busy {share:.0%} of its core")
        row.rps, row.p50_ms, row.p99_ms = result.rps, result.p50_ms, result.p99_ms
        row.detail["wrk"] = asdict(result)
        if result.non_2xx or result.socket_errors:
            row.notes.append(f"{result.non_2xx} non-2xx, {result.socket_errors} socket errors")
        if case.unique and result.wrapped:
            row.notes.append(f"ran out of fresh ids {result.wrapped}x (duplicates sent)")
        if exhausted and exhausted[-1]:
            row.notes.append("the mail file ran out before the time was up")
        if opts.profile is not None and case.unique:
            prof_file, _ = files.get(case.requests, main_count, "profile")
            row.notes.append(
                _profile(
                    server,
                    opts.profile,
                    opts.seconds,
                    lambda: load(prof_file, opts.seconds),
                )
            )
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        row.failed = f"{exc}: {_tail(server.log_path)}"
    finally:
        server.stop()
    if server.proc.returncode not in (0, -15) and row.failed is None:
        row.notes.append(f"server exited {server.proc.returncode}")
    if case.check is not None and row.failed is None:
        try:
            acked = row.detail["wrk"]["requests"] - row.detail["wrk"]["non_2xx"]
            row.notes.append(f"{case.check(ctx, server)} (>= {acked} acked in the timed run)")
        except (RuntimeError, OSError) as exc:
            row.notes.append(f"check failed: {exc}")
    return row


def smtp_run(
    port: int, path: Path, *, seconds: float, connections: int, cores: Sequence[int]
) -> tuple[wrk.WrkResult, bool]:
    """``python -m bench.smtpload`` pinned to ``cores``: its result, and whether it ran out."""
    cmd = pinned(
        python_module(
            "bench.smtpload",
            "--port",
            str(port),
            "--file",
            str(path),
            "--seconds",
            str(seconds),
            "--connections",
            str(connections),
        ),
        cores,
    )
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 120, check=False, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"smtpload failed ({proc.returncode}): {proc.stderr[-500:]}")
    data = json.loads(proc.stdout)
    exhausted = bool(data.pop("exhausted"))
    return wrk.WrkResult(**data), exhausted


def run_e2e(ctx: RunContext, opts: Options, store: str) -> Row:
    row = Row(
        key=f"e2e.{store}",
        label=f"(c) end to end, {store}, role all, rules agent",
        load=f"{opts.rate:g} msg/s fixed, {opts.e2e_seconds:g}s",
    )
    try:
        r = e2e.fixed_rate(
            ctx, store=store, rate=opts.rate, seconds=opts.e2e_seconds, profile=opts.profile
        )
    except RuntimeError as exc:
        row.failed = str(exc)
        return row
    return _e2e_row(row, r)


def run_channel_e2e(ctx: RunContext, opts: Options, channel: channels_e2e.ChannelE2E) -> Row:
    row = Row(
        key=f"e2e.{channel.key}",
        label=f"(c) end to end, {channel.label}, redis",
        load=f"{opts.channel_rate:g} msg/s fixed, {opts.e2e_seconds:g}s",
    )
    try:
        r, notes = channels_e2e.fixed_rate(
            ctx, channel, rate=opts.channel_rate, seconds=opts.e2e_seconds, profile=opts.profile
        )
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        row.failed = str(exc)
        return row
    _e2e_row(row, r)
    if r.extra_replies:
        row.notes.append(f"{r.extra_replies} replies beyond one per message")
    row.notes.extend(notes)
    return row


def _e2e_row(row: Row, r: e2e.E2EResult) -> Row:
    row.rps, row.p50_ms, row.p99_ms = r.delivered_per_s, r.p50_ms, r.p99_ms
    row.rss_before, row.rss_after = r.rss_before, r.rss_after
    row.cpu_us = r.cpu_us_per_message
    row.detail = asdict(r)
    row.notes.append(f"ack p50/p99 {r.ack_p50_ms:.1f}/{r.ack_p99_ms:.1f} ms")
    row.notes.append(f"max {r.max_ms:.0f} ms; {r.delivered}/{r.sent} delivered")
    if not math.isnan(r.cpu_us_per_message):
        row.notes.append(f"one core sustains ~{1e6 / r.cpu_us_per_message:,.0f} msg/s")
    if r.lost or r.failed_posts:
        row.notes.append(f"LOST {r.lost}, failed posts {r.failed_posts}")
    if r.delivered_per_s < 0.9 * r.offered_rate:
        row.notes.append("fell behind the offered rate: the latencies are mostly queueing")
    return row


def run_scale(ctx: RunContext, opts: Options, processes: int, store: str = "redis") -> Row:
    cluster = store == "redis-cluster"
    row = Row(
        key="scale.cluster" if cluster else f"scale.{processes}",
        label=f"(e) scale-out: {processes} x role all, "
        + ("redis cluster (3 masters)" if cluster else "redis")
        + ", rules agent",
        load=f"closed loop, {opts.scale_conversations} convs, {opts.seconds:g}s",
    )
    try:
        r = scale.scale_out(
            ctx,
            processes=processes,
            seconds=opts.seconds,
            warmup=max(2.0, opts.warmup),
            conversations=opts.scale_conversations,
            store=store,
        )
    except RuntimeError as exc:
        row.failed = str(exc)
        return row
    row.rps, row.p50_ms, row.p99_ms = r.per_s, r.p50_ms, r.p99_ms
    row.cpu_us = r.cpu_us_per_message
    row.detail = asdict(r)
    placed = ", ".join(
        f"core {','.join(map(str, c))} busy {share:.0%}"
        for c, share in zip(r.cores, r.core_share, strict=True)
    )
    row.notes.append(f"gateway on {placed}")
    row.notes.append(
        f"load generator busy {r.load_share:.0%}, redis-server {r.redis_share:.0%} (core "
        f"{','.join(map(str, ctx.placement.load))})"
    )
    row.notes.append(f"{r.delivered} replies in the window")
    if r.delivered:
        # What every process on the machine spends per reply bounds what two cores can do.
        others = (r.load_share + r.redis_share) * r.seconds / r.delivered * 1e6
        total = r.cpu_us_per_message + others
        cores = os.cpu_count() or 1
        row.notes.append(
            f"{total:,.0f} us of CPU per reply in all (gateway {r.cpu_us_per_message:,.0f}, "
            f"load generator and redis {others:,.0f}): {cores} cores do at most "
            f"{cores * 1e6 / total:,.0f}/s"
        )
    if r.failed:
        row.notes.append(f"{r.failed} not accepted or not answered in 30 s")
    return row


def run_memory(ctx: RunContext, conversations: int) -> Row:
    row = Row(
        key="memory.redis",
        label="(f) Redis bytes per idle conversation",
        load=f"{conversations} convs x 1 msg, then idle",
    )
    try:
        r = scale.redis_memory(ctx, conversations=conversations)
    except (RuntimeError, OSError) as exc:
        row.failed = str(exc)
        return row
    row.detail = asdict(r)
    top = ", ".join(
        f"{name} {f['per_conversation']:.0f}"
        for name, f in r.families.items()
        if f["per_conversation"] >= 1
    )
    row.notes.append(
        f"{r.per_conversation_beyond_history:.0f} B/conversation beyond its history "
        f"(history {r.history_bytes_per_conversation:.0f} B, whole state JSON "
        f"{r.state_value_bytes_per_conversation:.0f} B); retained per message "
        f"{r.retained_per_message:.0f} B; used_memory +{r.used_memory_delta / conversations:.0f}"
        f" B/conversation; by family (B/conv): {top}"
    )
    if r.replies < r.messages:
        row.notes.append(f"only {r.replies}/{r.messages} answered")
    return row


def run_rss(ctx: RunContext, *, count: int, rate: float, max_seconds: float | None) -> Row:
    row = Row(
        key="rss.redis",
        label="(g) gateway RSS over many messages, redis",
        load=f"{count:,} msgs at {rate:g} msg/s",
    )

    def progress(text: str) -> None:
        print(f"#   {text}", file=sys.stderr)

    try:
        r = scale.rss_run(ctx, count=count, rate=rate, max_seconds=max_seconds, progress=progress)
    except RuntimeError as exc:
        row.failed = str(exc)
        return row
    row.detail = asdict(r)
    row.rps = r.delivered / r.seconds
    row.cpu_us = r.cpu_us_per_message
    row.rss_before, row.rss_after = r.rss_after_warmup, r.rss_end
    if r.stopped_by_time:
        row.notes.append(f"time cap: {r.sent:,} of {r.requested:,} sent")
    row.notes.append(f"{r.delivered:,}/{r.sent:,} answered in {r.seconds:.0f} s")
    if r.growth_mib is not None:
        row.notes.append(
            f"RSS after 10% {r.rss_after_warmup:.1f}, peak {r.rss_peak:.1f}, end "
            f"{r.rss_end:.1f} MiB (growth {r.growth_mib:+.1f} MiB)"
        )
    row.notes.append(f"redis used_memory +{r.redis_growth_bytes_per_message:.0f} B/message")
    return row


def run_crash(ctx: RunContext, store: str) -> Row:
    row = Row(
        key=f"crash.{store}",
        label=f"(d) worker SIGKILLed, {store}, echo agent",
        load="2000 msgs, 40 convs, web + 2 workers",
    )
    try:
        r = e2e.crash(ctx, store=store)
    except RuntimeError as exc:
        row.failed = str(exc)
        return row
    row.rps, row.p50_ms, row.p99_ms = r.messages / r.seconds, r.p50_ms, r.p99_ms
    row.detail = asdict(r)
    row.notes.append(
        f"lost {r.lost}, answered twice {r.answered_twice}, out of order {r.out_of_order}, "
        f"wire retries {r.wire_retries}, longest gap after kill {r.recovery_gap_ms:.0f} ms"
    )
    return row


# -- the table ------------------------------------------------------------------------------------
def _num(value: float, fmt: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, fmt)


def _rss(row: Row) -> str:
    if row.rss_before is None or row.rss_after is None:
        return "-"
    return f"{row.rss_before:.0f}->{row.rss_after:.0f}"


def render(rows: Sequence[Row]) -> str:
    header = ["case", "load", "req/s", "p50 ms", "p99 ms", "x bare", "CPU us/req", "x bare CPU"]
    header += ["RSS MiB", "notes"]
    lines = []
    for r in rows:
        if r.failed is not None:
            lines.append([r.label, r.load, *["-"] * 7, f"FAILED: {r.failed}"])
            continue
        ratio = _num(r.vs_bare, ".0%")
        if not math.isnan(r.vs_own):
            ratio += f" (own {r.vs_own:.0%})"
        lines.append(
            [
                r.label,
                r.load,
                _num(r.rps, ",.0f"),
                _num(r.p50_ms, ".2f"),
                _num(r.p99_ms, ".2f"),
                ratio,
                _num(r.cpu_us, ".0f"),
                _num(r.cpu_vs_bare, ".0%"),
                _rss(r),
                "; ".join(r.notes),
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header[:-1])]

    def fmt(cells: Sequence[str]) -> str:
        left = (0, 1)
        parts = [
            c.ljust(widths[i]) if i in left else c.rjust(widths[i])
            for i, c in enumerate(cells[:-1])
        ]
        return " | ".join([*parts, cells[-1]]).rstrip()

    rule = "-+-".join("-" * w for w in widths) + "-+-" + "-" * 5
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])


def machine(placement: Placement, redis: RedisServer | None) -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = "absent"
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
        wrk_version = (out.stdout or out.stderr).split("Copyright")[0].strip()
    return {
        "cpu": f"{model}, {os.cpu_count()} logical cores",
        "placement": placement.describe(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": metadata.version("aiohttp"),
        "sqlite": sqlite3.sqlite_version,
        "redis-server": (redis or RedisServer(Path("."), cores=())).version(),
        "wrk": wrk_version,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Options]:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Bare aiohttp vs the gateway's ingest (per store) vs end to end, one table.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs, no crash scenario")
    parser.add_argument("--seconds", type=float, help="timed wrk run per case (default 10)")
    parser.add_argument("--warmup", type=float, help="untimed wrk run first (default 2)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--smtp-connections", type=int, default=32, help="SMTP load generator connections"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rate", type=float, default=500, help="end-to-end messages/s")
    parser.add_argument(
        "--channel-rate",
        type=float,
        default=200,
        help="messages/s of the per-channel end-to-end rows (e2e.slack, e2e.email, ...)",
    )
    parser.add_argument("--e2e-seconds", type=float, help="end-to-end run (default 10)")
    parser.add_argument("--no-crash", action="store_true", help="skip the SIGKILL scenario")
    parser.add_argument(
        "--cases",
        help="comma-separated keys to run (e.g. bare,http.redis,e2e.redis,crash.redis); "
        "ratios need bare",
    )
    parser.add_argument(
        "--conversations", type=int, help="idle conversations for the Redis memory row (2000)"
    )
    parser.add_argument(
        "--scale-conversations",
        type=int,
        default=64,
        help="conversations of the scale-out rows' closed loop, one message in flight each (64)",
    )
    parser.add_argument(
        "--long",
        type=int,
        nargs="?",
        const=1_000_000,
        metavar="COUNT",
        help="only the RSS row, over COUNT messages (default 1,000,000) instead of 15,000",
    )
    parser.add_argument("--long-rate", type=float, default=450, help="RSS row msg/s (450)")
    parser.add_argument(
        "--long-max-seconds", type=float, help="stop the RSS row's sending after this long"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy each ingest and end-to-end case (an extra, unmeasured pass) into this folder",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--list", action="store_true", help="list the case keys and exit")
    args = parser.parse_args(argv)
    quick = args.quick
    opts = Options(
        seconds=args.seconds or (3.0 if quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if quick else 2.0),
        connections=args.connections,
        smtp_connections=args.smtp_connections,
        threads=args.threads,
        rate=args.rate,
        channel_rate=args.channel_rate,
        e2e_seconds=args.e2e_seconds or (3.0 if quick else 10.0),
        crash=not (quick or args.no_crash),
        repeat_baseline=not quick,
        selected=(
            set(args.cases.split(","))
            if args.cases
            else ({"rss.redis"} if args.long is not None else None)
        ),
        profile=args.profile,
        conversations=args.conversations or (500 if quick else 2000),
        scale_conversations=args.scale_conversations,
        rss_count=args.long or (3000 if quick else 15_000),
        rss_rate=args.long_rate,
        rss_max_seconds=args.long_max_seconds,
    )
    return args, opts


def main(argv: Sequence[str] | None = None) -> int:
    args, opts = _parse(argv)
    cases = all_cases()
    keys = [c.key for c in cases] + [f"e2e.{s}" for s in E2E_STORES]
    keys += [f"e2e.{c.key}" for c in channels_e2e.CHANNELS] + ["crash.redis"]
    keys += ["scale.1", "scale.2", "scale.cluster", "memory.redis", "rss.redis"]
    if args.list:
        print("\n".join(keys))
        return 0
    if opts.selected is not None and not opts.selected <= set(keys):
        print(f"unknown case(s): {sorted(opts.selected - set(keys))}", file=sys.stderr)
        return 2

    def wanted(key: str) -> bool:
        return opts.selected is None or key in opts.selected

    placement = Placement.choose()
    os.sched_setaffinity(0, placement.load)  # this process drives load and receives callbacks
    workdir = Path(tempfile.mkdtemp(prefix="flowbiz-bench-"))
    ctx = RunContext(workdir=workdir, placement=placement)
    files = RequestFiles(workdir)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"# {command}", file=sys.stderr)
    print(f"# {placement.describe()}; scratch {workdir}", file=sys.stderr)
    began = time.perf_counter()
    info: dict[str, str] = {}
    rows: list[Row] = []
    try:
        info = machine(placement, None)
        expected = DEFAULT_RPS_GUESS
        plan = [c for c in cases if wanted(c.key)]
        for case in plan:
            print(f"# running {case.key} ...", file=sys.stderr)
            row = run_throughput(case, ctx, files, opts, expected_rps=expected)
            if case.key == "bare" and row.failed is None:
                expected = row.rps
            rows.append(row)
        for store in E2E_STORES:
            if wanted(f"e2e.{store}"):
                print(f"# running e2e.{store} ...", file=sys.stderr)
                rows.append(run_e2e(ctx, opts, store))
        for channel in channels_e2e.CHANNELS:
            if wanted(f"e2e.{channel.key}"):
                print(f"# running e2e.{channel.key} ...", file=sys.stderr)
                rows.append(run_channel_e2e(ctx, opts, channel))
        if opts.crash and wanted("crash.redis"):
            print("# running crash.redis ...", file=sys.stderr)
            rows.append(run_crash(ctx, "redis"))
        for processes in (1, 2):
            if wanted(f"scale.{processes}"):
                print(f"# running scale.{processes} ...", file=sys.stderr)
                rows.append(run_scale(ctx, opts, processes))
        if wanted("scale.cluster"):
            print("# running scale.cluster ...", file=sys.stderr)
            rows.append(run_scale(ctx, opts, 1, "redis-cluster"))
        if wanted("memory.redis"):
            print("# running memory.redis ...", file=sys.stderr)
            rows.append(run_memory(ctx, opts.conversations))
        if wanted("rss.redis"):
            print(f"# running rss.redis ({opts.rss_count:,} messages) ...", file=sys.stderr)
            rows.append(
                run_rss(
                    ctx,
                    count=opts.rss_count,
                    rate=opts.rss_rate,
                    max_seconds=opts.rss_max_seconds,
                )
            )
        bare_rows = [r for r in rows if r.key == "bare" and r.failed is None]
        if opts.repeat_baseline and bare_rows:
            print("# running bare again ...", file=sys.stderr)
            again = run_throughput(cases[0], ctx, files, opts, expected_rps=expected)
            again.label += ", again at the end"
            again.key = "bare.end"
            rows.append(again)
            if again.failed is None:
                bare_rows.append(again)
        info["redis-server"] = (ctx.redis or RedisServer(workdir, cores=())).version()
    finally:
        if ctx.redis is not None:
            ctx.redis.stop()
        if ctx.redis_cluster is not None:
            ctx.redis_cluster.stop()
        ctx.stop_others()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    bare = sum(r.rps for r in bare_rows) / len(bare_rows) if bare_rows else math.nan
    bare_cpu = sum(r.cpu_us for r in bare_rows) / len(bare_rows) if bare_rows else math.nan
    by_key = {r.key: r for r in rows}
    own = {c.key: c.baseline for c in cases}
    by_case = {c.key: c for c in cases}
    for r in rows:
        http = by_case[r.key].vs_bare_http if r.key in by_case else r.key == "bare.end"
        if r.failed is None and http:
            r.vs_bare = r.rps / bare
            r.cpu_vs_bare = bare_cpu / r.cpu_us
        base = own.get(r.key)
        if r.key in {"scale.2", "scale.cluster"}:
            base = "scale.1"
        if base is not None and base in by_key and by_key[base].failed is None:
            r.vs_own = r.rps / by_key[base].rps
            own_cpu = by_key[base].cpu_us / r.cpu_us
            if not math.isnan(own_cpu):
                r.notes.insert(0, f"x own CPU {own_cpu:.0%}")
    elapsed = time.perf_counter() - began
    info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(render(rows))
    print()
    print(
        f"x bare = req/s / mean of the bare-aiohttp runs ({_num(bare, ',.0f')} req/s); "
        f"x bare CPU = bare's server CPU per request ({_num(bare_cpu, '.0f')} us) / the "
        "case's: the throughput ratio on an otherwise idle core, steadier on a shared machine."
    )
    print(
        "Ingest rows: closed-loop wrk latencies at saturation. End-to-end rows: req/s = "
        "replies delivered/s, p50/p99 from scheduled send to signed callback received (per "
        "channel: to the reply's arrival at the platform's emulator)."
    )
    for name, value in info.items():
        print(f"{name}: {value}")
    print(f"command: {command}  ({elapsed:.0f} s)")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"command": command, "machine": info, "rows": [asdict(r) for r in rows]},
                indent=2,
                default=str,
            )
        )
    return 0 if all(r.failed is None for r in rows) else 1
