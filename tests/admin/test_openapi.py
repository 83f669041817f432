"""``/v1/openapi.json`` describes the served routes, and schemathesis finds no fault in them."""

import asyncio
import os
import shutil
import sys
from pathlib import Path

import aiohttp
import pytest

from connectors.http_api.emulator import HttpChannelClient
from gateway.admin.keys import Role, create_key
from gateway.admin.routes import OPERATIONS
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway

# Referring to an unknown tenant, plan or persona in a well-formed body is a 422 here.
SCHEMATHESIS_CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"""


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("schemathesis is not installed (it is in the dev extra)")
        pytest.skip("schemathesis is not installed")
    return found


@pytest.fixture
async def gateway(tmp_path, receiver):
    data = base_config(f"sqlite:///{tmp_path}/g.db", tenants=[http_tenant(receiver.url)])
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        rt = gw.runtime
        _, token = await create_key(rt.store, rt.keyspace, name="fuzz", role=Role.ADMIN)
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        receiver.fail_next(1, status=400)  # one dead letter, so those routes have data
        await client.send(conversation_id="c1", text="hello")
        await client.send(conversation_id="c2", text="hello")
        yield gw, session, token


async def test_document_describes_exactly_the_admin_routes(gateway):
    """Every /v1 admin route served is in the document with its method, and nothing else."""
    gw, session, _ = gateway
    async with session.get(gw.ops_url + "/v1/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    served = set()
    for resource in gw.ops_app.router.resources():
        path = resource.canonical
        if not path.startswith("/v1/") or path.startswith("/v1/channels/"):
            continue
        if path == "/v1/openapi.json":
            continue
        served |= {(route.method, path) for route in resource if route.method != "HEAD"}
    assert documented == served
    for ops in document["paths"].values():
        for op in ops.values():
            assert {"401", "403"} <= set(op["responses"])


@pytest.mark.timeout(120)
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(gateway, tmp_path):
    """All schemathesis checks over every operation, bounded: few examples, loopback only."""
    gw, _, token = gateway
    await eventually(lambda: gw.runtime.store is not None)
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    process = await asyncio.create_subprocess_exec(
        _schemathesis(),
        "--config-file",
        str(config),
        "run",
        f"{gw.ops_url}/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "5",
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "5",
        "--generation-database",
        "none",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=str(tmp_path),
    )
    try:
        async with asyncio.timeout(100):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-6000:]
    assert " passed" in text
    assert f"Tested: {len(OPERATIONS)}" in text
