"""An LLM persona's MCP tools, against a real MCP server process over stdio and the OpenAI
emulator as the model: the granted tool answers; what was not granted, arguments that break
the schema, a server that hangs, dies or floods are each met as the docs say."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from agents.emulators.openai import ScriptedCall, ScriptedReply
from agents.llm import LlmAgent
from agents.persona import Persona
from agents.registry import build_agent
from agents.tools.mcp_servers import McpServers
from gateway.audit import AuditLog
from gateway.cli import main
from gateway.mcp_config import McpServerConfig
from gateway.store import Keyspace, open_store
from tests.agents.conftest import make_context
from tests.agents.test_access_attacks import PERSONAS
from tests.agents.test_reach import write_config
from tests.conftest import free_port
from tests.harness import eventually

SERVER_SCRIPT = Path(__file__).with_name("mcp_server.py")
ORDER_TOOL = "mcp__orders__lookup_order"


def stdio_config(**limits: Any) -> Any:
    """The test server as gateway.yaml would declare it; env values are env: references."""
    block = {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(SERVER_SCRIPT)],
        "env": {"MCP_CALL_LOG": "env:TEST_MCP_CALL_LOG", "ORDERS_REGION": "env:TEST_REGION"},
        **limits,
    }
    return TypeAdapter(McpServerConfig).validate_python(block)


@pytest.fixture
def call_log(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("TEST_MCP_CALL_LOG", str(path))
    monkeypatch.setenv("TEST_REGION", "eu-secret-region")
    return path


def calls(path: Path) -> list[dict[str, Any]]:
    """What reached the server, in order (the server writes it before doing anything)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
async def servers(call_log):
    servers = McpServers({"orders": stdio_config(call_timeout_seconds=1, max_result_chars=1000)})
    yield servers
    await servers.aclose()


@pytest.fixture
async def audit():
    store = await open_store("memory://")
    yield AuditLog(store, Keyspace())
    await store.aclose()


def mcp_persona(base_url: str, *tools: str) -> Persona:
    return Persona.model_validate(
        {
            "name": "support",
            "display_name": "Support",
            "tools": list(tools),
            "agent": {
                "kind": "llm",
                "options": {
                    "base_url": base_url,
                    "allow_private": True,  # the emulator listens on loopback
                    "model": "test-model",
                    "api_key_env": "LLM_KEY",
                    "deterministic": True,
                    "max_steps": 4,
                },
            },
        }
    )


def offered(request: dict[str, Any]) -> set[str]:
    return {t["function"]["name"] for t in request.get("tools", [])}


def tool_messages(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def answer_with_tool_result(body: dict[str, Any]) -> ScriptedReply:
    """A model that answers with what its last tool returned."""
    return ScriptedReply.text("Here is what I found: " + tool_messages(body)[-1])


async def test_a_granted_mcp_tool_is_offered_called_and_answers(emulator, servers, call_log):
    """Only the granted tool is offered; its result reaches the model and the customer."""
    emulator.script(ScriptedReply.call(ORDER_TOOL, {"order_id": "ORD-1234"}))
    emulator.responder = answer_with_tool_result
    persona = mcp_persona(emulator.base_url, "handoff", "mcp:orders/lookup_order")
    agent = build_agent(persona, mcp=servers)
    reply = await agent.respond(make_context(persona, "where is my order ORD-1234?"))
    assert offered(emulator.requests[0]) == {"handoff", ORDER_TOOL}
    shown = next(t for t in emulator.requests[0]["tools"] if t["function"]["name"] == ORDER_TOOL)
    assert shown["function"]["parameters"]["properties"]["order_id"]["pattern"] == "^ORD-[0-9]{4}$"
    # The child got the variable the block named, read from the gateway's environment.
    expected = "order ORD-1234: shipped, arriving Friday (server eu-secret-region)"
    assert tool_messages(emulator.requests[1]) == [expected]
    assert reply.parts[0].text == f"Here is what I found: {expected}"
    assert [c["tool"] for c in calls(call_log)] == ["lookup_order"]


async def test_the_connection_is_reused_across_turns_and_reloads(emulator, servers, call_log):
    """Two turns and a rebuilt agent (a persona reload) share one server process."""
    persona = mcp_persona(emulator.base_url, "mcp:orders/lookup_order")
    for order in ("ORD-0001", "ORD-0002"):
        emulator.script(
            ScriptedReply.call(ORDER_TOOL, {"order_id": order}), ScriptedReply.text("ok")
        )
        await build_agent(persona, mcp=servers).respond(make_context(persona, order))
    assert len({c["pid"] for c in calls(call_log)}) == 1
    assert servers.get("orders").connections == 1


async def test_wildcard_grant_offers_every_tool_of_that_server(emulator, servers):
    """mcp:orders/* offers what the server lists, under mcp__orders__<tool>."""
    persona = mcp_persona(emulator.base_url, "mcp:orders/*")
    await build_agent(persona, mcp=servers).respond(make_context(persona, "hi"))
    names = {"lookup_order", "hang", "crash", "huge", "broken"}
    assert offered(emulator.requests[0]) == {f"mcp__orders__{n}" for n in names}


async def test_attack_ungranted_mcp_tools_are_refused_and_audited(
    emulator, servers, call_log, audit
):
    """The model asks for the server's other tools, by every spelling, and an unconfigured
    server's: nothing reaches any server, each refusal is in the audit stream, and the model
    gets another step."""
    asked = ["mcp__orders__crash", "mcp:orders/crash", "crash", "mcp__files__read_file"]
    calls_at_once = tuple(ScriptedCall(name, {}) for name in asked)
    emulator.script(ScriptedReply(tool_calls=calls_at_once), ScriptedReply.text("Sorry."))
    persona = mcp_persona(emulator.base_url, "mcp:orders/lookup_order")
    context = replace(make_context(persona, "crash your server"), audit=audit)
    reply = await build_agent(persona, mcp=servers).respond(context)
    assert reply.parts[0].text == "Sorry."
    errors = tool_messages(emulator.requests[-1])
    assert errors == [json.dumps({"error": f"tool {n!r} is not permitted here"}) for n in asked]
    assert calls(call_log) == []  # the server never saw a call
    rows = [e for _, e in await audit.read()]
    assert [(e.action, e.detail["tool"], e.detail["reason"]) for e in rows] == [
        ("tool.refused", n, "not_allowed") for n in asked
    ]
    assert all(e.tenant == "acme" and e.actor == "persona:support" for e in rows)


async def test_attack_arguments_breaking_the_schema_never_reach_the_server(
    emulator, servers, call_log, audit
):
    """A pattern broken, a wrong type, a missing field: refused by the gateway, audited."""
    bad = [{"order_id": "ORD-1; DROP TABLE orders"}, {"order_id": 1234}, {}]
    emulator.script(*(ScriptedReply.call(ORDER_TOOL, a) for a in bad), ScriptedReply.text("no"))
    persona = mcp_persona(emulator.base_url, "mcp:orders/lookup_order")
    context = replace(make_context(persona, "x"), audit=audit)
    await build_agent(persona, mcp=servers).respond(context)
    errors = [json.loads(m)["error"] for m in tool_messages(emulator.requests[-1])]
    assert [e.split(":")[0] for e in errors] == [
        "invalid arguments at order_id",
        "invalid arguments at order_id",
        "invalid arguments at arguments",
    ]
    assert calls(call_log) == []
    rows = [e for _, e in await audit.read()]
    assert {(e.action, e.detail["reason"]) for e in rows} == {("tool.refused", "invalid_arguments")}


async def test_a_granted_call_is_audited_by_argument_names_only(emulator, servers, audit):
    """tool.mcp.call before the call, tool.mcp.finished after; no argument value is stored."""
    emulator.script(
        ScriptedReply.call(ORDER_TOOL, {"order_id": "ORD-4321"}), ScriptedReply.text("ok")
    )
    persona = mcp_persona(emulator.base_url, "mcp:orders/lookup_order")
    await build_agent(persona, mcp=servers).respond(
        replace(make_context(persona, "x"), audit=audit)
    )
    rows = [e for _, e in await audit.read()]
    assert [e.action for e in rows] == ["tool.mcp.call", "tool.mcp.finished"]
    assert rows[0].detail["arguments"] == ["order_id"]
    assert rows[1].detail["outcome"] == "ok"
    assert "ORD-4321" not in "".join(e.model_dump_json() for e in rows)


async def test_a_hanging_server_times_out_and_the_turn_completes(emulator, servers, call_log):
    """The tool never answers: after call_timeout_seconds the model hears so and answers."""
    emulator.script(ScriptedReply.call("mcp__orders__hang", {}), ScriptedReply.text("It is slow."))
    persona = mcp_persona(emulator.base_url, "mcp:orders/hang")
    started = time.monotonic()
    reply = await build_agent(persona, mcp=servers).respond(make_context(persona, "x"))
    assert time.monotonic() - started < 10
    assert reply.parts[0].text == "It is slow."
    assert tool_messages(emulator.requests[1]) == [
        json.dumps({"error": "the tool did not answer within 1 s"})
    ]
    assert [c["tool"] for c in calls(call_log)] == ["hang"]


async def test_a_server_that_dies_mid_call_is_restarted_by_the_next_turn(
    emulator, servers, call_log
):
    """The crash is a tool error for that turn; the next turn starts a new server process."""
    persona = mcp_persona(emulator.base_url, "mcp:orders/crash", "mcp:orders/lookup_order")
    agent = build_agent(persona, mcp=servers)
    emulator.script(ScriptedReply.call("mcp__orders__crash", {}), ScriptedReply.text("Oops."))
    reply = await agent.respond(make_context(persona, "x"))
    assert reply.parts[0].text == "Oops."
    assert "error" in json.loads(tool_messages(emulator.requests[1])[0])
    emulator.script(
        ScriptedReply.call(ORDER_TOOL, {"order_id": "ORD-0007"}), ScriptedReply.text("ok")
    )
    await agent.respond(make_context(persona, "y"))
    assert tool_messages(emulator.requests[3])[0].startswith("order ORD-0007: shipped")
    first, second = calls(call_log)
    assert first["pid"] != second["pid"]
    assert servers.get("orders").connections == 2


async def test_a_server_killed_between_turns_is_restarted_before_the_next_call(
    emulator, servers, call_log
):
    """The server's end is noticed while idle; the next turn's listing reconnects."""
    persona = mcp_persona(emulator.base_url, "mcp:orders/lookup_order")
    agent = build_agent(persona, mcp=servers)
    for order in ("ORD-0001", "ORD-0002"):
        emulator.script(
            ScriptedReply.call(ORDER_TOOL, {"order_id": order}), ScriptedReply.text("ok")
        )
        await agent.respond(make_context(persona, order))
        if order == "ORD-0001":
            os.kill(calls(call_log)[0]["pid"], signal.SIGKILL)
            await eventually(lambda: not servers.get("orders").alive)
    assert tool_messages(emulator.requests[3])[0].startswith("order ORD-0002: shipped")
    assert len({c["pid"] for c in calls(call_log)}) == 2


async def test_a_huge_result_is_cut_to_max_result_chars(emulator, servers):
    """200 000 characters come back; the model sees 1000 and how much was cut."""
    emulator.script(
        ScriptedReply.call("mcp__orders__huge", {"size": 200_000}), ScriptedReply.text("ok")
    )
    persona = mcp_persona(emulator.base_url, "mcp:orders/huge")
    await build_agent(persona, mcp=servers).respond(make_context(persona, "x"))
    (content,) = tool_messages(emulator.requests[1])
    assert content == "x" * 1000 + "\n[cut: 199000 more characters]"


async def test_a_tool_error_reaches_the_model_as_an_error(emulator, servers):
    """The server reports the tool failed: the model hears it as a tool error."""
    emulator.script(ScriptedReply.call("mcp__orders__broken", {}), ScriptedReply.text("Sorry."))
    persona = mcp_persona(emulator.base_url, "mcp:orders/broken")
    reply = await build_agent(persona, mcp=servers).respond(make_context(persona, "x"))
    assert reply.parts[0].text == "Sorry."
    error = json.loads(tool_messages(emulator.requests[1])[0])["error"]
    assert error.startswith("the tool failed: ")


async def test_an_unreachable_server_leaves_its_tools_out_of_the_turn(emulator, call_log):
    """A command that does not exist: no tools offered, the turn is answered all the same."""
    broken = {
        "transport": "stdio",
        "command": "/nonexistent/mcp-server",
        "connect_timeout_seconds": 2,
    }
    servers = McpServers({"orders": TypeAdapter(McpServerConfig).validate_python(broken)})
    try:
        persona = mcp_persona(emulator.base_url, "handoff", "mcp:orders/lookup_order")
        reply = await build_agent(persona, mcp=servers).respond(make_context(persona, "hi"))
        assert offered(emulator.requests[0]) == {"handoff"}
        assert reply.parts[0].text == "(emulated) hi"
    finally:
        await servers.aclose()


def test_a_grant_of_a_server_that_is_not_configured_fails_at_load(emulator, servers):
    """Like an unknown built-in tool; also with no mcp_servers at all."""
    persona = mcp_persona(emulator.base_url, "mcp:files/read_file")
    with pytest.raises(KeyError, match="MCP servers not configured"):
        build_agent(persona, mcp=servers)
    with pytest.raises(KeyError, match="MCP servers not configured"):
        build_agent(mcp_persona(emulator.base_url, "mcp:orders/*"))
    with pytest.raises(ValidationError, match="an MCP grant is"):
        mcp_persona(emulator.base_url, "mcp:orders")


async def test_closing_the_servers_ends_the_child_process(emulator, servers, call_log):
    """Shutdown (McpServers.aclose, from the app's cleanup) leaves no server process."""
    emulator.script(
        ScriptedReply.call(ORDER_TOOL, {"order_id": "ORD-0001"}), ScriptedReply.text("ok")
    )
    persona = mcp_persona(emulator.base_url, "mcp:orders/lookup_order")
    await build_agent(persona, mcp=servers).respond(make_context(persona, "x"))
    pid = calls(call_log)[0]["pid"]
    await servers.aclose()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_secret_values_in_the_file_are_refused():
    """An env value or header written as a value, not env:NAME, fails the configuration."""
    adapter = TypeAdapter(McpServerConfig)
    with pytest.raises(ValidationError, match="env:VARIABLE_NAME"):
        adapter.validate_python({"transport": "stdio", "command": "x", "env": {"TOKEN": "abc"}})
    with pytest.raises(ValidationError, match="env:VARIABLE_NAME"):
        adapter.validate_python(
            {"transport": "http", "url": "https://mcp.example.com/mcp", "headers": {"A": "b"}}
        )


def test_llm_agent_builds_no_toolset_without_grants(emulator):
    agent = build_agent(mcp_persona(emulator.base_url, "handoff"))
    assert isinstance(agent, LlmAgent)
    assert agent.mcp_tools is None


# -- streamable HTTP on loopback ---------------------------------------------------------------
HTTP_TOKEN = "tok-7f3a9c-http-secret"


class HttpServer:
    """The test server over streamable HTTP on a loopback port, behind a bearer token."""

    def __init__(self, call_log: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, "MCP_HTTP_TOKEN": HTTP_TOKEN, "MCP_CALL_LOG": str(call_log)}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    async def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own argv, no shell
            [sys.executable, str(SERVER_SCRIPT), "http", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await eventually(self.listening, timeout=20)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
async def http_server(call_log, monkeypatch):
    server = HttpServer(call_log)
    monkeypatch.setenv("TEST_MCP_AUTH", f"Bearer {HTTP_TOKEN}")
    monkeypatch.setenv("TEST_MCP_WRONG_AUTH", "Bearer wrong-9d2e-secret")
    try:
        await server.start()
        yield server
    finally:
        server.kill()


def http_config(url: str, *, header: str = "env:TEST_MCP_AUTH", **more: Any) -> Any:
    block = {"transport": "http", "url": url, "headers": {"Authorization": header}, **more}
    return TypeAdapter(McpServerConfig).validate_python(block)


async def test_http_granted_tool_answers_and_a_hang_times_out(emulator, http_server, call_log):
    """Over streamable HTTP, with the bearer header from the environment: the same rules."""
    url = http_server.url
    servers = McpServers({"orders": http_config(url, allow_private=True, call_timeout_seconds=1)})
    try:
        persona = mcp_persona(emulator.base_url, "mcp:orders/lookup_order", "mcp:orders/hang")
        agent = build_agent(persona, mcp=servers)
        emulator.script(
            ScriptedReply(
                tool_calls=(
                    ScriptedCall(ORDER_TOOL, {"order_id": "ORD-0042"}),
                    ScriptedCall("mcp__orders__hang", {}),
                    ScriptedCall(ORDER_TOOL, {"order_id": "42"}),
                )
            ),
            ScriptedReply.text("done"),
        )
        reply = await agent.respond(make_context(persona, "x"))
        assert reply.parts[0].text == "done"
        assert offered(emulator.requests[0]) == {ORDER_TOOL, "mcp__orders__hang"}
        found, hung, invalid = tool_messages(emulator.requests[1])
        assert found.startswith("order ORD-0042: shipped")
        assert json.loads(hung) == {"error": "the tool did not answer within 1 s"}
        assert json.loads(invalid)["error"].startswith("invalid arguments at order_id")
        assert [c["tool"] for c in calls(call_log)] == ["lookup_order", "hang"]
    finally:
        await servers.aclose()


def test_attack_http_url_at_a_loopback_literal_is_refused_in_the_file():
    """Without allow_private, a private or loopback address in the URL fails the config."""
    for url in (
        "http://127.0.0.1:9/mcp",
        "http://[::ffff:169.254.169.254]/mcp",
        "http://10.1.2.3/",
    ):
        with pytest.raises(ValidationError, match="allow_private: true"):
            TypeAdapter(McpServerConfig).validate_python({"transport": "http", "url": url})


async def test_attack_http_name_resolving_to_loopback_is_refused_at_connect(
    emulator, http_server, call_log, caplog
):
    """'localhost' passes the file's check (a name); the connection refuses its address."""
    caplog.set_level(logging.WARNING, logger="agents.tools.mcp_connection")
    servers = McpServers({"orders": http_config(f"http://localhost:{http_server.port}/mcp")})
    try:
        persona = mcp_persona(emulator.base_url, "handoff", "mcp:orders/*")
        await build_agent(persona, mcp=servers).respond(make_context(persona, "hi"))
        assert offered(emulator.requests[0]) == {"handoff"}
        (failed,) = [r for r in caplog.records if r.getMessage() == "mcp.connect_failed"]
        assert "loopback address" in failed.fields["reason"]
    finally:
        await servers.aclose()


async def test_attack_mcp_secrets_never_reach_the_logs(emulator, http_server, call_log, caplog):
    """Headers and child environment values, right or refused, appear in no log record."""
    caplog.set_level(logging.DEBUG)
    url = http_server.url
    servers = McpServers(
        {
            "orders": http_config(url, allow_private=True),
            "denied": http_config(url, allow_private=True, header="env:TEST_MCP_WRONG_AUTH"),
            "local": stdio_config(),
        }
    )
    try:
        persona = mcp_persona(
            emulator.base_url, "mcp:orders/lookup_order", "mcp:denied/*", "mcp:local/crash"
        )
        emulator.script(
            ScriptedReply(
                tool_calls=(
                    ScriptedCall(ORDER_TOOL, {"order_id": "ORD-0001"}),
                    ScriptedCall("mcp__local__crash", {}),
                )
            ),
            ScriptedReply.text("ok"),
        )
        await build_agent(persona, mcp=servers).respond(make_context(persona, "x"))
        assert offered(emulator.requests[0]) == {ORDER_TOOL, "mcp__local__crash"}
    finally:
        await servers.aclose()
    logged = "\n".join(
        f"{r.getMessage()} {getattr(r, 'fields', '')} {r.exc_text or ''}" for r in caplog.records
    )
    assert "mcp.connect_failed" in logged  # the refused server was logged, by name
    for secret in (HTTP_TOKEN, "wrong-9d2e-secret", "eu-secret-region"):
        assert secret not in logged


def test_check_reports_a_grant_of_an_unconfigured_server(tmp_path, capsys):
    """flowbiz check (and so serve) refuses a persona granting a server mcp_servers lacks."""
    personas_dir = tmp_path / "personas"
    personas_dir.mkdir()
    for name, text in PERSONAS.items():
        (personas_dir / f"{name}.yaml").write_text(text)
    (personas_dir / "support.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "support",
                "display_name": "Support",
                "tools": ["mcp:orders/lookup_order", "mcp:files/*"],
                "agent": {
                    "kind": "llm",
                    "options": {"base_url": "https://x.example", "model": "m"},
                },
            }
        )
    )
    path = write_config(tmp_path, personas_dir)
    data = yaml.safe_load(path.read_text())
    data["mcp_servers"] = {"orders": {"transport": "stdio", "command": sys.executable}}
    path.write_text(yaml.safe_dump(data))
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "personas.support.tools: grants tools of MCP server 'files'" in err
    assert "'orders'" not in err


async def test_a_turn_given_up_while_a_server_starts_does_not_wait_for_it(emulator, tmp_path):
    """The worker's timeout cancels the turn at once; the silent child is still ended."""
    pid_file = tmp_path / "pid"
    silent = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    block = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-c", silent, str(pid_file)],
        "connect_timeout_seconds": 60,
    }
    servers = McpServers({"orders": TypeAdapter(McpServerConfig).validate_python(block)})
    persona = mcp_persona(emulator.base_url, "mcp:orders/*")
    agent = build_agent(persona, mcp=servers)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(agent.respond(make_context(persona, "x")), 1)
    assert time.monotonic() - started < 3
    pid = int(await eventually(pid_file.read_text))
    await servers.aclose()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_http_server_restarted_is_reconnected_by_the_next_turn(emulator, http_server):
    """Over HTTP a dead server is a tool error; once it is back, the next turn reconnects."""
    servers = McpServers({"orders": http_config(http_server.url, allow_private=True)})
    persona = mcp_persona(emulator.base_url, "mcp:orders/lookup_order")
    agent = build_agent(persona, mcp=servers)
    try:
        for order in ("ORD-0001", "ORD-0002", "ORD-0003"):
            emulator.script(
                ScriptedReply.call(ORDER_TOOL, {"order_id": order}), ScriptedReply.text("ok")
            )
            reply = await agent.respond(make_context(persona, order))
            assert reply.parts[0].text == "ok"
            if order == "ORD-0001":
                http_server.kill()
            elif order == "ORD-0002":
                await http_server.start()
        first, dead, back = (tool_messages(emulator.requests[n])[0] for n in (1, 3, 5))
        assert first.startswith("order ORD-0001: shipped")
        assert "error" in json.loads(dead)
        assert back.startswith("order ORD-0003: shipped")
        assert servers.get("orders").connections == 2
    finally:
        await servers.aclose()
