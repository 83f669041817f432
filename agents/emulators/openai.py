"""A real local server speaking the OpenAI chat-completions API, with scripted answers.

``OpenAIEmulator`` listens on loopback and answers ``POST /v1/chat/completions`` (and
``GET /v1/models``) the way the OpenAI API does. What it answers is scripted: queue
:class:`ScriptedReply` items with :meth:`OpenAIEmulator.script` (text, tool calls, an error
status, a delay), or give a ``responder`` that decides from the request; with neither it
echoes the last user message. Every request body is recorded in ``requests``, so a test can
check what the agent sent (the system prompt, the tools offered, temperature and seed, the
tool results it reported back).

A user message may be a list of content parts (``text`` and ``image_url``), as vision models
take them: the parts of each request's last user message are recorded in ``content_parts``,
the images it could decode (``data:`` URLs) in ``images``, and the echo answer names each
image it saw by type, size and SHA-256, so a test can tell the model really got the bytes.

A request with ``"stream": true`` is answered as the API streams: ``text/event-stream``, the
content in ``stream_chunks`` pieces (split between words) ``chunk_delay`` seconds apart,
each a ``chat.completion.chunk`` whose ``choices[0].delta`` holds it, tool calls in one
chunk of their own, then ``data: [DONE]``; ``streamed`` counts such answers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["OpenAIEmulator", "ScriptedCall", "ScriptedReply"]


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    name: str
    arguments: Mapping[str, Any] | str  # a str is sent as is (e.g. to send broken JSON)


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    content: str | None = None
    tool_calls: tuple[ScriptedCall, ...] = ()
    status: int = 200  # anything else is answered as an API error with this status
    delay: float = 0.0

    @classmethod
    def text(cls, content: str) -> ScriptedReply:
        return cls(content=content)

    @classmethod
    def call(cls, name: str, arguments: Mapping[str, Any] | str) -> ScriptedReply:
        return cls(tool_calls=(ScriptedCall(name, arguments),))


Responder = Callable[[dict[str, Any]], ScriptedReply]


@dataclass(slots=True)
class OpenAIEmulator:
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    responder: Responder | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    content_parts: list[list[dict[str, Any]]] = field(default_factory=list)
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (type, bytes) seen
    stream_chunks: int = 4  # pieces of a streamed answer's content
    chunk_delay: float = 0.05  # seconds between them
    streamed: int = 0  # answers sent as server-sent events
    _queue: deque[ScriptedReply] = field(default_factory=deque)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def script(self, *replies: ScriptedReply) -> None:
        self._queue.extend(replies)

    async def start(self) -> OpenAIEmulator:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _authorised(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("Authorization", "") == f"Bearer {self.api_key}"

    @staticmethod
    def _error(status: int, message: str, kind: str) -> web.Response:
        return web.json_response({"error": {"message": message, "type": kind}}, status=status)

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error(401, "Incorrect API key provided.", "invalid_request_error")
        return web.json_response(
            {"object": "list", "data": [{"id": "emulated", "object": "model"}]}
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._error(401, "Incorrect API key provided.", "invalid_request_error")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "We could not parse the JSON body.", "invalid_request_error")
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            return self._error(400, "model and messages are required", "invalid_request_error")
        self.requests.append(body)
        seen = self._look(body)
        reply = self._next(body, seen)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            return self._error(reply.status, "scripted failure", "server_error")
        if body.get("stream") is True:
            return await self._stream(request, body, reply)
        return web.json_response(self._completion(body, reply))

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: ScriptedReply
    ) -> web.StreamResponse:
        self.streamed += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        whole = self._completion(body, reply)
        message = whole["choices"][0]["message"]
        ident = whole["id"]

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": whole["created"],
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        for n, piece in enumerate(_pieces(message.get("content") or "", self.stream_chunks)):
            if n and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            await send({"content": piece})
        calls = message.get("tool_calls") or []
        if calls:
            await send({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})
        await send({}, "tool_calls" if calls else "stop")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _look(self, body: dict[str, Any]) -> list[str]:
        """Record the last user message's content parts; what it says of each image seen."""
        users = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        last: dict[str, Any] = users[-1] if users else {}
        content = last.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        self.content_parts.append(parts)
        seen = []
        for part in parts:
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            url = str((part.get("image_url") or {}).get("url", ""))
            head, _, data = url.partition(",")
            if not (head.startswith("data:") and head.endswith(";base64")):
                seen.append("an image I cannot open")
                continue
            try:
                raw = base64.b64decode(data, validate=True)
            except binascii.Error:
                seen.append("an image I cannot open")
                continue
            kind = head[len("data:") : -len(";base64")]
            self.images.append((kind, raw))
            digest = hashlib.sha256(raw).hexdigest()[:12]
            seen.append(f"{kind}, {len(raw)} bytes, sha256 {digest}")
        return seen

    def _next(self, body: dict[str, Any], seen: list[str]) -> ScriptedReply:
        if self._queue:
            return self._queue.popleft()
        if self.responder is not None:
            return self.responder(body)
        text = " ".join(
            str(p.get("text", "")) for p in self.content_parts[-1] if p.get("type") == "text"
        )
        answer = f"(emulated) {text}"
        if seen:
            answer += " — I see: " + "; ".join(seen)
        return ScriptedReply.text(answer)

    def _completion(self, body: dict[str, Any], reply: ScriptedReply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": call.arguments
                        if isinstance(call.arguments, str)
                        else json.dumps(call.arguments),
                    },
                }
                for call in reply.tool_calls
            ]
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_emulated",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }


def _pieces(text: str, count: int) -> list[str]:
    """``text`` in at most ``count`` pieces, cut after a space, that join back to it."""
    words = text.split(" ")
    if count <= 1 or len(words) < 2:
        return [text] if text else []
    size = -(-len(words) // count)
    groups = [words[i : i + size] for i in range(0, len(words), size)]
    return [" ".join(g) + (" " if i < len(groups) - 1 else "") for i, g in enumerate(groups)]
