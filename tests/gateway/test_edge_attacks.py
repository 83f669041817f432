"""Attacks on the public listener with raw sockets: slow heads, slow bodies, one client
hoarding connections, a huge Content-Length, an upload cut off halfway.

Each attack runs against the real gateway on loopback (``tests.harness``), with deadlines
shortened so every test takes about a second.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.signing import SIGNATURE_HEADER, sign_request
from tests.harness import (
    SECRETS,
    RunningGateway,
    base_config,
    eventually,
    http_tenant,
    running_gateway,
)

HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
PER_CLIENT = 8
PATH = "/v1/channels/http/acme/messages"


@pytest.fixture
async def gw(tmp_path: Path, channel_env: None) -> AsyncIterator[RunningGateway]:
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db",
        tenants=[http_tenant(None)],
        http={
            "header_timeout_seconds": HEADER_TIMEOUT,
            "body_timeout_seconds": BODY_TIMEOUT,
            "max_connections_per_client": PER_CLIENT,
            "max_body_bytes": 64 * 1024,
        },
    )
    async with running_gateway(data, role="web") as running:
        yield running


async def _connect(gw: RunningGateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = gw.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the socket longer."""
    data = b""
    async with asyncio.timeout(seconds):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


def _head(length: int | None, *, content_type: str = "application/json", extra: str = "") -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def _guard_count(gw: RunningGateway, event: str) -> float:
    value = gw.runtime.metrics.http_guard.labels("public", event)._value.get()
    return float(value)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def test_attack_slow_loris_heads_are_cut_at_the_head_deadline(gw: RunningGateway) -> None:
    """Connections trickling a request head byte by byte are all closed at the deadline."""
    attackers = [await _connect(gw) for _ in range(PER_CLIENT)]
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST " + PATH.encode() + b" HTTP/1.1\r\n")
        for n in range(40):  # 4 s of headers if nobody stops it
            await asyncio.sleep(0.1)
            if writer.is_closing():
                return
            try:
                writer.write(b"X-Slow-%d: y\r\n" % n)
                await writer.drain()
            except ConnectionError:
                return

    trickles = [asyncio.create_task(trickle(w)) for _, w in attackers]
    for reader, _ in attackers:
        await _closed_within(reader, HEADER_TIMEOUT + 1.0)
    assert loop.time() - started < HEADER_TIMEOUT + 1.0
    await asyncio.gather(*trickles)
    for _, writer in attackers:
        writer.close()
    assert _guard_count(gw, "header_timeout") == PER_CLIENT
    # The listener still serves an honest client.
    reader, writer = await _connect(gw)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(await _closed_within(reader, 2)) == 200
    writer.close()


async def test_attack_idle_connection_is_closed_at_the_head_deadline(gw: RunningGateway) -> None:
    """A connection that never sends a byte does not stay open."""
    reader, writer = await _connect(gw)
    assert await _closed_within(reader, HEADER_TIMEOUT + 1.0) == b""
    writer.close()


async def test_attack_slow_body_gets_408_at_the_body_deadline(gw: RunningGateway) -> None:
    """A body dripping in after a quick head is answered 408 and the connection closed."""
    reader, writer = await _connect(gw)
    writer.write(_head(1000))

    async def drip() -> None:
        for _ in range(40):
            await asyncio.sleep(0.1)
            if writer.is_closing():
                return
            try:
                writer.write(b" ")
                await writer.drain()
            except ConnectionError:
                return

    dripping = asyncio.create_task(drip())
    response = await _closed_within(reader, BODY_TIMEOUT + 1.5)
    await dripping
    writer.close()
    assert _status(response) == 408
    assert b'"error": "body_timeout"' in response


async def test_attack_one_client_cannot_hold_more_than_its_share_of_connections(
    gw: RunningGateway,
) -> None:
    """The connection over the per-client cap is answered 503 and closed at once."""
    held = [await _connect(gw) for _ in range(PER_CLIENT)]
    await asyncio.sleep(0.05)
    reader, writer = await _connect(gw)
    response = await _closed_within(reader, 1.0)
    writer.close()
    assert _status(response) == 503
    assert b"too_many_connections" in response
    assert _guard_count(gw, "too_many_connections") == 1
    # Releasing one frees a slot for the same client.
    held_reader, held_writer = held.pop()
    held_writer.close()
    await _closed_within(held_reader, 1.0)
    await asyncio.sleep(0.05)
    reader, writer = await _connect(gw)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(await _closed_within(reader, 1.0)) == 200
    writer.close()
    for _, w in held:
        w.close()


@pytest.mark.parametrize(
    ("head", "status", "error"),
    [
        (_head(10**12), 413, "too_large"),
        (_head(None, extra="Transfer-Encoding: chunked\r\n"), 411, "length_required"),
        (_head(10_000, content_type="text/plain"), 415, "unsupported_media_type"),
    ],
    ids=["huge-content-length", "no-content-length", "wrong-content-type"],
)
async def test_attack_body_refused_from_the_head_alone(
    gw: RunningGateway, head: bytes, status: int, error: str
) -> None:
    """The refusal comes back while not one byte of the body has been sent."""
    reader, writer = await _connect(gw)
    writer.write(head)
    async with asyncio.timeout(1.0):
        line = await reader.readline()
        headers = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(h.split(b":")[1])
        for h in headers.split(b"\r\n")
        if h.lower().startswith(b"content-length")
    )
    body = await reader.readexactly(length)
    writer.close()
    assert _status(line) == status
    assert json.loads(body)["error"] == error
    assert gw.runtime.metrics.inbound.labels("http", error)._value.get() == 1


async def test_attack_wrong_method_is_405_without_reading(gw: RunningGateway) -> None:
    """A PUT to a webhook route is refused by the router; its huge body is never read."""
    reader, writer = await _connect(gw)
    writer.write(f"PUT {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n".encode())
    async with asyncio.timeout(1.0):
        line = await reader.readline()
    writer.close()
    assert _status(line) == 405


async def test_attack_aborted_upload_is_a_debug_line_not_an_error(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that hangs up halfway through its body leaves no ERROR and no traceback."""
    caplog.set_level(logging.DEBUG)
    body = json.dumps({"conversation_id": "c", "user": {"id": "u"}, "text": "x" * 5000}).encode()
    for _ in range(3):
        reader, writer = await _connect(gw)
        writer.write(_head(len(body)) + body[: len(body) // 2])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # RST, as a client that crashed
    await eventually(lambda: gw.runtime.metrics.inbound.labels("http", "aborted")._value.get() == 3)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not any(r.exc_info for r in caplog.records)
    # An honest request on a fresh connection still goes through.
    honest = json.dumps({"conversation_id": "c", "user": {"id": "u"}, "text": "hi"}).encode()
    reader, writer = await _connect(gw)
    signature = sign_request([SECRETS["T_SIGN"]], "POST", PATH, honest)
    writer.write(_head(len(honest), extra=f"{SIGNATURE_HEADER}: {signature}\r\n") + honest)
    async with asyncio.timeout(2.0):
        line = await reader.readline()
    writer.close()
    assert _status(line) == 202


async def test_attack_compressed_body_is_bounded_by_its_inflated_size(gw: RunningGateway) -> None:
    """A gzip body whose Content-Length fits but which inflates past the limit is a 413
    ``too_large`` (counted, the usual JSON error), not a megabyte handed to a connector."""
    inflated = b'{"text": "' + b"a" * (256 * 1024) + b'"}'  # four times max_body_bytes
    body = gzip.compress(inflated)
    assert len(body) < 64 * 1024
    reader, writer = await _connect(gw)
    writer.write(_head(len(body), extra="Content-Encoding: gzip\r\n") + body)
    async with asyncio.timeout(2.0):
        line = await reader.readline()
        headers = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(h.split(b":")[1])
            for h in headers.split(b"\r\n")
            if h.lower().startswith(b"content-length")
        )
        answer = await reader.readexactly(length)
    writer.close()
    assert _status(line) == 413
    assert json.loads(answer)["error"] == "too_large"
    assert gw.runtime.metrics.inbound.labels("http", "too_large")._value.get() == 1
