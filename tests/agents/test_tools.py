"""The built-in tools: the guarded command runner and the docs search."""

import sys

import pytest

from agents.examples import EXAMPLES_DIR
from agents.persona import Persona
from agents.tools import ToolContext
from agents.tools.command import CommandPolicy, RunCommandTool
from agents.tools.docs import SearchDocsTool
from tests.agents.conftest import make_context

PERSONA = Persona(name="ops", display_name="Ops")
CONTEXT = ToolContext(agent=make_context(PERSONA, "x"))


def tool(**policy) -> RunCommandTool:
    return RunCommandTool(CommandPolicy.model_validate({"allow": ["echo", "env"], **policy}))


async def test_allowlisted_command_runs_without_a_shell():
    """'echo a; b' is refused (shell syntax); plain 'echo hello' runs and its output returns."""
    result = await tool().run({"command": "echo hello world"}, CONTEXT)
    assert not result.is_error
    assert result.content == "exit status 0\nhello world\n"
    refused = await tool().run({"command": "echo a; rm -rf /tmp/x"}, CONTEXT)
    assert refused.is_error
    assert "deny" in refused.content


@pytest.mark.parametrize(
    "command",
    ["uptime", "/bin/echo hi", "ls /", "echo $(id)", "echo `id`", "echo a | sh", "sudo echo x"],
)
async def test_commands_outside_the_allowlist_or_with_shell_syntax_are_refused(command):
    """Anything not starting with an allowed argv prefix, or with shell syntax, never runs."""
    result = await tool().run({"command": command}, CONTEXT)
    assert result.is_error
    assert result.content.startswith("Refused")


async def test_prefix_match_is_word_for_word():
    """'systemctl status' permits its arguments but not 'systemctl restart' nor 'echoes'."""
    policy = CommandPolicy(allow=("systemctl status", "echo"))
    assert policy.refusal("systemctl status nginx")[0] == ["systemctl", "status", "nginx"]
    assert policy.refusal("systemctl restart nginx")[0] is None
    assert policy.refusal("echoes x")[0] is None


async def test_persona_deny_patterns_apply():
    """A persona's deny pattern refuses an otherwise allowlisted command."""
    result = await tool(deny=["(?i)secret"]).run({"command": "echo SECRET"}, CONTEXT)
    assert result.is_error
    assert "deny" in result.content


async def test_child_gets_no_gateway_secrets(monkeypatch):
    """The child's environment holds PATH and LANG only, not the gateway's variables."""
    monkeypatch.setenv("FLOWBIZ_TEST_SECRET", "do-not-leak")
    result = await tool().run({"command": "env"}, CONTEXT)
    assert "do-not-leak" not in result.content
    assert "PATH=" in result.content


async def test_a_command_past_its_timeout_is_killed():
    """A command running longer than timeout_seconds is killed and reported."""
    policy = CommandPolicy(allow=(sys.executable,), timeout_seconds=0.3)
    result = await RunCommandTool(policy).execute(
        [sys.executable, "-c", "import time; time.sleep(5)"]
    )
    assert result.is_error
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
