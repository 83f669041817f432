"""``stream: true``: the LLM agent reads server-sent events from the real emulator, reports
the text so far to ``on_partial``, and answers exactly as without streaming."""

import dataclasses
import json

import aiohttp
import pytest
from aiohttp import web

from agents.emulators.openai import ScriptedReply
from agents.registry import build_agent
from connectors.http_api.emulator import HttpChannelClient
from gateway.errors import AgentError
from tests.agents.conftest import make_context
from tests.agents.test_llm import llm_persona
from tests.harness import SECRETS, base_config, eventually, http_tenant, running_gateway

ANSWER = "We open at nine and close at six, every day but Sunday."


async def test_a_streamed_answer_is_reported_as_it_arrives(emulator, monkeypatch):
    monkeypatch.setenv("LLM_KEY", "sk-test-emulator")
    emulator.chunk_delay = 0.01
    emulator.script(ScriptedReply.text(ANSWER))
    persona = llm_persona(emulator.base_url, tools=(), stream=True)
    seen: list[str] = []

    async def on_partial(text: str) -> None:
        seen.append(text)

    context = dataclasses.replace(make_context(persona, "hours?"), on_partial=on_partial)
    reply = await build_agent(persona).respond(context)

    assert [p.text for p in reply.parts] == [ANSWER]
    assert emulator.requests[0]["stream"] is True
    assert emulator.streamed == 1
    assert len(seen) == emulator.stream_chunks  # one report per piece of content
    assert all(ANSWER.startswith(s) for s in seen)  # each the text so far, growing
    assert seen == sorted(seen, key=len)
    assert seen[-1] == ANSWER


async def test_a_streamed_tool_call_is_handled_as_before(emulator, monkeypatch):
    """The model calls a tool in a streamed answer: the call runs, then the final text
    streams; only text is reported."""
    monkeypatch.setenv("LLM_KEY", "sk-test-emulator")
    emulator.chunk_delay = 0
    emulator.script(
        ScriptedReply.call("switch_persona", {"persona": "billing"}), ScriptedReply.text(ANSWER)
    )
    persona = llm_persona(emulator.base_url, stream=True)
    seen: list[str] = []

    async def on_partial(text: str) -> None:
        seen.append(text)

    context = dataclasses.replace(make_context(persona, "bill"), on_partial=on_partial)
    reply = await build_agent(persona).respond(context)

    assert [p.text for p in reply.parts] == [ANSWER]
    assert reply.switch_persona == "billing"
    assert emulator.streamed == 2
    tool_turn = emulator.requests[1]["messages"][-2]
    assert tool_turn["tool_calls"][0]["function"]["name"] == "switch_persona"
    assert tool_turn["tool_calls"][0]["id"].startswith("call_")
    assert seen[-1] == ANSWER


async def test_without_the_option_nothing_streams(emulator, monkeypatch):
    monkeypatch.setenv("LLM_KEY", "sk-test-emulator")
    emulator.script(ScriptedReply.text(ANSWER))
    persona = llm_persona(emulator.base_url, tools=())
    seen: list[str] = []

    async def on_partial(text: str) -> None:
        seen.append(text)

    context = dataclasses.replace(make_context(persona, "hours?"), on_partial=on_partial)
    reply = await build_agent(persona).respond(context)
    assert [p.text for p in reply.parts] == [ANSWER]
    assert "stream" not in emulator.requests[0]
    assert (emulator.streamed, seen) == (0, [])


async def test_a_streaming_persona_on_a_channel_without_drafts(
    emulator, store_url, receiver, tmp_path, monkeypatch
):
    """The HTTP API channel shows no drafts: the streamed answer arrives once, whole."""
    monkeypatch.setenv("LLM_KEY", "sk-test-emulator")
    emulator.script(ScriptedReply.text(ANSWER))
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "writer.yaml").write_text(
        "name: writer\ndisplay_name: Writer\nagent:\n  kind: llm\n  options:\n"
        f"    base_url: {emulator.base_url}\n    allow_private: true\n    model: m\n"
        "    api_key_env: LLM_KEY\n    stream: true\n"
    )
    data = base_config(store_url, tenants=[http_tenant(receiver.url)])
    data["personas_dir"] = str(folder)
    data["routing"] = {"default_persona": "writer"}
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        await client.send(conversation_id="c1", text="hours?", event_id="e1")
        await eventually(lambda: receiver.unique())
        metrics = gw.runtime.metrics.render().decode()
    assert [cb.payload["text"] for cb in receiver.unique()] == [ANSWER]
    assert emulator.streamed == 1
    assert "flowbiz_reply_drafts_total{" not in metrics


async def _server(body: bytes, content_type: str):
    """A local endpoint that answers every completion with ``body`` as it is."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1"


def _chunk(content: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"delta": {"content": content}}]}).encode() + b"\n\n"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (_chunk("We open"), "ended before"),  # cut off: no [DONE]
        (_chunk("We open") + b"data: {not json\n\n", "not JSON"),
        (b'data: {"choices": 3}\n\n', "not a completion chunk"),
    ],
)
async def test_a_broken_stream_is_an_error_not_a_partial_answer(monkeypatch, body, error):
    monkeypatch.setenv("LLM_KEY", "k")
    runner, base_url = await _server(body, "text/event-stream")
    try:
        persona = llm_persona(base_url, tools=(), stream=True)
        with pytest.raises(AgentError, match=error):
            await build_agent(persona).respond(make_context(persona, "hours?"))
    finally:
        await runner.cleanup()


async def test_a_server_that_does_not_stream_is_read_as_before(monkeypatch):
    monkeypatch.setenv("LLM_KEY", "k")
    completion = {"choices": [{"message": {"role": "assistant", "content": ANSWER}}]}
    runner, base_url = await _server(json.dumps(completion).encode(), "application/json")
    try:
        persona = llm_persona(base_url, tools=(), stream=True)
        reply = await build_agent(persona).respond(make_context(persona, "hours?"))
    finally:
        await runner.cleanup()
    assert [p.text for p in reply.parts] == [ANSWER]
