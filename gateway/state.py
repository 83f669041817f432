"""Per-conversation state: history, the sticky persona and channel facts.

Stored as JSON under ``Keyspace.state(conversation)`` and updated with optimistic
concurrency (``Store.commit`` with the version it was read at), so two processes never
overwrite each other's turn.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.models import ConversationKey, utcnow

__all__ = ["ConversationState", "HistoryEntry"]


class HistoryEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["user", "assistant"]
    text: str
    at: datetime
    persona: str | None = None
    message_id: str | None = None


class ConversationState(BaseModel):
    model_config = ConfigDict(frozen=True)

    conversation: ConversationKey
    persona: str | None = None
    persona_until: datetime | None = None
    history: tuple[HistoryEntry, ...] = ()
    facts: dict[str, Any] = Field(default_factory=dict)  # channel-specific, e.g. window start
    last_inbound_at: datetime | None = None
    handled: tuple[str, ...] = ()  # recent inbound ids, a second guard against double turns
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def sticky_persona(self, now: datetime) -> str | None:
        if self.persona is not None and self.persona_until is not None and self.persona_until > now:
            return self.persona
        return None

    def after_turn(
        self,
        *,
        inbound_id: str,
        inbound_text: str,
        received_at: datetime,
        persona: str,
        sticky_seconds: float,
        replies: list[str],
        history_limit: int,
        now: datetime,
    ) -> ConversationState:
        entries = [
            *self.history,
            HistoryEntry(role="user", text=inbound_text, at=received_at, message_id=inbound_id),
            *(HistoryEntry(role="assistant", text=t, at=now, persona=persona) for t in replies),
        ]
        return self.model_copy(
            update={
                "persona": persona,
                "persona_until": now + timedelta(seconds=sticky_seconds),
                "history": tuple(entries[-history_limit:]) if history_limit else (),
                "last_inbound_at": received_at,
                "handled": (*self.handled, inbound_id)[-32:],
                "updated_at": now,
            }
        )
