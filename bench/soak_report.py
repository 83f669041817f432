"""A soak's record as Markdown: ``python -m bench.soak_report bench/results/soak-<stamp>``.

Reads ``samples.jsonl`` (written line by line by :mod:`bench.soak`, so a record cut short by
a crash still reads) and prints a table of one sample every ``--every`` minutes (and the
last), the fault moments, and the summary line if the run finished.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COLUMNS = (
    ("min", lambda s: f"{s['t'] / 60:.0f}"),
    ("sent", lambda s: f"{s['sent']:,}"),
    ("acked", lambda s: f"{s['acknowledged']:,}"),
    ("answered", lambda s: f"{s['answered']:,}"),
    ("dup", lambda s: str(s["duplicates"])),
    ("lost so far", lambda s: str(s["lost_so_far"])),
    ("dead", lambda s: _or_dash(s.get("dead_letters"))),
    (
        "inbox / outbox",
        lambda s: f"{_or_dash(s.get('inbox_len'))} / {_or_dash(s.get('outbox_len'))}",
    ),
    ("Redis used_memory MiB", lambda s: _mib(s.get("redis_used_memory"))),
    ("keys", lambda s: _or_dash(s.get("redis_keys"))),
    ("AOF MiB", lambda s: _mib(s.get("aof_bytes"))),
    ("RSS web", lambda s: _or_dash(s.get("rss_web"))),
    ("RSS worker-a", lambda s: _or_dash(s.get("rss_worker-a"))),
    ("RSS worker-b", lambda s: _or_dash(s.get("rss_worker-b"))),
)


def _or_dash(value: Any) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def report(folder: Path, *, every_minutes: float = 5.0) -> str:
    lines = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    samples = [line for line in lines if "sent" in line and "event" not in line]
    events = [line for line in lines if "event" in line and line["event"] != "summary"]
    summary = next((line for line in lines if line.get("event") == "summary"), None)
    chosen: list[dict[str, Any]] = []
    next_at = 0.0
    for sample in samples:
        if sample["t"] >= next_at:
            chosen.append(sample)
            next_at = sample["t"] - sample["t"] % (every_minutes * 60) + every_minutes * 60
    if samples and (not chosen or chosen[-1] is not samples[-1]):
        chosen.append(samples[-1])
    out = ["| " + " | ".join(name for name, _ in COLUMNS) + " |"]
    out.append("|" + "---|" * len(COLUMNS))
    out += ["| " + " | ".join(cell(s) for _, cell in COLUMNS) + " |" for s in chosen]
    out.append("")
    out.append("Fault moments (minutes from the start, UTC):")
    out.append("")
    for line in events:
        detail = {k: v for k, v in line.items() if k not in ("t", "utc", "event", "pids")}
        extra = f" {json.dumps(detail)}" if detail else ""
        out.append(f"- {line['t'] / 60:.2f} min ({line['utc']}): {line['event']}{extra}")
    if summary is not None:
        out += ["", "Summary:", "", "```json", json.dumps(summary, indent=2), "```"]
    else:
        out += ["", "No summary: the run did not finish."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_report", description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--every", type=float, default=5.0, help="minutes between rows")
    args = parser.parse_args(argv)
    print(report(args.folder, every_minutes=args.every))


if __name__ == "__main__":
    main()
