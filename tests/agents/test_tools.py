"""The built-in tools: the guarded command runner and the docs search."""

import sys
from dataclasses import replace

import pytest
from pydantic import ValidationError

from agents.examples import EXAMPLES_DIR
from agents.persona import Persona
from agents.tools import ToolContext
from agents.tools.command import CommandPolicy, RunCommandTool
from agents.tools.docs import SearchDocsTool
from gateway.audit import AuditLog
from gateway.store import Keyspace, open_store
from tests.agents.conftest import make_context

PERSONA = Persona(name="ops", display_name="Ops")
CONTEXT = ToolContext(agent=make_context(PERSONA, "x"))


@pytest.fixture
async def audited():
    """A tool context whose turn writes to a real audit stream (the in-memory store)."""
    store = await open_store("memory://")
    audit = AuditLog(store, Keyspace())
    yield ToolContext(agent=replace(make_context(PERSONA, "x"), audit=audit)), audit
    await store.aclose()


def tool(**policy) -> RunCommandTool:
    shapes = [{"argv": ["echo"], "args": {"max": 8}}, {"argv": ["env"]}]
    return RunCommandTool(CommandPolicy.model_validate({"commands": shapes, **policy}), "ops")


async def test_allowlisted_command_runs_without_a_shell(audited):
    """'echo a; b' is refused (shell syntax); plain 'echo hello' runs and its output returns."""
    context, _ = audited
    result = await tool().run({"command": "echo hello world"}, context)
    assert not result.is_error
    assert result.content == "exit status 0\nhello world\n"
    refused = await tool().run({"command": "echo a; rm -rf /tmp/x"}, context)
    assert refused.is_error
    assert "deny" in refused.content


@pytest.mark.parametrize(
    "command",
    ["uptime", "/bin/echo hi", "ls /", "echo $(id)", "echo `id`", "echo a | sh", "sudo echo x"],
)
async def test_commands_outside_the_allowlist_or_with_shell_syntax_are_refused(command, audited):
    """Anything that is not one of the shapes, or carries shell syntax, never runs."""
    result = await tool().run({"command": command}, audited[0])
    assert result.is_error
    assert result.content.startswith("Refused")


def test_a_shape_is_the_whole_command_not_a_prefix():
    """Former prefixes are exact commands; a shape takes only its flags, options, operands."""
    policy = CommandPolicy(allow=("systemctl status", "echo"))
    assert policy.refusal("systemctl status")[0] == ["systemctl", "status"]
    assert policy.refusal("systemctl status nginx")[0] is None
    assert policy.refusal("systemctl restart nginx")[0] is None
    assert policy.refusal("echoes x")[0] is None
    shaped = CommandPolicy.model_validate(
        {
            "commands": [
                {
                    "argv": ["systemctl", "status"],
                    "flags": ["--no-pager"],
                    "options": {"--lines": {"pattern": "[0-9]+"}},
                    "args": {"max": 1, "pattern": "[a-z0-9@._-]+"},
                }
            ]
        }
    )
    ok = ["systemctl", "status", "--no-pager", "--lines=5", "nginx"]
    assert shaped.refusal("systemctl status --no-pager --lines=5 nginx")[0] == ok
    assert shaped.refusal("systemctl status --lines 5")[0] is not None
    assert (
        shaped.refusal("systemctl status --lines=x")[1] == "--lines: 'x' is not a permitted value"
    )
    assert shaped.refusal("systemctl status a b")[0] is None
    assert shaped.refusal("systemctl status --no-pager=1")[0] is None
    assert shaped.refusal("systemctl status -- nginx")[0] is None


def test_paths_need_roots_and_are_judged_where_they_lead(tmp_path):
    """A word naming a path must resolve inside a root; without roots no path passes."""
    shapes = [{"argv": ["ls"], "args": {"max": 1, "path": True}}]
    bare = CommandPolicy.model_validate({"commands": shapes})
    assert "outside the allowed roots" in bare.refusal("ls /tmp")[1]
    rooted = CommandPolicy.model_validate(
        {"commands": shapes, "roots": [str(tmp_path)], "cwd": str(tmp_path)}
    )
    assert rooted.refusal(f"ls {tmp_path}")[0] == ["ls", str(tmp_path)]
    assert rooted.refusal("ls sub")[0] == ["ls", "sub"]
    assert rooted.refusal("ls ..")[0] is None
    with pytest.raises(ValidationError, match="absolute"):
        CommandPolicy.model_validate({"commands": shapes, "roots": ["relative"]})
    with pytest.raises(ValidationError, match="list the permitted commands"):
        CommandPolicy.model_validate({})


async def test_persona_deny_patterns_apply(audited):
    """A persona's deny pattern refuses an otherwise allowlisted command, quotes or not."""
    for command in ("echo SECRET", "echo SEC''RET", 'echo "SE"CRET'):
        result = await tool(deny=["(?i)secret"]).run({"command": command}, audited[0])
        assert result.is_error
        assert "deny" in result.content


async def test_without_an_audit_stream_nothing_runs():
    """A run that could not be audited does not happen."""
    result = await tool().run({"command": "echo hi"}, CONTEXT)
    assert result.is_error
    assert "audit" in result.content


async def test_child_gets_no_gateway_secrets(monkeypatch, audited):
    """The child's environment holds PATH and LANG only, not the gateway's variables."""
    monkeypatch.setenv("FLOWBIZ_TEST_SECRET", "do-not-leak")
    result = await tool().run({"command": "env"}, audited[0])
    assert "do-not-leak" not in result.content
    assert "PATH=" in result.content


async def test_a_command_past_its_timeout_is_killed():
    """A command running longer than timeout_seconds is killed and reported."""
    policy = CommandPolicy(allow=(sys.executable,), timeout_seconds=0.3)
    result, status = await RunCommandTool(policy).execute(
        [sys.executable, "-c", "import time; time.sleep(5)"]
    )
    assert result.is_error
    assert status is None
    assert "Killed" in result.content


async def test_search_docs_finds_the_relevant_passage():
    """A question about signature rotation finds the webhooks page first, with its file name."""
    persona = Persona(
        name="docs",
        display_name="Docs",
        knowledge_dir=EXAMPLES_DIR / "knowledge" / "docs",
        tools=("search_docs",),
    )
    search = SearchDocsTool.build(persona, {"results": 1})
    result = await search.run(
        {"query": "how do I verify the signature during a rotation?"}, CONTEXT
    )
    assert result.content.startswith("[webhooks.md — Webhook signatures]")
    nothing = await search.run({"query": "zebra"}, CONTEXT)
    assert nothing.content.startswith("No passage")
