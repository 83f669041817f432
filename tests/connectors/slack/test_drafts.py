"""A streaming LLM persona on Slack: its answer shows as a draft that the committed reply
updates — one message in the channel, whatever fails, and after a turn ran twice.

Real components throughout: the running gateway, the OpenAI emulator streaming server-sent
events, the Slack emulator taking chat.postMessage and chat.update."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agents.emulators.openai import OpenAIEmulator, ScriptedReply
from connectors.slack.emulator import (
    SlackEmulator,
    app_mention_event,
    event_callback,
    message_event,
    slash_command_fields,
)
from gateway.envelope import RawEvent, is_raw_event
from tests.connectors.slack.conftest import ACME, GatewayFactory, sender_for, slack_config
from tests.harness import RunningGateway, eventually, running_gateway

ANSWER = "We open at nine and close at six, every day but Sunday, and on holidays at ten."
CHUNKS = 4
CHUNK_DELAY = 0.25  # the answer takes 0.75 s to stream: room for a draft update at 0.5 s


def _llm_persona(name: str, base_url: str, *, stream: bool) -> str:
    return (
        f"name: {name}\ndisplay_name: {name.title()} Bot\nagent:\n  kind: llm\n"
        f"  options:\n    base_url: {base_url}\n    allow_private: true\n    model: m\n"
        f"    stream: {'true' if stream else 'false'}\n"
    )


@pytest.fixture
async def llm() -> AsyncIterator[OpenAIEmulator]:
    emulator = await OpenAIEmulator(stream_chunks=CHUNKS, chunk_delay=CHUNK_DELAY).start()
    emulator.responder = lambda body: ScriptedReply.text(ANSWER)
    yield emulator
    await emulator.stop()


@pytest.fixture
def personas_dir(tmp_path: Path, llm: OpenAIEmulator) -> Path:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "writer.yaml").write_text(_llm_persona("writer", llm.base_url, stream=True))
    (folder / "plain.yaml").write_text(_llm_persona("plain", llm.base_url, stream=False))
    return folder


@pytest.fixture
def draft_gateway(store_url: str, personas_dir: Path, emulator: SlackEmulator) -> GatewayFactory:
    def start(*, role: Any = "all") -> Any:
        data = slack_config(store_url, personas_dir, emulator)
        data["routing"] = {
            "default_persona": "writer",
            "rules": [{"persona": "plain", "keywords": ["plain"]}],
        }
        return running_gateway(data, role=role)

    return start


def _calls(emulator: SlackEmulator, method: str) -> list[Any]:
    return [c for c in emulator.calls if c.method == method]


def _reply_update(emulator: SlackEmulator) -> list[Any]:
    """The chat.update that made the draft the reply (it carries the reply's metadata)."""
    return [c for c in _calls(emulator, "chat.update") if c.args.get("metadata") and not c.error]


def _drafts(gw: RunningGateway, outcome: str) -> float:
    prefix = f'flowbiz_reply_drafts_total{{channel="slack",outcome="{outcome}"}}'
    for line in gw.runtime.metrics.render().decode().splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_streamed_answer_is_one_message_posted_then_updated(
    draft_gateway, emulator, llm, session
) -> None:
    async with draft_gateway() as gw:
        await sender_for(session, gw).event(event_callback(message_event(text="hours?")))
        [final] = await eventually(lambda: _reply_update(emulator))
        shown = _drafts(gw, "shown")
    [post] = _calls(emulator, "chat.postMessage")
    # The first draft: part of the answer, as the persona, where the reply goes.
    assert ANSWER.startswith(post.args["text"])
    assert post.args["text"] != ANSWER
    assert (post.args["channel"], post.args["username"]) == ("D0DIRECT", "Writer Bot")
    updates = _calls(emulator, "chat.update")
    assert len(updates) >= 2  # at least one draft update, then the reply
    assert updates[-1] is final
    assert {u.args["ts"] for u in updates} == {emulator.posted[0].ts}
    assert final.args["metadata"]["event_payload"]["idempotency_key"].endswith(":0")
    assert shown >= 2
    # One message in the channel, and it says the whole answer.
    assert [p.text for p in emulator.posted] == [ANSWER]
    assert llm.streamed == 1


async def test_a_threaded_mention_drafts_in_its_thread(
    draft_gateway, emulator, llm, session
) -> None:
    thread = "1700000000.000100"
    async with draft_gateway() as gw:
        await sender_for(session, gw).event(
            event_callback(app_mention_event(text="<@U0FLOWBIZ> hours?", thread_ts=thread))
        )
        await eventually(lambda: _reply_update(emulator))
    [post] = _calls(emulator, "chat.postMessage")
    assert post.args["thread_ts"] == thread
    assert [(p.text, p.thread_ts) for p in emulator.posted] == [(ANSWER, thread)]


@pytest.mark.parametrize("method", ["chat.postMessage", "chat.update"])
async def test_a_failing_draft_neither_changes_nor_delays_the_reply(
    draft_gateway, emulator, llm, session, method
) -> None:
    emulator.fail_next(method, status=500, error="internal_error")
    async with draft_gateway() as gw:
        started = time.perf_counter()
        await sender_for(session, gw).event(event_callback(message_event(text="hours?")))
        await eventually(lambda: emulator.posted and emulator.posted[0].text == ANSWER)
        elapsed = time.perf_counter() - started
        await eventually(lambda: _drafts(gw, "failed") == 1)
    # The answer streams for 0.75 s; a failed draft adds nothing worth a second.
    assert elapsed < CHUNKS * CHUNK_DELAY + 1.0
    assert [p.text for p in emulator.posted] == [ANSWER]
    assert len([c for c in _calls(emulator, "chat.postMessage") if c.error is None]) == 1


async def _first_turn_left_a_draft(
    draft_gateway: GatewayFactory,
    emulator: SlackEmulator,
    session: aiohttp.ClientSession,
    *,
    deleted: bool = False,
) -> str:
    """The customer writes; the event is stored but no worker answers (a web-only gateway).
    Then what a first turn that died before its commit left: its draft in the channel (or
    deleted there since) and the draft's ts recorded for the inbound message."""
    async with draft_gateway(role="web") as web:
        await sender_for(session, web).event(event_callback(message_event(text="hours?")))
        runtime = web.runtime
        assert runtime.store is not None
        entries = [
            entry
            for p in range(web.config.store.partitions)
            for entry in await runtime.store.range(runtime.keyspace.inbox(p))
        ]
        [entry] = [e for e in entries if is_raw_event(e.payload)]
        event = RawEvent.model_validate_json(entry.payload)
        ts = "1700000000.999999"  # never posted (deleted): chat.update answers message_not_found
        if not deleted:
            async with session.post(
                f"{emulator.api_url}chat.postMessage",
                json={"channel": "D0DIRECT", "text": "We open at"},
                headers={"Authorization": f"Bearer {ACME.bot_token}"},
            ) as response:
                ts = (await response.json())["ts"]
        await runtime.store.put_record(
            runtime.keyspace.slack_draft(event.conversation, event.id), ts.encode()
        )
    return ts


async def test_a_turn_run_again_updates_the_draft_it_left(
    draft_gateway, emulator, llm, session
) -> None:
    """A worker posted and recorded the draft, then died before its commit: the turn runs
    again (here: in a second gateway on the same store) and updates that same message."""
    ts = await _first_turn_left_a_draft(draft_gateway, emulator, session)
    async with draft_gateway() as gw:
        await eventually(lambda: _reply_update(emulator))
        assert _drafts(gw, "shown") >= 1
    assert len(_calls(emulator, "chat.postMessage")) == 1  # the first turn's, none since
    assert {u.args["ts"] for u in _calls(emulator, "chat.update")} == {ts}
    assert [p.text for p in emulator.posted] == [ANSWER]


async def test_a_deleted_draft_gives_way_to_a_post(draft_gateway, emulator, llm, session) -> None:
    """The recorded draft is gone from Slack: the drafts stop and the reply is posted (not
    dead-lettered for an update Slack cannot make)."""
    await _first_turn_left_a_draft(draft_gateway, emulator, session, deleted=True)
    async with draft_gateway() as gw:
        [post] = await emulator.wait_for_posts(1)
        await eventually(lambda: _drafts(gw, "failed") == 1)
    assert post.text == ANSWER
    assert {c.error for c in _calls(emulator, "chat.update")} == {"message_not_found"}
    assert len(_calls(emulator, "chat.postMessage")) == 1


async def test_a_persona_without_stream_posts_once_without_drafts(
    draft_gateway, emulator, llm, session
) -> None:
    async with draft_gateway() as gw:
        await sender_for(session, gw).event(event_callback(message_event(text="plain hours?")))
        [post] = await emulator.wait_for_posts(1)
        assert _drafts(gw, "shown") == 0
    assert post.text == ANSWER
    assert _calls(emulator, "chat.update") == []
    assert "stream" not in llm.requests[0]
    assert llm.streamed == 0


async def test_an_ephemeral_answer_takes_no_draft(draft_gateway, emulator, llm, session) -> None:
    """A slash command answered through its response_url: only one person sees it, so no
    draft is posted in the channel."""
    async with draft_gateway() as gw:
        await sender_for(session, gw).command(
            slash_command_fields(
                command="/ask", text="hours?", response_url=emulator.response_url()
            )
        )
        [post] = await emulator.wait_for_posts(1)
        await eventually(lambda: _drafts(gw, "skipped") == 1)
    assert post.via == "response_url"
    assert post.text == ANSWER
    assert _calls(emulator, "chat.postMessage") == _calls(emulator, "chat.update") == []


async def test_drafts_are_throttled_to_one_every_half_second(
    draft_gateway, emulator, llm, session
) -> None:
    """Twenty pieces over a second: a handful of drafts, not twenty Slack calls."""
    llm.stream_chunks, llm.chunk_delay = 20, 0.05
    answer = " ".join(f"word{n}" for n in range(40))
    llm.responder = lambda body: ScriptedReply.text(answer)
    async with draft_gateway() as gw:
        await sender_for(session, gw).event(event_callback(message_event(text="hours?")))
        await eventually(lambda: _reply_update(emulator))
        shown = _drafts(gw, "shown")
    draft_calls = (
        len(_calls(emulator, "chat.postMessage")) + len(_calls(emulator, "chat.update")) - 1
    )
    assert 1 <= draft_calls == shown <= 4  # a post at once, then at most one per 0.5 s
    assert [p.text for p in emulator.posted] == [answer]


async def test_a_first_draft_whose_answer_is_lost_is_not_retried(
    draft_gateway, emulator, llm, session
) -> None:
    """Slack takes the first draft but its answer never comes (the documented window): the
    drafts stop at the timeout, the reply is posted on time, and no further draft is tried
    for that message: the stray draft stays the only extra message."""
    emulator.drop_next("chat.postMessage", mode="hang")
    async with draft_gateway() as gw:
        started = time.perf_counter()
        await sender_for(session, gw).event(event_callback(message_event(text="hours?")))
        posts = await emulator.wait_for_posts(2)
        elapsed = time.perf_counter() - started
        assert _drafts(gw, "timeout") == 1
    assert elapsed < CHUNKS * CHUNK_DELAY + 1.5
    assert posts[1].text == ANSWER
    assert ANSWER.startswith(posts[0].text)
    assert _calls(emulator, "chat.update") == []
