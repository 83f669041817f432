"""Scripted "models" for the OpenAI emulator, so the LLM examples run offline.

Each responder looks at the chat-completions request the agent sent and answers as a
well-behaved model would: call the tool the persona offers, then answer from its result.
They stand in for a real model in ``flowbiz demo`` and in the examples' tests; with a real
endpoint configured the personas work unchanged.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agents.emulators.openai import ScriptedReply

__all__ = ["docs_responder", "oncall_responder"]


def _offered(request: dict[str, Any]) -> set[str]:
    return {t["function"]["name"] for t in request.get("tools", [])}


def _last(request: dict[str, Any]) -> dict[str, Any]:
    last: dict[str, Any] = request["messages"][-1]
    return last


def _tool_text(message: dict[str, Any]) -> tuple[str, bool]:
    content = str(message.get("content") or "")
    try:
        decoded = json.loads(content)
    except json.JSONDecodeError:
        return content, False
    if isinstance(decoded, dict) and "error" in decoded:
        return str(decoded["error"]), True
    return content, False


def docs_responder(request: dict[str, Any]) -> ScriptedReply:
    last = _last(request)
    if last["role"] == "tool":
        content, failed = _tool_text(last)
        if failed or content.startswith("No passage"):
            return ScriptedReply.text(
                "I could not find that in the documentation. Write /human for a person."
            )
        header, _, body = content.partition("\n")
        source = header.strip("[]").split(" — ")[0]
        first = body.split(". ")[0].rstrip(".")
        return ScriptedReply.text(f"{first}. [{source}]")
    if "search_docs" in _offered(request):
        return ScriptedReply.call("search_docs", {"query": str(last["content"])})
    return ScriptedReply.text("I have no documentation to search.")


_DIAGNOSTICS = (
    (r"\b(load|uptime)\b", "uptime"),
    (r"\b(disk|space)\b", "df -h"),
    (r"\b(memory|ram)\b", "free -m"),
)


def oncall_responder(request: dict[str, Any]) -> ScriptedReply:
    last = _last(request)
    if last["role"] == "tool":
        content, failed = _tool_text(last)
        if failed:
            return ScriptedReply.text(f"I could not run that: {content}")
        return ScriptedReply.text(f"Here is what I saw:\n{content.strip()}")
    text = str(last["content"])
    offered = _offered(request)
    if re.search(r"\b(page|escalate|human)\b", text, re.IGNORECASE) and "handoff" in offered:
        return ScriptedReply.call("handoff", {"reason": "on-call asked to page a person"})
    explicit = re.match(r"(?i)^\s*run\s+(.+)$", text)
    if explicit and "run_command" in offered:
        return ScriptedReply.call("run_command", {"command": explicit.group(1)})
    for pattern, command in _DIAGNOSTICS:
        if re.search(pattern, text, re.IGNORECASE) and "run_command" in offered:
            return ScriptedReply.call("run_command", {"command": command})
    return ScriptedReply.text("I can check load, disk or memory, or page a person.")
