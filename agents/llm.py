"""The LLM agent: any OpenAI-compatible chat-completions endpoint, with permitted tools.

Options::

    base_url: https://api.openai.com/v1      # or a local server: http://127.0.0.1:11434/v1
    allow_private: false                     # true to reach a private/loopback base_url
    model: gpt-4o-mini
    api_key_env: OPENAI_API_KEY              # the *name* of the variable; omit for no key
    prompt: system                           # which of the persona's prompts is the system one
    prompt_version: null                     # pin a version; default: the persona's choice
    history_turns: 10                        # recent turns sent along
    max_steps: 4                             # model calls per message (stop condition)
    timeout_seconds: 30                      # the whole turn, tools included (stop condition)
    request_timeout_seconds: 20              # one model call
    temperature: 0.3
    deterministic: false                     # true: temperature 0 and a fixed seed
    seed: 7
    max_tokens: null
    vision: false                            # true: kept images are shown to the model
    vision_max_bytes: 5242880                # bigger images are described in text instead
    stream: false                            # true: the answer is streamed, shown as a draft
    tool_options:                            # per-tool settings, see agents/tools
      run_command: {allow: ["uptime"]}

The message's files reach the model as text (``[image: photo.jpg]``), except with
``vision: true``: then each image the gateway kept (``blob`` set, ``image/*``) and no bigger
than ``vision_max_bytes`` is sent as an ``image_url`` content part holding a ``data:`` URL of
its bytes, read from the blob store — never a URL the model's provider would fetch.

``base_url`` is held to the SSRF guard of :mod:`gateway.netguard` (a private, loopback or
link-local address, in any spelling or IPv6 mapping, in the URL or in its DNS answer, is
refused with an AgentError) unless the options say ``allow_private: true``: a model server
on the same host or network is a deliberate choice.

With ``stream: true`` each model call asks for ``"stream": true`` and reads the server-sent
events (:mod:`agents.llm_stream`); the text so far goes to ``AgentContext.on_partial`` as it
arrives (the worker shows it as a draft where the channel can, gateway/drafts.py). A streamed
answer that turns out to be tool calls is handled as a non-streamed one; only text is shown.

Tools are deny-first: only the persona's ``tools`` are offered — the built-ins it lists and
the Model Context Protocol tools its ``mcp:`` grants cover (agents/tools/mcp.py, read from
the servers at the start of each turn) — and a call to any other name is refused and
reported back to the model as an error, as is a call whose arguments do not match the
tool's JSON schema. The model then gets another step to recover. Each refusal is written to
the audit stream (``tool.refused``) when the turn has one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.base import AgentContext, AgentReply, ReplyPart, fill_template
from agents.llm_stream import Partial, read_stream
from agents.persona import Persona
from agents.tools import Tool, ToolContext, ToolResult, build_tools
from agents.tools.audit import audit_tool
from agents.tools.mcp_servers import McpServers

if TYPE_CHECKING:
    from agents.tools.mcp import McpToolset
from gateway.errors import AgentError
from gateway.media import MediaUnavailable
from gateway.models import Attachment
from gateway.netguard import refusal, refused_by_guard, session_for
from gateway.observability import get_logger

__all__ = ["LlmAgent", "LlmOptions"]

log = get_logger(__name__)

_DEFAULT_SYSTEM = "You are $display_name, an assistant of $tenant_name. Be brief and accurate."


class LlmOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    allow_private: bool = False
    model: str
    api_key_env: str | None = None
    prompt: str = "system"
    prompt_version: int | None = None
    history_turns: int = Field(default=10, ge=0)
    max_steps: int = Field(default=4, ge=1, le=20)
    timeout_seconds: float = Field(default=30, gt=0)
    request_timeout_seconds: float = Field(default=20, gt=0)
    temperature: float = Field(default=0.3, ge=0, le=2)
    deterministic: bool = False
    seed: int = 7
    max_tokens: int | None = Field(default=None, gt=0)
    vision: bool = False  # the model takes images: kept ones are sent as image_url parts
    vision_max_bytes: int = Field(default=5 * 1024 * 1024, gt=0, le=20 * 1024 * 1024)
    stream: bool = False  # ask for server-sent events; the text so far goes to on_partial
    tool_options: dict[str, dict[str, Any]] = Field(default_factory=dict)


def _described(attachment: Attachment) -> str:
    """A file in words, for a model that does not see it: never the platform's URL."""
    if attachment.location is not None or attachment.contact is not None:
        return attachment.describe()
    label = attachment.name or "unnamed"
    if attachment.refused is not None:
        return f"[{attachment.kind}: {label} (not kept: {attachment.refused})]"
    return f"[{attachment.kind}: {label}]"


class _FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    arguments: str = "{}"


class _ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    type: str = "function"
    function: _FunctionCall


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: _Message
    finish_reason: str | None = None


class _Completion(BaseModel):
    model_config = ConfigDict(extra="ignore")
    choices: list[_Choice] = Field(min_length=1)


class LlmAgent:
    def __init__(self, options: LlmOptions) -> None:
        self.options = options
        self._url_refusal = None if options.allow_private else refusal(options.base_url)
        self.tools: dict[str, Tool] = {}  # the built-ins; MCP tools join them per turn
        self.mcp_tools: McpToolset | None = None
        # By tool name: the schema a validator was made from, and the validator.
        self._validators: dict[str, tuple[Mapping[str, Any], Draft202012Validator]] = {}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> LlmAgent:
        return cls(LlmOptions.model_validate(options))

    def bind(self, persona: Persona, *, mcp: McpServers | None = None) -> None:
        """Build the persona's permitted tools (and nothing else); called once at load.

        Its MCP grants must name servers in ``mcp`` (the gateway's ``mcp_servers``)."""
        self.tools = build_tools(persona, self.options.tool_options)
        self.mcp_tools = None
        if persona.mcp_grants:
            # Imported only for a persona that grants MCP tools: the SDK is loaded then.
            from agents.tools.mcp import McpToolset

            self.mcp_tools = McpToolset(persona, mcp)
        self._validators = {}
        for tool in self.tools.values():
            Draft202012Validator.check_schema(tool.parameters)
            self._validator(tool)

    def _validator(self, tool: Tool) -> Draft202012Validator:
        made = self._validators.get(tool.name)
        if made is None or made[0] is not tool.parameters:
            made = (tool.parameters, Draft202012Validator(tool.parameters))
            self._validators[tool.name] = made
        return made[1]

    async def _turn_tools(self) -> dict[str, Tool]:
        if self.mcp_tools is None:
            return self.tools
        return {**self.tools, **await self.mcp_tools.tools()}

    # -- the turn ----------------------------------------------------------------------------
    async def respond(self, context: AgentContext) -> AgentReply:
        try:
            async with asyncio.timeout(self.options.timeout_seconds):
                return await self._run(context)
        except TimeoutError as exc:
            raise AgentError("the LLM agent ran past its overall timeout") from exc

    async def _messages(self, context: AgentContext) -> list[dict[str, Any]]:
        opts = self.options
        template = context.persona.prompts.get(opts.prompt)
        if template is not None:
            system = template.render(context.variables, version=opts.prompt_version)
        else:
            # One pass: a value (a display name a stranger chose) is never read as a template.
            system = fill_template(_DEFAULT_SYSTEM, context.variables)
        turns = context.history[-opts.history_turns :] if opts.history_turns else ()
        return [
            {"role": "system", "content": system},
            *({"role": t.role, "content": t.text} for t in turns),
            {"role": "user", "content": await self._user_content(context)},
        ]

    async def _user_content(self, context: AgentContext) -> str | list[dict[str, Any]]:
        """The message's text with its files: described in text, or (``vision``) the kept
        images as ``data:`` URLs, so that the model sees them."""
        message = context.message
        lines = [message.text] if message.text else []
        images: list[dict[str, Any]] = []
        for attachment in message.attachments:
            url = await self._image_url(attachment, context) if self.options.vision else None
            if url is not None:
                images.append({"type": "image_url", "image_url": {"url": url}})
            else:
                lines.append(_described(attachment))
        text = "\n".join(lines)
        if not images:
            return text
        return [{"type": "text", "text": text}, *images]

    async def _image_url(self, attachment: Attachment, context: AgentContext) -> str | None:
        """A ``data:`` URL of a kept image small enough to send, else None."""
        media = context.media
        limit = self.options.vision_max_bytes
        if media is None or attachment.blob is None:
            return None
        if not (attachment.mime_type or "").startswith("image/"):
            return None
        if attachment.size is not None and attachment.size > limit:
            return None
        try:
            info, data = await media.read(attachment)
        except (MediaUnavailable, OSError):
            return None
        if len(data) > limit or not info.content_type.startswith("image/"):
            return None
        return f"data:{info.content_type};base64,{base64.b64encode(data).decode('ascii')}"

    def _request(self, messages: list[dict[str, Any]], tools: Mapping[str, Tool]) -> dict[str, Any]:
        opts = self.options
        body: dict[str, Any] = {"model": opts.model, "messages": messages}
        if opts.deterministic:
            body |= {"temperature": 0, "seed": opts.seed}
        else:
            body["temperature"] = opts.temperature
        if opts.max_tokens is not None:
            body["max_tokens"] = opts.max_tokens
        if opts.stream:
            body["stream"] = True
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": dict(t.parameters),
                    },
                }
                for t in tools.values()
            ]
            body["tool_choice"] = "auto"
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "FlowBiz-Gateway"}
        name = self.options.api_key_env
        if name is not None:
            key = os.environ.get(name)
            if not key:
                raise AgentError(f"environment variable {name} (the LLM API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def _run(self, context: AgentContext) -> AgentReply:
        if self._url_refusal is not None:
            log.warning("agent.llm_refused", persona=context.persona.name, reason="ssrf")
            raise AgentError(f"the LLM base_url is refused: {self._url_refusal}")
        messages = await self._messages(context)
        headers = self._headers()
        tool_context = ToolContext(agent=context)
        tools = await self._turn_tools()
        switch: str | None = None
        handoff: str | None = None
        async with session_for(allow_private=self.options.allow_private) as session:
            for step in range(1, self.options.max_steps + 1):
                message = await self._complete(
                    session, headers, messages, tools, context.on_partial
                )
                calls = message.tool_calls or []
                log.info(
                    "agent.llm_step", persona=context.persona.name, step=step, calls=len(calls)
                )
                if not calls:
                    text = (message.content or "").strip()
                    parts = (ReplyPart(text=text),) if text else ()
                    return AgentReply(parts=parts, switch_persona=switch, handoff=handoff)
                messages.append(
                    {
                        "role": "assistant",
                        "content": message.content,
                        "tool_calls": [c.model_dump() for c in calls],
                    }
                )
                for call in calls:
                    result = await self._call_tool(call, tools, tool_context)
                    switch = result.switch_persona or switch
                    handoff = result.handoff or handoff
                    content = (
                        json.dumps({"error": result.content}) if result.is_error else result.content
                    )
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
        raise AgentError(f"the LLM agent reached its step limit ({self.options.max_steps})")

    async def _complete(
        self,
        session: aiohttp.ClientSession,
        headers: Mapping[str, str],
        messages: list[dict[str, Any]],
        tools: Mapping[str, Tool],
        on_partial: Partial | None = None,
    ) -> _Message:
        url = self.options.base_url.rstrip("/") + "/chat/completions"
        streamed: dict[str, Any] | None = None
        try:
            async with session.post(
                url,
                json=self._request(messages, tools),
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=self.options.request_timeout_seconds),
            ) as response:
                status = response.status
                if status == 200 and response.content_type == "text/event-stream":
                    streamed = await read_stream(response, on_partial)
                    raw = b""
                else:  # not streamed (an error, or a server that ignores "stream")
                    raw = await response.read()
        except ValueError as exc:  # aiohttp: an event line longer than its buffer
            raise AgentError("the LLM endpoint streamed a line too long to read") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            refused = refused_by_guard(exc)
            if refused is not None:
                log.warning("agent.llm_refused", reason="ssrf")
                raise AgentError(f"the LLM base_url is refused: {refused}") from exc
            raise AgentError(f"the LLM endpoint failed: {type(exc).__name__}") from exc
        if status != 200:
            raise AgentError(f"the LLM endpoint answered {status}")
        try:
            if streamed is not None:
                return _Message.model_validate(streamed)
            return _Completion.model_validate_json(raw).choices[0].message
        except ValidationError as exc:
            raise AgentError("the LLM endpoint's answer is not a chat completion") from exc

    async def _call_tool(
        self, call: _ToolCall, tools: Mapping[str, Tool], context: ToolContext
    ) -> ToolResult:
        name = call.function.name
        persona = context.agent.persona.name
        tool = tools.get(name)
        if tool is None:  # deny-first: whatever the model asks for, only listed tools run
            return await self._refuse(
                context, name, "not_allowed", f"tool {name!r} is not permitted here"
            )
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError:
            return await self._refuse(
                context, name, "arguments_not_json", "the arguments are not valid JSON"
            )
        try:
            error = next(iter(self._validator(tool).iter_errors(arguments)), None)
        except Exception:  # noqa: BLE001 - a schema that cannot be applied (a $ref it cannot resolve)
            return await self._refuse(
                context, name, "schema_unusable", "the tool's schema cannot be checked; not called"
            )
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "arguments"
            return await self._refuse(
                context, name, "invalid_arguments", f"invalid arguments at {where}: {error.message}"
            )
        log.info("agent.tool_called", persona=persona, tool=name)
        return await tool.run(arguments, context)

    async def _refuse(self, context: ToolContext, name: str, reason: str, text: str) -> ToolResult:
        """Tell the model no, log it and write it to the audit stream (when there is one)."""
        shown = name[:64]  # the model chose it: bounded before it is logged or stored
        log.warning(
            "agent.tool_refused", persona=context.agent.persona.name, tool=shown, reason=reason
        )
        await audit_tool(context, "tool.refused", shown, reason=reason)
        return ToolResult(content=text[:500], is_error=True)
