"""The safety pre-check: runs on every message before any agent sees it.

Patterns find what people should not paste into a chat: payment card numbers (13 to 19 digits,
spaces or dashes allowed, kept only when the Luhn check passes, so order numbers are not
caught) and secrets (cloud and API keys, tokens, private keys, ``password=…``). Each finding
either **blocks** the message — no agent runs, the customer gets the persona's ``refusal``
text, the history keeps a redacted copy, nothing is relayed to operators — or **flags** it:
the agent answers as usual and an audit event records the finding. Configuration::

    safety:
      card_numbers: block        # block | flag | off
      secrets: block
      rules:                     # extra patterns of your own
        - {name: iban, pattern: "\\bDE\\d{20}\\b", action: flag}

Every finding is recorded as an audit event (never with the message text): a structured log
line ``audit.safety_block`` / ``audit.safety_flag`` and an event ``safety.block`` /
``safety.flag`` in the audit log (:mod:`gateway.audit`, read through the admin API).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.audit import AuditEvent, AuditLog, digest
from gateway.models import InboundMessage
from gateway.observability import get_logger

__all__ = ["SafetyCheck", "SafetyConfig", "SafetyRule", "Verdict", "audit_verdict", "luhn_valid"]

log = get_logger(__name__)

Action = Literal["block", "flag"]

_CARD_CANDIDATE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SECRET_PATTERNS: tuple[tuple[str, str], ...] = (
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("openai_key", r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    ("stripe_key", r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("private_key", r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    (
        "credential_assignment",
        r"(?i)\b(?:password|passwd|pwd|api[_-]?key|secret|access[_-]?token)\s*[:=]\s*\S{6,}",
    ),
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for n, char in enumerate(reversed(digits)):
        value = int(char)
        if n % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


class SafetyRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        pattern=r"^[a-z0-9_]{1,40}$", description="Names the finding in the audit log."
    )
    pattern: str = Field(description="A Python regular expression searched in the text.")
    action: Action = Field(default="block", description="`block` or `flag` what matches.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        return value


class SafetyConfig(BaseModel):
    """Blocking a message: no agent runs and the customer gets the persona's ``refusal``;
    flagging it: the agent answers and an audit event records the finding."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    card_numbers: Action | Literal["off"] = Field(
        default="block",
        description="Payment card numbers (13 to 19 digits passing the Luhn check): `block`, "
        "`flag` or `off`.",
    )
    secrets: Action | Literal["off"] = Field(
        default="block",
        description="Pasted credentials (cloud and API keys, tokens, private keys, "
        "`password=…`): `block`, `flag` or `off`.",
    )
    rules: tuple[SafetyRule, ...] = Field(default=(), description="Patterns of your own.")


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Literal["allow", "flag", "block"]
    findings: tuple[str, ...] = ()  # names of what matched, e.g. ("card_number",)
    redacted: str = ""  # the text with every finding replaced by [redacted:<name>]

    @property
    def blocked(self) -> bool:
        return self.action == "block"


class SafetyCheck:
    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        patterns: list[tuple[str, re.Pattern[str], Action]] = []
        if config.secrets != "off":
            patterns += [(name, re.compile(p), config.secrets) for name, p in _SECRET_PATTERNS]
        patterns += [(r.name, re.compile(r.pattern), r.action) for r in config.rules]
        self._patterns = patterns

    def check(self, text: str) -> Verdict:
        findings: dict[str, Action] = {}
        spans: list[tuple[int, int, str]] = []
        if self.config.card_numbers != "off":
            for match in _CARD_CANDIDATE.finditer(text):
                digits = re.sub(r"\D", "", match.group())
                if 13 <= len(digits) <= 19 and luhn_valid(digits):
                    findings["card_number"] = self.config.card_numbers
                    spans.append((match.start(), match.end(), "card_number"))
        for name, pattern, rule_action in self._patterns:
            for match in pattern.finditer(text):
                if findings.get(name) != "block":
                    findings[name] = rule_action
                spans.append((match.start(), match.end(), name))
        if not findings:
            return Verdict("allow", redacted=text)
        overall: Action = "block" if "block" in findings.values() else "flag"
        return Verdict(overall, tuple(sorted(findings)), _redact(text, spans))


def _redact(text: str, spans: list[tuple[int, int, str]]) -> str:
    out: list[str] = []
    cursor = 0
    for start, end, name in sorted(spans):
        if start < cursor:  # overlaps a span already redacted
            continue
        out += [text[cursor:start], f"[redacted:{name}]"]
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


async def audit_verdict(audit: AuditLog, message: InboundMessage, verdict: Verdict) -> None:
    """Record a block or flag: a structured log line and an event in the audit log.

    Neither holds the message text; the conversation and sender appear only as digests.
    """
    conv = message.conversation
    detail = {"channel": conv.channel.value, "findings": list(verdict.findings)}
    log.warning(f"audit.safety_{verdict.action}", message_id=message.id, **detail)
    await audit.write(
        AuditEvent(
            actor="gateway",
            action=f"safety.{verdict.action}",
            tenant=conv.tenant,
            target={"conversation": digest(conv.key), "message": message.id},
            detail={**detail, "sender": digest(message.sender.id)},
        )
    )
