"""``run_command``: run one allowlisted command, never a shell.

The model asks for a command line; it is split with :func:`shlex.split` into an argv and run
with :func:`asyncio.create_subprocess_exec` — no shell ever sees it, so ``;``, ``|`` or
``$(...)`` are plain characters, and they are refused anyway. A command runs only if

1. no deny pattern (the built-in ones and the persona's) matches the command line, and
2. its argv *starts with* one of the allowed prefixes, word for word
   (``allow: ["df -h", "systemctl status"]`` permits ``systemctl status nginx`` but not
   ``systemctl restart nginx``, nor ``/usr/bin/df``).

The child gets an empty stdin, a minimal environment (``PATH`` and ``LANG`` only: the
gateway's secrets are not passed on), a timeout after which it is killed, and its output is
cut to ``max_output_chars``. Options::

    tool_options:
      run_command:
        allow: ["uptime", "df -h", "git log --oneline"]
        deny: ["(?i)\\bpasswd\\b"]
        timeout_seconds: 5
        max_output_chars: 4000
        cwd: /srv/app            # optional
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.persona import Persona
from agents.tools.base import ToolContext, ToolResult
from gateway.observability import get_logger

__all__ = ["BUILTIN_DENY", "CommandPolicy", "RunCommandTool"]

log = get_logger(__name__)

# Refused whatever the persona allows: shell syntax, control characters, destructive verbs.
BUILTIN_DENY = (
    r"[;&|`$<>\\]",
    r"[\x00-\x1f\x7f]",
    r"(?i)(^|\s)(sudo|su|rm|rmdir|mkfs|dd|shutdown|reboot|halt|poweroff|kill|killall)(\s|$)",
)


class CommandPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    allow: tuple[str, ...] = Field(min_length=1)
    deny: tuple[str, ...] = ()
    timeout_seconds: float = Field(default=5, gt=0, le=120)
    max_output_chars: int = Field(default=4000, ge=100, le=100_000)
    cwd: Path | None = None

    @field_validator("allow")
    @classmethod
    def _splittable(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in value:
            if not shlex.split(prefix):
                raise ValueError("an allowed prefix cannot be empty")
        return value

    @field_validator("deny")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            re.compile(pattern)
        return value

    def refusal(self, command: str) -> tuple[list[str] | None, str | None]:
        """The argv to run, or why ``command`` is refused."""
        for pattern in (*BUILTIN_DENY, *self.deny):
            if re.search(pattern, command):
                return None, "the command matches a deny pattern"
        try:
            argv = shlex.split(command)
        except ValueError:
            return None, "the command line cannot be parsed"
        if not argv:
            return None, "the command is empty"
        for prefix in self.allow:
            words = shlex.split(prefix)
            if argv[: len(words)] == words:
                return argv, None
        return None, "the command is not on the allowlist"


class RunCommandTool:
    name = "run_command"
    description = (
        "Run one read-only diagnostic command from the allowlist on the host and return its "
        "output. Commands outside the allowlist are refused. No shell syntax."
    )
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {"command": {"type": "string", "minLength": 1, "maxLength": 500}},
        "required": ["command"],
        "additionalProperties": False,
    }

    def __init__(self, policy: CommandPolicy) -> None:
        self.policy = policy

    @classmethod
    def build(cls, persona: Persona, options: Mapping[str, Any]) -> RunCommandTool:
        return cls(CommandPolicy.model_validate(dict(options)))

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        command = str(arguments["command"])
        argv, refused = self.policy.refusal(command)
        if argv is None:
            log.warning("tool.command_refused", persona=context.agent.persona.name, reason=refused)
            return ToolResult(content=f"Refused: {refused}.", is_error=True)
        log.info("tool.command_run", persona=context.agent.persona.name, program=argv[0])
        return await self.execute(argv)

    async def execute(self, argv: list[str]) -> ToolResult:
        policy = self.policy
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=policy.cwd,
            )
        except OSError as exc:
            return ToolResult(content=f"Could not start {argv[0]}: {exc.strerror}", is_error=True)
        try:
            async with asyncio.timeout(policy.timeout_seconds):
                output, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            return ToolResult(
                content=f"Killed after {policy.timeout_seconds:g} s without finishing.",
                is_error=True,
            )
        text = output.decode("utf-8", "replace")
        if len(text) > policy.max_output_chars:
            text = text[: policy.max_output_chars] + "\n[output cut]"
        return ToolResult(
            content=f"exit status {process.returncode}\n{text}",
            is_error=process.returncode != 0,
        )
