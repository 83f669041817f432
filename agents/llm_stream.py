"""Reading a streamed chat completion: server-sent events into one assistant message.

An OpenAI-compatible server asked for ``"stream": true`` answers ``text/event-stream``:
``data: {chunk}`` lines whose ``choices[0].delta`` carries pieces of the content (and of
any tool calls, by ``index``), ending with ``data: [DONE]``. :func:`read_stream` joins them
into the message a non-streamed answer holds (``{"role", "content", "tool_calls"}``), and
reports the content so far to ``on_partial`` after each piece that added text.

Guarantees: the answer read is bounded (:data:`MAX_STREAM_BYTES`, else an AgentError);
a line that is not an event, or a chunk that is not JSON, is an AgentError (the endpoint
is broken), never a partial answer taken for a whole one; a stream that ends without
``[DONE]`` is an AgentError too (the answer was cut off).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from gateway.errors import AgentError

__all__ = ["MAX_STREAM_BYTES", "read_stream"]

MAX_STREAM_BYTES = 4 * 1024 * 1024

Partial = Callable[[str], Awaitable[None]]


async def read_stream(
    response: aiohttp.ClientResponse, on_partial: Partial | None
) -> dict[str, Any]:
    """The assistant message of a streamed completion (raises AgentError when unreadable)."""
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    read = 0
    done = False
    async for raw in response.content:
        read += len(raw)
        if read > MAX_STREAM_BYTES:
            raise AgentError("the LLM endpoint's streamed answer is too long")
        line = raw.decode("utf-8", "replace").strip()
        if not line or line.startswith(":"):  # keep-alive comments and event separators
            continue
        field, _, data = line.partition(":")
        if field != "data":
            continue  # event:, id:, retry: say nothing of the content
        data = data.strip()
        if data == "[DONE]":
            done = True
            break
        delta = _delta(data)
        piece = delta.get("content")
        if isinstance(piece, str) and piece:
            content.append(piece)
            if on_partial is not None:
                await on_partial("".join(content))
        for call in delta.get("tool_calls") or ():
            _merge_call(calls, call)
    if not done:
        raise AgentError("the LLM endpoint's streamed answer ended before [DONE]")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message


def _delta(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as exc:
        raise AgentError("the LLM endpoint streamed a chunk that is not JSON") from exc
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(choices, list):
        raise AgentError("the LLM endpoint streamed a chunk that is not a completion chunk")
    if not choices:  # a usage-only chunk
        return {}
    delta = choices[0].get("delta") if isinstance(choices[0], dict) else None
    return delta if isinstance(delta, dict) else {}


def _merge_call(calls: dict[int, dict[str, Any]], piece: Any) -> None:
    """Tool calls arrive in pieces by ``index``: the id and name once, the arguments in parts."""
    if not isinstance(piece, dict):
        raise AgentError("the LLM endpoint streamed a tool call that is not an object")
    index = piece.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < 64:
        raise AgentError("the LLM endpoint streamed a tool call with a bad index")
    call = calls.setdefault(
        index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
    )
    if isinstance(piece.get("id"), str):
        call["id"] = piece["id"]
    function = piece.get("function")
    if isinstance(function, dict):
        if isinstance(function.get("name"), str):
            call["function"]["name"] += function["name"]
        if isinstance(function.get("arguments"), str):
            call["function"]["arguments"] += function["arguments"]
