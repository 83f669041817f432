"""MCP tools through the running gateway: a customer's message on the HTTP channel reaches an
LLM persona whose granted MCP tool answers; the call is in the audit stream; stopping the
gateway ends the MCP server process; a persona reload cannot grant a server that is not
configured."""

from __future__ import annotations

import os
import sys

import aiohttp
import pytest

from agents.emulators.openai import ScriptedReply
from connectors.http_api.emulator import HttpChannelClient
from gateway.audit import AuditLog
from gateway.errors import ConfigError
from gateway.persona_sync import reload_personas
from tests.agents.test_mcp_tools import (
    ORDER_TOOL,
    SERVER_SCRIPT,
    answer_with_tool_result,
    calls,
)
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway


@pytest.fixture
def personas_dir(tmp_path, emulator):
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "core.yaml").write_text(
        f"""
name: core
display_name: Core Bot
tools: ["mcp:orders/lookup_order"]
agent:
  kind: llm
  options: {{base_url: "{emulator.base_url}", allow_private: true, model: m,
             api_key_env: LLM_KEY, deterministic: true}}
"""
    )
    return folder


async def test_a_customer_message_reaches_a_granted_mcp_tool_and_shutdown_ends_it(
    tmp_path, receiver, personas_dir, emulator, monkeypatch
):
    call_log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("TEST_MCP_CALL_LOG", str(call_log))
    data = base_config(f"sqlite:///{tmp_path}/gateway.db", tenants=[http_tenant(receiver.url)])
    data["personas_dir"] = str(personas_dir)
    data["routing"] = {"default_persona": "core"}
    data["mcp_servers"] = {
        "orders": {
            "transport": "stdio",
            "command": sys.executable,
            "args": [str(SERVER_SCRIPT)],
            "env": {"MCP_CALL_LOG": "env:TEST_MCP_CALL_LOG"},
        }
    }
    emulator.script(ScriptedReply.call(ORDER_TOOL, {"order_id": "ORD-2024"}))
    emulator.responder = answer_with_tool_result
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        web = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        await web.send(conversation_id="c-1", text="where is ORD-2024?", event_id="e1")
        delivered = await eventually(lambda: [cb.payload["text"] for cb in receiver.unique()])
        assert delivered == [
            "Here is what I found: order ORD-2024: shipped, arriving Friday (server ?)"
        ]
        runtime = gw.runtime
        assert runtime.store is not None
        rows = [e for _, e in await AuditLog(runtime.store, runtime.keyspace).read()]
        assert [e.action for e in rows if e.action.startswith("tool.")] == [
            "tool.mcp.call",
            "tool.mcp.finished",
        ]
        (call,) = calls(call_log)
    with pytest.raises(ProcessLookupError):
        os.kill(call["pid"], 0)


async def test_a_reload_granting_an_unconfigured_server_is_refused_whole(
    tmp_path, receiver, personas_dir
):
    """The running personas stay; the reload names the persona and the missing server."""
    data = base_config(f"sqlite:///{tmp_path}/gateway.db", tenants=[http_tenant(receiver.url)])
    data["personas_dir"] = str(personas_dir)
    data["routing"] = {"default_persona": "core"}
    data["mcp_servers"] = {"orders": {"transport": "stdio", "command": sys.executable}}
    async with running_gateway(data) as gw:
        before = gw.runtime.personas
        text = (personas_dir / "core.yaml").read_text()
        (personas_dir / "core.yaml").write_text(text.replace("mcp:orders/", "mcp:files/"))
        with pytest.raises(ConfigError) as refused:
            await reload_personas(gw.app)
        assert refused.value.problems == [("personas.core.tools", "no MCP server named 'files'")]
        assert gw.runtime.personas is before
