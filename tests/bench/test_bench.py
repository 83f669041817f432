"""The bench's own plumbing: its CLI, wrk's output parser, and the signed-request replay."""

import asyncio
import json
import os
import shutil
import subprocess
import sys

import pytest
from aiohttp import web

from bench import gateway, wrk
from bench.cases.http_api import signed_messages
from gateway.errors import VerificationError
from gateway.signing import SIGNATURE_HEADER, verify_request

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
            verify_request(
                request.headers.get(SIGNATURE_HEADER),
                request.method,
                request.rel_url.raw_path,
                request.rel_url.raw_query_string,
                body,
                [gateway.SIGNING_SECRET],
            )
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


def test_slack_events_are_signed_as_slack_signs_them():
    """Each pre-signed Slack event passes slack_sdk's verifier and carries a unique event id."""
    from slack_sdk.signature import SignatureVerifier

    from bench.cases import slack

    verifier = SignatureVerifier(slack.SIGNING_SECRET)
    requests = list(slack.signed_events(20, "t"))
    ids = set()
    for r in requests:
        headers = dict(r.headers)
        assert verifier.is_valid(
            body=r.body,
            timestamp=headers["X-Slack-Request-Timestamp"],
            signature=headers["X-Slack-Signature"],
        )
        ids.add(json.loads(r.body)["event_id"])
    assert len(ids) == 20


def test_line_webhooks_parse_with_the_sdk_parser():
    """Each pre-signed LINE webhook is accepted by the SDK's WebhookParser as one text event."""
    from linebot.v3.webhook import WebhookParser

    from bench.cases import line

    parser = WebhookParser(line.CHANNEL_SECRET)
    for r in line.signed_webhooks(5, "t"):
        events = parser.parse(r.body.decode(), dict(r.headers)["X-Line-Signature"])
        assert [e.type for e in events] == ["message"]


def test_whatsapp_forms_validate_with_twilio_over_the_public_url():
    """Each pre-signed Twilio form validates over PUBLIC_URL + path and has its own MessageSid."""
    from urllib.parse import parse_qsl

    from twilio.request_validator import RequestValidator

    from bench.cases import whatsapp

    validator = RequestValidator(whatsapp.AUTH_TOKEN)
    sids = set()
    for r in whatsapp.signed_forms(5, "t"):
        params = dict(parse_qsl(r.body.decode()))
        url = whatsapp.PUBLIC_URL + whatsapp.PATH
        assert validator.validate(url, params, dict(r.headers)["X-Twilio-Signature"])
        sids.add(params["MessageSid"])
    assert len(sids) == 5


def test_mail_records_round_trip_through_the_request_file(tmp_path):
    """Mails written as request records read back intact, each with its own Message-ID."""
    from email import message_from_bytes

    from bench import smtpload
    from bench.cases import email

    path = tmp_path / "mails.txt"
    assert wrk.write_requests(path, email.mails(3, "t")) == 3
    mails = list(smtpload.read_mails(path))
    assert [m.rcpt_to for m in mails] == [email.ADDRESS] * 3
    ids = {message_from_bytes(m.data)["Message-ID"] for m in mails}
    assert len(ids) == 3
    assert mails[0].mail_from == "customer0000@customer.example"


async def test_smtp_load_generator_delivers_to_a_real_listener(tmp_path):
    """smtpload sends every mail of its file over its connections and counts the 250s."""
    from aiosmtpd.smtp import SMTP

    from bench import smtpload
    from bench.cases import email

    received: list[bytes] = []

    class Keep:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope.content)
            return "250 OK"

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Keep(), loop=loop), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    path = tmp_path / "mails.txt"
    wrk.write_requests(path, email.mails(12, "t"))
    try:
        result = await smtpload.run(
            "127.0.0.1", port, list(smtpload.read_mails(path)), seconds=10, connections=3
        )
    finally:
        server.close()
        await server.wait_closed()
    assert (result.requests, result.non_2xx, result.socket_errors) == (12, 0, 0)
    assert result.exhausted
    assert len(received) == 12


@pytest.mark.parametrize(
    ("key", "family"),
    [
        ("fb:{p3}:c:bench/http/conv-1:state", "conversation state"),
        ("fb:{p3}:c:bench%2Fhttp%2Fc-1:replies", "conversation replies log"),
        ("fb:{p0}:c:bench%2Fhttp%2Fc-1:in:01HX", "inbound marker (per message)"),
        ("fb:{p0}:c:bench%2Fhttp%2Fc-1:posted:k1", "callback posted claim (per reply)"),
        ("fb:{p1}:ix:bench:bench%2Fhttp%2Fc-1", "conversation index entry"),
        ("fb:{p0}:seen:http:bench:e-1", "dedupe claim (seen)"),
        ("fb:{p5}:outbox", "outbox stream"),
        ("fb:usage:bench:2026-01-01:http:core:inbound", "usage counters"),
        ("something-else", "other"),
    ],
)
def test_store_keys_fall_into_their_family(key, family):
    """The memory row groups every key shape of gateway/store/keys.py under a readable name."""
    from bench.scale import key_family

    assert key_family(key) == family


@pytest.mark.redis
async def test_bench_starts_a_redis_cluster_and_reads_its_leases(tmp_path):
    """The scale.cluster row's plumbing: ``store_url("redis-cluster")`` starts three masters
    joined into one cluster, the gateway's store opens on it, and the bench reads every
    partition's lease though they lie on different masters."""
    from bench.cases import RunContext
    from bench.procs import Placement
    from bench.scale import _lease_owners
    from gateway.store import Keyspace
    from gateway.store.redis import RedisStore
    from tests.conftest import redis_binary

    redis_binary()  # skips without redis-server, fails under CI
    ctx = RunContext(workdir=tmp_path, placement=Placement.choose())
    try:
        url = ctx.store_url("redis-cluster", tmp_path)
        assert ctx.redis_cluster is not None
        assert len(ctx.redis_cluster.pids) == 3
        store = await RedisStore.open(url, cluster=True)
        try:
            keyspace = Keyspace(partitions=gateway.PARTITIONS)
            for p in range(gateway.PARTITIONS):
                assert await store.acquire_lease(keyspace.lease("worker", p), f"o{p % 2}", ttl=30)
        finally:
            await store.aclose()
        owners = await asyncio.to_thread(
            _lease_owners, url, "worker", gateway.PARTITIONS, cluster=True
        )
        assert owners == ({"o0", "o1"} if gateway.PARTITIONS > 1 else {"o0"})
        assert ctx.store_url("redis-cluster", tmp_path) == url  # flushed and reused
        assert await asyncio.to_thread(_lease_owners, url, "worker", 1, cluster=True) == set()
    finally:
        if ctx.redis_cluster is not None:
            ctx.redis_cluster.stop()
