"""A real local server speaking the OpenAI chat-completions API, with scripted answers.

``OpenAIEmulator`` listens on loopback and answers ``POST /v1/chat/completions`` (and
``GET /v1/models``) the way the OpenAI API does. What it answers is scripted: queue
:class:`ScriptedReply` items with :meth:`OpenAIEmulator.script` (text, tool calls, an error
status, a delay), or give a ``responder`` that decides from the request; with neither it
echoes the last user message. Every request body is recorded in ``requests``, so a test can
check what the agent sent (the system prompt, the tools offered, temperature and seed, the
tool results it reported back).
"""

from __future__ import annotations

import asyncio
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

    async def _completions(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error(401, "Incorrect API key provided.", "invalid_request_error")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "We could not parse the JSON body.", "invalid_request_error")
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            return self._error(400, "model and messages are required", "invalid_request_error")
        self.requests.append(body)
        reply = self._next(body)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            return self._error(reply.status, "scripted failure", "server_error")
        return web.json_response(self._completion(body, reply))

    def _next(self, body: dict[str, Any]) -> ScriptedReply:
        if self._queue:
            return self._queue.popleft()
        if self.responder is not None:
            return self.responder(body)
        last = next(
            (m.get("content") for m in reversed(body["messages"]) if m.get("role") == "user"),
            "",
        )
        return ScriptedReply.text(f"(emulated) {last}")

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
