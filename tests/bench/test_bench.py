"""The bench's own plumbing: its CLI, wrk's output parser, and the signed-request replay."""

import asyncio
import os
import shutil
import subprocess
import sys

import pytest
from aiohttp import web

from bench import gateway, wrk
from bench.cases.http_api import signed_messages
from gateway.errors import VerificationError
from gateway.signing import SIGNATURE_HEADER, verify

WRK_OUTPUT = """\
Running 3s test @ http://127.0.0.1:41234
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  512.00us  19.87ms   91.00%
    Req/Sec    30.12k     1.20k   32.00k    80.00%
  Latency Distribution
     50%    1.90ms
     75%    2.20ms
     90%    2.60ms
     99%  850.00us
  90123 requests in 3.00s, 6.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  30041.00
Transfer/sec:      2.03MB
bench-wrapped: 0
"""


def test_help_runs():
    """`python -m bench --help` exits 0 and documents --quick."""
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, check=True
    )
    assert "--quick" in out.stdout


def test_wrk_output_is_parsed_with_units():
    """Rate, percentiles (mixed units), non-2xx and socket errors are read from wrk's report."""
    result = wrk.parse(WRK_OUTPUT)
    assert result.requests == 90123
    assert result.rps == pytest.approx(30041.0)
    assert result.p50_ms == pytest.approx(1.9)
    assert result.p99_ms == pytest.approx(0.85)
    assert (result.non_2xx, result.socket_errors, result.wrapped) == (7, 3, 0)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is a bench-only program")
async def test_sign_lua_replays_distinct_validly_signed_requests(tmp_path):
    """Every request wrk sends is one of the file's, correctly signed, none sent twice."""
    seen: list[str] = []
    bad = 0

    async def accept(request: web.Request) -> web.Response:
        nonlocal bad
        body = await request.read()
        try:
            verify(request.headers.get(SIGNATURE_HEADER), body, [gateway.SIGNING_SECRET])
        except VerificationError:
            bad += 1
        seen.append(body.decode())
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/v1/channels/http/{tenant}/messages", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    path = tmp_path / "requests.txt"
    assert wrk.write_requests(path, signed_messages(50_000, "t")) == 50_000
    try:
        cores = sorted(os.sched_getaffinity(0))
        url = f"http://127.0.0.1:{port}"
        cmd = wrk.command(url, path, seconds=1, connections=4, threads=2, cores=cores)
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        stdout, _ = await proc.communicate()
    finally:
        await runner.cleanup()
    result = wrk.parse(stdout.decode())
    assert result.requests > 0
    assert result.wrapped == 0
    assert bad == 0
    assert len(seen) == len(set(seen)), "an event id was sent twice"
