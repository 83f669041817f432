"""Two real gateway processes on one Redis never exceed a tenant's quota by one message.

One gateway runs as a ``flowbiz serve --role all`` child process, the other in the test
process; both ingest, work and dispatch. Messages hammer both at once, one tenant, many
conversations (so both processes' workers take turns in parallel on different partitions).
"""

import asyncio
import os
import subprocess
import sys

import aiohttp
import pytest
import yaml

from connectors.http_api.emulator import HttpChannelClient
from gateway.config import PlanConfig
from tests.conftest import free_port
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway

QUOTA = 20
MESSAGES = 60


async def _wait_ready(session, url, process):
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError("the gateway process exited early")
        try:
            async with session.get(url + "/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the gateway process never became ready")


async def _drained(gw) -> bool:
    rt = gw.runtime
    backlog = 0
    for p in range(rt.keyspace.partitions):
        backlog += await rt.store.backlog(rt.keyspace.inbox(p), "workers")
        backlog += await rt.store.backlog(rt.keyspace.outbox(p), "dispatchers")
    return backlog == 0


@pytest.mark.timeout(90)
async def test_two_processes_hammering_one_tenant_send_exactly_the_quota(
    redis_url, receiver, tmp_path
):
    """60 messages split over two processes against a quota of 20: exactly 20 answers."""
    data = base_config(redis_url, tenants=[http_tenant(receiver.url) | {"plan": "metered"}])
    data["store"]["partitions"] = 8
    # No failover here: long leases keep a busy machine from expiring one mid-turn (a lease
    # lost mid-turn can only turn an answer into a notice, never exceed the quota).
    data["pipeline"]["lease_seconds"] = 5.0
    data["plans"] = {"metered": {"monthly_outbound_messages": QUOTA}}
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "core.yaml").write_text(
        "name: core\ndisplay_name: Echo\nagent: {kind: echo, options: {prefix: 're:'}}\n"
    )
    data["personas_dir"] = str(folder)
    data["routing"] = {"default_persona": "core"}
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(data))
    port, ops_port = free_port(), free_port()
    process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--config",
            str(config_path),
            "--role",
            "all",
            "--port",
            str(port),
            "--operations-port",
            str(ops_port),
        ],
        env={**os.environ, **SECRETS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session, running_gateway(data) as local:
            remote_url = f"http://127.0.0.1:{port}"
            await _wait_ready(session, f"http://127.0.0.1:{ops_port}", process)
            # Both processes must be working: the local one hands half its partitions over.
            worker = local.runtime.consumers[0]
            await eventually(lambda: 0 < len(worker.owned_partitions) <= 4, timeout=15)
            clients = [
                HttpChannelClient(
                    session=session, base_url=url, tenant="acme", api_key=SECRETS["T_API_KEY"]
                )
                for url in (local.url, remote_url)
            ]
            results = await asyncio.gather(
                *(
                    clients[n % 2].send(conversation_id=f"c{n}", text=f"m{n}")
                    for n in range(MESSAGES)
                )
            )
            assert all(status == 202 for status, _ in results)
            await eventually(lambda: _drained(local), timeout=30)
            await asyncio.sleep(0.3)
            texts = [cb.payload["text"] for cb in receiver.unique()]
            answers = [t for t in texts if t.startswith("re:")]
            notices = [t for t in texts if t == PlanConfig().over_quota_notice]
            assert len(answers) == QUOTA
            assert len(notices) == MESSAGES - QUOTA  # one per over-quota conversation
            status = await local.runtime.quotas.status("acme")
            assert status.outbound_messages.used == QUOTA
    finally:
        process.terminate()
        process.wait(timeout=15)
