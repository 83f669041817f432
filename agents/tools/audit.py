"""One audit row about a tool of an agent's turn: who (the persona), where (the tenant, the
conversation and the sender as digests, never in clear), what (``action``, the tool's name)
and any detail the caller adds.

:func:`audit_tool` reports whether the row was written: False when the turn has no audit
stream or the store refused the write, so a caller that must not act unrecorded can refuse.
"""

from __future__ import annotations

from typing import Any

from agents.tools.base import ToolContext
from gateway.audit import AuditEvent, digest
from gateway.errors import StoreError
from gateway.observability import get_logger

__all__ = ["audit_tool"]

log = get_logger(__name__)


async def audit_tool(
    context: ToolContext, action: str, tool: str, *, status: int | None = None, **detail: Any
) -> bool:
    audit = context.agent.audit
    if audit is None:
        return False
    message = context.agent.message
    conv = message.conversation
    persona = context.agent.persona
    event = AuditEvent(
        actor=f"persona:{persona.name}",
        actor_name=persona.display_name,
        role=f"tool:{tool}",
        action=action,
        tenant=conv.tenant,
        # The conversation key and sender id can be phone numbers or addresses.
        target={"conversation": digest(conv.key)},
        status=status,
        detail={
            "tool": tool,
            "sender": digest(message.sender.id),
            "channel": conv.channel.value,
            "trace_id": message.trace_id,
            **detail,
        },
    )
    try:
        await audit.write(event)
    except StoreError as exc:
        log.error("tool.audit_failed", action=action, tool=tool, error=str(exc))
        return False
    return True
