"""wrk as the load generator: the pre-signed request file, the command line, its output."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.procs import pinned

SCRIPT = Path(__file__).resolve().parent / "sign.lua"


@dataclass(frozen=True, slots=True)
class RawRequest:
    """One request as wrk will send it (wrk adds Host and Content-Length)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def write_requests(path: Path, requests: Iterable[RawRequest]) -> int:
    """Write the record file ``sign.lua`` reads; returns how many records it holds."""
    count = 0
    with path.open("wb") as out:
        for r in requests:
            lines = [r.method, r.target, str(len(r.headers))]
            for name, value in r.headers:
                lines += [name, value]
            lines.append(str(len(r.body)))
            for part in lines:
                if "\n" in part:
                    raise ValueError("request fields may not contain newlines")
            out.write("\n".join(lines).encode() + b"\n" + r.body + b"\n")
            count += 1
    return count


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    wrapped: int  # how often a thread ran out of distinct requests and started over


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str) -> WrkResult:
    def find(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            if default is None:
                raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
            return default
        return match.group(1)

    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", output, re.MULTILINE)
    if done is None:
        raise ValueError(f"wrk output lacks the request count:\n{output}")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests=int(done.group(1)),
        seconds=_ms(done.group(2) + done.group(3)) / 1e3,
        rps=float(find(r"^Requests/sec:\s*([\d.]+)")),
        p50_ms=_ms(find(r"^\s*50%\s+(\S+)")),
        p99_ms=_ms(find(r"^\s*99%\s+(\S+)")),
        non_2xx=int(find(r"Non-2xx or 3xx responses: (\d+)", "0")),
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        wrapped=int(find(r"^bench-wrapped: (\d+)", "0")),
    )


def command(
    url: str,
    requests_file: Path,
    *,
    seconds: float,
    connections: int,
    threads: int,
    cores: Sequence[int],
) -> list[str]:
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed: FLOWBIZ_BENCH=1 bash .ci/system-deps")
    cmd = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(SCRIPT),
        url,
        "--",
        str(requests_file),
        str(threads),
    ]
    return pinned(cmd, cores)


def run(
    url: str,
    requests_file: Path,
    *,
    seconds: float,
    connections: int,
    threads: int,
    cores: Sequence[int],
) -> WrkResult:
    cmd = command(
        url, requests_file, seconds=seconds, connections=connections, threads=threads, cores=cores
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse(proc.stdout)
