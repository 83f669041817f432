"""``/v1/openapi.json`` describes the served routes, and schemathesis finds no fault in the
admin API's; the HTTP channel's answers and callbacks are held to the models it is built from."""

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from connectors.http_api.emulator import HttpChannelClient
from connectors.http_api.schemas import CHANNEL_TAG, HttpAccepted, HttpReplies, HttpReply
from gateway.admin.keys import Role, create_key
from gateway.admin.openapi import build_openapi
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


def _served(app: web.Application, prefix: str) -> set[tuple[str, str]]:
    served = set()
    for resource in app.router.resources():
        path = resource.canonical
        if path.startswith(prefix) and path != "/v1/openapi.json":
            served |= {(route.method, path) for route in resource if route.method != "HEAD"}
    return served


def _documented(document: dict[str, Any], *, channel: bool) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method != "servers" and (CHANNEL_TAG in op["tags"]) == channel
    }


async def test_document_describes_exactly_the_served_routes(gateway):
    """Every /v1 admin route served is in the document with its method, and every HTTP
    channel route of the public listener, with that listener as its server; nothing else."""
    gw, session, _ = gateway
    async with session.get(gw.ops_url + "/v1/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.1")
    admin = _served(gw.ops_app, "/v1/")
    assert not any(path.startswith("/v1/channels/") for _, path in admin)
    assert _documented(document, channel=False) == admin
    assert _documented(document, channel=True) == _served(gw.app, "/v1/channels/http/")
    for path, item in document["paths"].items():
        channel = path.startswith("/v1/channels/")
        assert (
            item.get("servers") == [{"url": gw.url, "description": "the public listener"}]
        ) == channel
        for method, op in item.items():
            if method != "servers":
                assert {"401", "503"} <= set(op["responses"])
    assert document["webhooks"]["httpChannelReply"]["post"]["tags"] == [CHANNEL_TAG]


async def test_the_http_channel_answers_and_calls_back_as_documented(gateway, receiver):
    """A message's 202, a poll's answer and the reply callback each parse with the model the
    document was built from (unknown or missing fields are errors there)."""
    gw, session, _ = gateway
    client = HttpChannelClient(
        session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
    )
    status, accepted = await client.send(conversation_id="c9", text="hello", event_id="e9")
    assert status == 202
    assert HttpAccepted.model_validate(accepted).event_id == "e9"
    answer = await client.replies(conversation_id="c9", wait=10)
    replies = HttpReplies.model_validate(answer)
    assert [r.conversation_id for r in replies.replies] == ["c9"]
    await eventually(lambda: any(c.payload["conversation_id"] == "c9" for c in receiver.received))
    [callback] = [c for c in receiver.received if c.payload["conversation_id"] == "c9"]
    assert HttpReply.model_validate(callback.payload) == replies.replies[0]


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
        "--exclude-tag",
        CHANNEL_TAG,  # served on the public listener; held to its models by the test above
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


def test_a_503_is_documented_with_the_body_it_is_served_with():
    """Health's 503 is its own body (degraded, test_store_outage.py); every other route's is
    the store_unavailable error body."""
    document = build_openapi()
    for op in OPERATIONS:
        answer = document["paths"][op.path][op.method.lower()]["responses"]["503"]
        expected = "Health" if op.operation_id == "getHealth" else "ErrorBody"
        assert answer["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{expected}"
        }, op.operation_id
