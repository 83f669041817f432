"""The LLM agent against the real OpenAI-compatible emulator: prompt, tools, stop conditions."""

import json

import pytest

from agents.emulators.openai import ScriptedReply
from agents.persona import Persona
from agents.registry import build_agent
from gateway.errors import AgentError
from tests.agents.conftest import make_context, turn


def llm_persona(base_url: str, *, tools=("handoff", "switch_persona"), **options) -> Persona:
    return Persona.model_validate(
        {
            "name": "helper",
            "display_name": "Helper",
            "tools": list(tools),
            "prompts": {
                "system": {
                    "versions": {
                        1: "old prompt for $user_name",
                        2: "You are $display_name at $tenant_name; the user is $user_name.",
                    }
                }
            },
            "agent": {
                "kind": "llm",
                "options": {
                    "base_url": base_url,
                    "allow_private": True,  # the emulator listens on loopback
                    "model": "test-model",
                    "api_key_env": "LLM_KEY",
                    "deterministic": True,
                    "seed": 42,
                    "history_turns": 2,
                    **options,
                },
            },
        }
    )


async def test_prompt_history_and_determinism_are_sent(emulator):
    """The latest prompt version is rendered, history windowed, temperature 0 and the seed sent."""
    emulator.script(ScriptedReply.text("Hello Alice!"))
    persona = llm_persona(emulator.base_url)
    history = (turn("user", "one"), turn("assistant", "two"), turn("user", "three"))
    reply = await build_agent(persona).respond(make_context(persona, "hi", history=history))
    assert [p.text for p in reply.parts] == ["Hello Alice!"]
    sent = emulator.requests[0]
    assert sent["messages"][0] == {
        "role": "system",
        "content": "You are Helper at Acme; the user is Alice.",
    }
    assert [m["content"] for m in sent["messages"][1:]] == ["two", "three", "hi"]
    assert sent["temperature"] == 0
    assert sent["seed"] == 42
    assert sent["model"] == "test-model"
    assert {t["function"]["name"] for t in sent["tools"]} == {"handoff", "switch_persona"}


async def test_pinned_prompt_version_is_used(emulator):
    """prompt_version pins an older version of the persona's prompt."""
    persona = llm_persona(emulator.base_url, prompt_version=1)
    await build_agent(persona).respond(make_context(persona, "hi"))
    assert emulator.requests[0]["messages"][0]["content"] == "old prompt for Alice"


async def test_a_tool_the_persona_does_not_list_is_refused_and_reported(emulator):
    """A call to run_command (not in persona.tools) is refused as an error; the model recovers."""
    emulator.script(
        ScriptedReply.call("run_command", {"command": "uptime"}),
        ScriptedReply.text("Sorry, I cannot do that."),
    )
    persona = llm_persona(emulator.base_url, tools=("handoff",))
    reply = await build_agent(persona).respond(make_context(persona, "run uptime"))
    assert reply.parts[0].text == "Sorry, I cannot do that."
    tool_message = emulator.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool"
    assert "not permitted" in json.loads(tool_message["content"])["error"]
    assert [t["function"]["name"] for t in emulator.requests[0]["tools"]] == ["handoff"]


async def test_arguments_are_validated_against_the_tool_schema(emulator):
    """Arguments missing a required field, or not JSON, come back as errors and run nothing."""
    emulator.script(
        ScriptedReply.call("handoff", {"why": "x"}),
        ScriptedReply.call("handoff", "{not json"),
        ScriptedReply.text("ok"),
    )
    persona = llm_persona(emulator.base_url)
    reply = await build_agent(persona).respond(make_context(persona, "help"))
    assert reply.handoff is None
    assert reply.parts[0].text == "ok"
    errors = [json.loads(r["messages"][-1]["content"])["error"] for r in emulator.requests[1:]]
    assert "reason" in errors[0]
    assert "not valid JSON" in errors[1]


async def test_handoff_and_switch_persona_tools_set_the_reply(emulator):
    """Valid handoff and switch_persona calls become AgentReply.handoff and .switch_persona."""
    emulator.script(
        ScriptedReply.call("switch_persona", {"persona": "docs"}),
        ScriptedReply.call("handoff", {"reason": "angry customer"}),
        ScriptedReply.text("A colleague will take over."),
    )
    persona = llm_persona(emulator.base_url)
    reply = await build_agent(persona).respond(make_context(persona, "I am upset"))
    assert reply.switch_persona == "docs"
    assert reply.handoff == "angry customer"


async def test_step_limit_stops_a_model_that_keeps_calling_tools(emulator):
    """A model that only ever calls tools is stopped after max_steps model calls."""
    emulator.script(*[ScriptedReply.call("handoff", {"reason": "again"})] * 5)
    persona = llm_persona(emulator.base_url, max_steps=3)
    with pytest.raises(AgentError, match="step limit"):
        await build_agent(persona).respond(make_context(persona, "loop"))
    assert len(emulator.requests) == 3


async def test_overall_timeout_stops_a_slow_endpoint(emulator):
    """A model slower than timeout_seconds ends the turn with an AgentError."""
    emulator.script(ScriptedReply(content="late", delay=2))
    persona = llm_persona(emulator.base_url, timeout_seconds=0.3)
    with pytest.raises(AgentError, match="timeout"):
        await build_agent(persona).respond(make_context(persona, "hi"))


async def test_api_key_comes_from_the_named_environment_variable(emulator, monkeypatch):
    """The bearer key is read from api_key_env; a wrong or missing key is an AgentError."""
    persona = llm_persona(emulator.base_url)
    monkeypatch.setenv("LLM_KEY", "sk-wrong")
    with pytest.raises(AgentError, match="401"):
        await build_agent(persona).respond(make_context(persona, "hi"))
    monkeypatch.delenv("LLM_KEY")
    with pytest.raises(AgentError, match="LLM_KEY"):
        await build_agent(persona).respond(make_context(persona, "hi"))


def test_unknown_tool_in_a_persona_fails_at_load():
    """A persona listing a tool that does not exist cannot be built."""
    persona = llm_persona("http://127.0.0.1:9/v1", tools=("format_disk",))
    with pytest.raises(KeyError, match="format_disk"):
        build_agent(persona)
