"""Logs never carry message text or secrets; SIGTERM shuts a serving process down cleanly."""

import asyncio
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys

import aiohttp
import pytest
import yaml

from connectors.http_api.emulator import HttpChannelClient
from gateway.observability import configure_logging
from gateway.store import Keyspace, open_store
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway

SECRET_TEXT = "my card is 4111 1111 1111 1111 and pin 9876"


@pytest.fixture
def captured_logs():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    configure_logging("debug", stream=stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)


async def test_logs_mask_text_and_secrets(store_url, receiver, captured_logs):
    """A full message path at debug level writes JSON lines without the text or any secret."""
    data = base_config(store_url, tenants=[http_tenant(receiver.url)])
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )
        await client.send(conversation_id="secret-conv", text=SECRET_TEXT)
        bad = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", signing_secret="guess"
        )
        assert (await bad.send(conversation_id="x", text=SECRET_TEXT))[0] == 401
        await receiver.wait_for(1)
        # Logged once the callback's answer is back, a moment after the receiver has it.
        await eventually(lambda: '"dispatch.delivered"' in captured_logs.getvalue())
    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    events = {line["event"] for line in lines}
    assert {"worker.turn_committed", "dispatch.delivered", "inbound.rejected"} <= events
    assert any(line.get("trace_id") for line in lines if line["event"] == "dispatch.delivered")
    text = captured_logs.getvalue()
    # Any fragment of the message; digits only standing alone: timestamps and hex ids may
    # contain "4111" or "9876" by chance.
    for fragment in ("my card", "4111 1111", "1111 1111", "pin 9876"):
        assert fragment not in text, fragment
    assert not re.search(r"(?<![0-9A-Za-z])(4111|9876)(?![0-9A-Za-z])", text)
    for secret in SECRETS.values():
        assert secret not in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
async def test_sigterm_stops_serving_cleanly(tmp_path, receiver):
    """`flowbiz serve` answers, then on SIGTERM finishes and exits 0, releasing its leases."""
    data = base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[http_tenant(receiver.url)])
    data["http"] = {"host": "127.0.0.1", "port": 0}
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump(data))
    # Free ports: bind, read them, release them, then hand them to the server.
    port, ops_port = _free_port(), _free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [
            *(sys.executable, "-m", "gateway.cli", "serve", "-c", str(config)),
            *("--port", str(port), "--operations-port", str(ops_port)),
        ],
        env={**os.environ, **SECRETS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as session:

            async def ready():
                try:
                    async with session.get(f"http://127.0.0.1:{ops_port}/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(ready, timeout=20)
            client = HttpChannelClient(
                session=session,
                base_url=f"http://127.0.0.1:{port}",
                tenant="acme",
                api_key=SECRETS["T_API_KEY"],
            )
            assert (await client.send(conversation_id="t", text="hello"))[0] == 202
            await receiver.wait_for(1)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
        assert code == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    # The process released its partition leases: a newcomer may take them at once.
    store = await open_store(data["store"]["url"])
    try:
        assert await store.acquire_lease(Keyspace().lease("worker", 0), "newcomer", ttl=5)
    finally:
        await store.aclose()
