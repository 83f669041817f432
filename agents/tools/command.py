"""``run_command``: run one command of an allow-list of whole command shapes, never a shell.

The model asks for a command line; it is split with :func:`shlex.split` into an argv (quotes
and escapes removed) and run with :func:`asyncio.create_subprocess_exec` — no shell ever sees
it. A command runs only if all of these hold:

1. no deny pattern (the built-in ones and the persona's) matches the raw line, the unquoted
   argv joined by spaces, or any single word of it — so ``/etc/sha''dow`` is ``/etc/shadow``
   to the patterns;
2. the argv is one of the configured *shapes*, whole: the shape's fixed words first
   (``[git, log]``), then only the flags it lists (each at most once, written exactly), the
   options it lists with a value matching their rule, and as many operands as it allows —
   nothing else, in any order (``git log --oneline --output=FILE`` is refused; ``--`` is
   refused);
3. every word that names a path (it contains ``/``, is ``.``/``..`` or starts with ``~``, or
   its rule says ``path: true``) resolves — symlinks followed, relative to ``cwd`` — inside
   one of ``roots`` (no roots: no paths);
4. fewer than ``max_concurrent`` commands of this persona are running in this process;
5. the run was written to the audit stream (gateway/audit.py) with its argv and caller.

Every refusal is audited too (``tool.command.refused``); a run writes ``tool.command.run``
before the child starts and ``tool.command.finished`` with its exit status. Without an audit
stream nothing runs. The child gets an empty stdin, a minimal environment (``PATH`` and
``LANG`` only), a timeout after which it is killed, and its output is cut to
``max_output_chars``. Options::

    tool_options:
      run_command:
        commands:
          - argv: [uptime]                      # exactly "uptime"
          - argv: [df]
            flags: [-h, -T]
            args: {max: 1, path: true}          # one optional operand, a path in roots
          - argv: [git, log]
            flags: [--oneline]
            options: {-n: {pattern: "[0-9]{1,3}"}}
        roots: [/srv/app, /var/log/app]
        deny: ["(?i)\\bpasswd\\b"]
        max_concurrent: 3
        timeout_seconds: 5
        max_output_chars: 4000
        cwd: /srv/app                           # optional

``allow: ["df -h"]`` (the former prefixes) is still read, each entry now one exact command
with nothing after it; ``flowbiz check`` reports it so it can be rewritten as ``commands``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents.persona import Persona
from agents.tools.audit import audit_tool
from agents.tools.base import ToolContext, ToolResult
from gateway.observability import get_logger

__all__ = [
    "BUILTIN_DENY",
    "ArgsRule",
    "CommandPolicy",
    "CommandShape",
    "RunCommandTool",
    "ValueRule",
]

log = get_logger(__name__)

# Refused whatever the persona allows: shell syntax, control characters, destructive verbs.
BUILTIN_DENY = (
    r"[;&|`$<>\\]",
    r"[\x00-\x1f\x7f]",
    r"(?i)(^|\s)(sudo|su|rm|rmdir|mkfs|dd|shutdown|reboot|halt|poweroff|kill|killall)(\s|$)",
)

# Commands running per persona in this process, across reloads (which rebuild the tools).
_RUNNING: dict[str, int] = {}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ValueRule(_Model):
    """What one option value or operand may be."""

    pattern: str | None = None  # the whole value must match
    path: bool = False  # a path, which must lie inside one of the roots

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value


class ArgsRule(ValueRule):
    """The operands (words that are not flags): how many, and what each may be."""

    min: int = Field(default=0, ge=0)
    max: int = Field(default=0, ge=0, le=64)


class CommandShape(_Model):
    """One permitted command: its fixed words, then only the flags, options and operands listed."""

    argv: tuple[str, ...] = Field(min_length=1)
    flags: tuple[str, ...] = ()
    options: dict[str, ValueRule] = Field(default_factory=dict)
    args: ArgsRule = ArgsRule()

    @field_validator("flags")
    @classmethod
    def _dashed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for flag in value:
            if not flag.startswith("-") or "=" in flag or flag == "--":
                raise ValueError(f"{flag!r}: a flag starts with '-' and has no '='")
        return value

    @property
    def label(self) -> str:
        return " ".join(self.argv)

    def refusal(self, argv: list[str], policy: CommandPolicy) -> str | None:
        """Why ``argv`` (which starts with this shape's words) does not fit, or None."""
        words = argv[len(self.argv) :]
        seen: set[str] = set()
        operands: list[str] = []
        i = 0
        while i < len(words):
            word = words[i]
            i += 1
            if word == "--":
                return "'--' is not permitted"
            if not word.startswith("-") or word == "-":
                operands.append(word)
                continue
            name, eq, value = word.partition("=")
            if word in self.flags:
                name = word
            elif name in self.options and not (eq and not name.startswith("--")):
                if not eq:  # "--lines=5" or "-n 5"; never "-n=5"
                    if i >= len(words):
                        return f"{name} needs a value"
                    value = words[i]
                    i += 1
                problem = policy.value_problem(value, self.options[name])
                if problem is not None:
                    return f"{name}: {problem}"
            else:
                return f"{word!r} is not a permitted flag of {self.label}"
            if name in seen:
                return f"{name} is given twice"
            seen.add(name)
        if not self.args.min <= len(operands) <= self.args.max:
            return f"{self.label} takes {self.args.min} to {self.args.max} operand(s)"
        for operand in operands:
            problem = policy.value_problem(operand, self.args)
            if problem is not None:
                return problem
        return None


class CommandPolicy(_Model):
    commands: tuple[CommandShape, ...] = ()
    allow: tuple[str, ...] = ()  # former prefixes, now each one exact command (see above)
    roots: tuple[Path, ...] = ()
    deny: tuple[str, ...] = ()
    max_concurrent: int = Field(default=3, ge=1, le=64)
    timeout_seconds: float = Field(default=5, gt=0, le=120)
    max_output_chars: int = Field(default=4000, ge=100, le=100_000)
    cwd: Path | None = None

    @field_validator("allow")
    @classmethod
    def _splittable(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not shlex.split(entry):
                raise ValueError("an allowed command cannot be empty")
        return value

    @field_validator("roots")
    @classmethod
    def _absolute(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        for root in value:
            if not root.is_absolute():
                raise ValueError(f"{root}: roots must be absolute paths")
        # Judged where they really are, like the paths checked against them.
        return tuple(Path(os.path.realpath(root)) for root in value)

    @field_validator("deny")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            re.compile(pattern)
        return value

    @model_validator(mode="after")
    def _some_command(self) -> CommandPolicy:
        if not self.commands and not self.allow:
            raise ValueError("list the permitted commands (commands: [{argv: [...]}, ...])")
        return self

    @property
    def shapes(self) -> tuple[CommandShape, ...]:
        return self.commands + tuple(CommandShape(argv=tuple(shlex.split(a))) for a in self.allow)

    def value_problem(self, value: str, rule: ValueRule) -> str | None:
        if rule.pattern is not None and re.fullmatch(rule.pattern, value) is None:
            return f"{value!r} is not a permitted value"
        if rule.path or _names_a_path(value):
            return self.path_problem(value)
        return None

    def path_problem(self, value: str) -> str | None:
        base = self.cwd if self.cwd is not None else Path.cwd()
        real = Path(os.path.realpath(base / value))
        if any(real == root or real.is_relative_to(root) for root in self.roots):
            return None
        return f"{value!r} is outside the allowed roots"

    def refusal(self, command: str) -> tuple[list[str] | None, str | None]:
        """The argv to run, or why ``command`` is refused (with the argv when it parsed)."""
        try:
            argv = shlex.split(command)
        except ValueError:
            argv = None
        targets = [command] if argv is None else [command, " ".join(argv), *argv]
        for pattern in (*BUILTIN_DENY, *self.deny):
            if any(re.search(pattern, target) for target in targets):
                return None, "the command matches a deny pattern"
        if argv is None:
            return None, "the command line cannot be parsed"
        if not argv:
            return None, "the command is empty"
        candidates = [s for s in self.shapes if tuple(argv[: len(s.argv)]) == s.argv]
        if not candidates:
            return None, "the command is not on the allowlist"
        problems = [s.refusal(argv, self) for s in candidates]
        if None in problems:
            return argv, None
        # The most specific shape explains best (git log over git).
        best = max(range(len(candidates)), key=lambda n: len(candidates[n].argv))
        return None, problems[best]


def _names_a_path(word: str) -> bool:
    return "/" in word or word in (".", "..") or word.startswith("~")


class RunCommandTool:
    name = "run_command"
    acts_on_host = True  # makes its persona internal-only (agents.persona.HOST_TOOLS)
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

    def __init__(self, policy: CommandPolicy, persona: str = "") -> None:
        self.policy = policy
        self.persona = persona

    @classmethod
    def build(cls, persona: Persona, options: Mapping[str, Any]) -> RunCommandTool:
        policy = CommandPolicy.model_validate(dict(options))
        if policy.allow:
            log.warning("tool.command_allow_deprecated", persona=persona.name)
        return cls(policy, persona.name)

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        command = str(arguments["command"])
        persona = context.agent.persona.name
        argv, refused = self.policy.refusal(command)
        if context.agent.audit is None:
            refused = "there is no audit log to record the run"
        elif argv is not None and _RUNNING.get(persona, 0) >= self.policy.max_concurrent:
            refused = f"busy: {self.policy.max_concurrent} commands are running; try again shortly"
        if refused is not None:
            log.warning("tool.command_refused", persona=persona, reason=refused)
            shown = argv if argv is not None else _words(command)
            await self._audit(context, "tool.command.refused", shown, reason=refused)
            return ToolResult(content=f"Refused: {refused}.", is_error=True)
        assert argv is not None
        _RUNNING[persona] = _RUNNING.get(persona, 0) + 1
        try:
            if not await self._audit(context, "tool.command.run", argv):
                return ToolResult(content="Refused: the run could not be recorded.", is_error=True)
            log.info("tool.command_run", persona=persona, program=argv[0])
            started = time.perf_counter()
            result, status = await self.execute(argv)
            await self._audit(
                context,
                "tool.command.finished",
                argv,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000),
            )
            return result
        finally:
            _RUNNING[persona] -= 1

    async def _audit(
        self,
        context: ToolContext,
        action: str,
        argv: list[str],
        *,
        status: int | None = None,
        **detail: Any,
    ) -> bool:
        """Write one audit row; False if it could not be written (or there is no stream)."""
        return await audit_tool(context, action, self.name, status=status, argv=argv, **detail)

    async def execute(self, argv: list[str]) -> tuple[ToolResult, int | None]:
        """Run ``argv``; the result for the model and the exit status (None: did not finish)."""
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
            text = f"Could not start {argv[0]}: {exc.strerror}"
            return ToolResult(content=text, is_error=True), None
        try:
            async with asyncio.timeout(policy.timeout_seconds):
                output, _ = await process.communicate()
        except asyncio.CancelledError:
            process.kill()  # the turn was cancelled: the child must not outlive it
            raise
        except TimeoutError:
            process.kill()
            await process.wait()
            text = f"Killed after {policy.timeout_seconds:g} s without finishing."
            return ToolResult(content=text, is_error=True), None
        text = output.decode("utf-8", "replace")
        if len(text) > policy.max_output_chars:
            text = text[: policy.max_output_chars] + "\n[output cut]"
        result = ToolResult(
            content=f"exit status {process.returncode}\n{text}",
            is_error=process.returncode != 0,
        )
        return result, process.returncode


def _words(command: str) -> list[str]:
    """The command's words for the audit row when it does not parse (cut to a sane size)."""
    return command[:500].split()
