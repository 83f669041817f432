"""A worker process SIGKILLed mid-run loses nothing and answers nothing twice.

The web role runs in the test process; workers run as real ``flowbiz serve --role worker``
processes on the same store. One is killed while messages flow; another takes over its
partitions once the leases expire and claims what the dead one left pending.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict

import aiohttp
import pytest
import yaml

from connectors.http_api.emulator import HttpChannelClient
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import PERSONAS_DIR, base_config, running_gateway

MESSAGES = 2000
CONVERSATIONS = 40


def _start_worker(config_path) -> subprocess.Popen:
    return subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--config",
            str(config_path),
            "--role",
            "worker",
            "--port",
            "0",
        ],
        env={**os.environ, **SECRETS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def crash_store(request, tmp_path) -> dict:
    """The ``store`` block of the config: SQLite, Redis, and a 3-master Redis Cluster."""
    if request.param == "sqlite":
        return {"url": f"sqlite:///{tmp_path}/gateway.db"}
    if request.param == "redis":
        return {"url": request.getfixturevalue("redis_url")}
    return {"url": request.getfixturevalue("redis_cluster_url"), "cluster": True}


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_sigkilled_worker_loses_nothing_and_answers_nothing_twice(
    crash_store, receiver, tmp_path
):
    """2,000 messages, the first worker killed part-way: each answered exactly once, in order."""
    data = base_config(crash_store["url"], tenants=[http_tenant(receiver.url)])
    data["store"].update(crash_store)
    data["personas_dir"] = str(tmp_path / "personas")
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "core.yaml").write_text(
        "name: core\ndisplay_name: Echo\nagent: {kind: echo, options: {prefix: ''}}\n"
    )
    data["routing"] = {"default_persona": "core"}
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(data))
    assert PERSONAS_DIR.is_dir()

    first = _start_worker(config_path)
    second = None
    try:
        async with running_gateway(data, role="web") as gw, aiohttp.ClientSession() as session:
            client = HttpChannelClient(
                session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
            )
            sent: dict[str, list[str]] = defaultdict(list)

            async def send_range(conv: int) -> None:
                for seq in range(MESSAGES // CONVERSATIONS):
                    text = f"c{conv}:{seq}"
                    status, _ = await client.send(
                        conversation_id=f"c{conv}", text=text, event_id=text
                    )
                    assert status == 202
                    sent[f"c{conv}"].append(text)

            producer = asyncio.create_task(
                asyncio.wait_for(
                    asyncio.gather(*(send_range(c) for c in range(CONVERSATIONS))), 120
                )
            )
            await receiver.wait_for(MESSAGES // 4, timeout=60)
            first.send_signal(signal.SIGKILL)
            first.wait()
            answered_before_kill = len(receiver.unique())
            second = _start_worker(config_path)
            await producer
            received = await receiver.wait_for(MESSAGES, timeout=90)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=15)

    assert answered_before_kill < MESSAGES, "the worker finished before it could be killed"
    await asyncio.sleep(1.0)  # a second answer to anything would arrive in this time
    unique = receiver.unique()
    assert len(unique) == MESSAGES
    in_reply_to = [cb.payload["in_reply_to"] for cb in unique]
    assert len(set(in_reply_to)) == MESSAGES, "some message was answered twice"
    by_conversation: dict[str, list[str]] = defaultdict(list)
    for cb in received:
        by_conversation[cb.payload["conversation_id"]].append(cb.payload["text"])
    for conversation, texts in sent.items():
        assert by_conversation[conversation] == texts, f"{conversation} out of order"
    # Retries of the same idempotency key (sent just before the kill) are allowed on the wire.
    assert all(json.dumps(cb.payload) for cb in receiver.received)
