"""What a person does to a customer's conversation from the console, on the handoff state
the desks share (:mod:`gateway.handoff`): take over, reply, note, assign, release.

Guarantees:

- one handoff state: every action is a compare-and-set on the customer's conversation
  state (retried on conflict with its worker), writing the same ``facts["handoff"]`` a desk
  writes, holder included; a desk serving the tenant is told in the customer's thread;
- a reply is delivered exactly once: it goes on the customer's outbox under a deterministic
  idempotency key (``console:<reply id>``, the id fixed when the form was drawn), so a form
  sent twice, or an action retried after a store error, is noted and delivered once;
- whoever answers first holds the conversation; an operator who does not hold it cannot
  reply until it is assigned to them or taken over from its holder explicitly;
- every change bumps :meth:`Keyspace.console_activity` so live pages in every process see it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.conversations import read_index_entry
from gateway.errors import StoreError
from gateway.handoff import (
    CONSOLE_DESK,
    FACT,
    HandoffConfig,
    HandoffDesk,
    holder_of,
    new_holder,
)
from gateway.handoff_config import REPLY_CONTEXT
from gateway.models import (
    ConversationKey,
    OutboundMessage,
    PersonaPresentation,
    ReplyContext,
    new_id,
    stored_json,
    utcnow,
)
from gateway.state import ConversationState, HistoryEntry
from gateway.store import Commit, StateWrite

__all__ = ["ActionResult", "HandoffActions", "Note"]

_MAX_CONFLICTS = 8
_NOTES_KEPT = 200

Change = Callable[[ConversationState], "tuple[ConversationState | None, ActionResult]"]


@dataclass(frozen=True, slots=True)
class ActionResult:
    ok: bool
    message: str
    fact: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Note:
    by: str
    text: str
    at: str


def _default(field: str) -> Any:
    return HandoffConfig.model_fields[field].default


class HandoffActions:
    """The console's side of the handoff desk."""

    def __init__(self, desk: HandoffDesk) -> None:
        self.desk = desk
        self.store = desk.store
        self.keyspace = desk.keyspace

    # -- reading ---------------------------------------------------------------------------------
    async def notes(self, key: str) -> list[Note]:
        entries = await self.store.read_log(self._notes_key(key), count=_NOTES_KEPT)
        return [Note(**json.loads(e.payload)) for e in entries]

    def _notes_key(self, key: str) -> str:
        return self.keyspace.notes(key)

    # -- acting ----------------------------------------------------------------------------------
    async def take_over(
        self,
        customer: ConversationKey,
        operator: str,
        *,
        persona: PersonaPresentation,
        force: bool = False,
    ) -> ActionResult:
        """Hold the conversation (handing it off first if the bot has it)."""
        key = customer.key
        entry = await read_index_entry(self.store, self.keyspace, customer.tenant, key)
        desk = self.desk.desk_for(customer.tenant)
        thread = self.desk.thread_for(customer)

        def change(state: ConversationState) -> tuple[ConversationState | None, ActionResult]:
            fact = self.desk.in_force(state)
            holder = holder_of(fact)
            if holder is not None and holder["name"] == operator:
                return None, ActionResult(True, "you hold this conversation", fact)
            if holder is not None and not force:
                return None, ActionResult(False, f"held by {holder['name']}", fact)
            if fact is None:
                context = entry.reply_context if entry is not None else None
                fact = {
                    "since": utcnow().isoformat(),
                    "reason": f"taken over in the console by {operator}",
                    "thread": thread,
                    "desk": desk.operators.key if desk is not None else CONSOLE_DESK,
                    "customer": (entry.customer if entry else None) or customer.conversation_id,
                    "persona": persona.model_dump(mode="json"),
                    "reply_context": (context.model_dump(mode="json") if context else None),
                }
            fact = {**fact, "holder": new_holder(operator, "console")}
            return _with_fact(state, fact), ActionResult(True, "you hold this conversation", fact)

        result = await self._amend(key, change)
        if result.ok and desk is not None:
            await self.desk.store.put_record(
                self.desk.mapping_key(self.desk.operators_key(desk, thread)),
                customer.model_dump_json().encode(),
            )
            await self._tell_desk(
                customer,
                f"Handoff: {result.fact and result.fact.get('customer')} on "
                f"{customer.channel.value}. {operator} holds it now (console).",
                key=f"console:{new_id()}:take",
            )
        return result

    async def reply(
        self, customer: ConversationKey, operator: str, text: str, *, reply_id: str
    ) -> ActionResult:
        """Answer the customer as a person, on their own channel, exactly once."""
        key = customer.key
        message_id = f"console:{reply_id}"

        def change(state: ConversationState) -> tuple[ConversationState | None, ActionResult]:
            fact = self.desk.in_force(state)
            if fact is None:
                return None, ActionResult(False, "take the conversation over first")
            holder = holder_of(fact)
            if holder is not None and holder["name"] != operator:
                return None, ActionResult(False, f"held by {holder['name']}", fact)
            if any(h.message_id == message_id for h in state.history):
                return None, ActionResult(True, "sent", fact)  # noted already: deliver below
            fact = {**fact, "holder": holder or new_holder(operator, "console")}
            note = HistoryEntry(
                role="assistant", text=text, at=utcnow(), persona="operator", message_id=message_id
            )
            history = (*state.history, note)[-self.desk.history_limit :]
            return _with_fact(state, fact).model_copy(update={"history": history}), ActionResult(
                True, "sent", fact
            )

        result = await self._amend(key, change)
        if not result.ok or result.fact is None:
            return result
        desk = self.desk.desk_for(customer.tenant)
        display = desk.config.operator_display_name if desk else _default("operator_display_name")
        await self.desk.post(
            OutboundMessage(
                conversation=customer,
                persona=PersonaPresentation(
                    name="operator", display_name=display, signature=f"— {operator}"
                ),
                text=text,
                idempotency_key=message_id,
                reply_context=_reply_context(result.fact),
            )
        )
        await self._tell_desk(customer, f"{operator} (console): {text}", key=f"{message_id}:desk")
        return result

    async def release(self, customer: ConversationKey, operator: str) -> ActionResult:
        """Give the conversation back to the bot, whoever holds it."""
        key = customer.key

        def change(state: ConversationState) -> tuple[ConversationState | None, ActionResult]:
            fact = self.desk.in_force(state)
            if fact is None:
                return None, ActionResult(False, "the bot has this conversation already")
            facts = {k: v for k, v in state.facts.items() if k != FACT}
            return state.model_copy(update={"facts": facts}), ActionResult(True, "released", fact)

        result = await self._amend(key, change)
        if not result.ok or result.fact is None:
            return result
        desk = self.desk.desk_for(customer.tenant)
        notice = desk.config.released_notice if desk is not None else _default("released_notice")
        action = new_id()
        if notice and result.fact.get("persona"):
            await self.desk.post(
                OutboundMessage(
                    conversation=customer,
                    persona=PersonaPresentation.model_validate(result.fact["persona"]),
                    text=notice,
                    idempotency_key=f"console:{action}:released",
                    reply_context=_reply_context(result.fact),
                )
            )
        await self._tell_desk(
            customer,
            f"Released by {operator} (console): the assistant answers this customer again.",
            key=f"console:{action}:released-ops",
        )
        return result

    async def assign(self, customer: ConversationKey, operator: str, teammate: str) -> ActionResult:
        """Hand a handed-off conversation to a named teammate (they hold it now)."""
        key = customer.key

        def change(state: ConversationState) -> tuple[ConversationState | None, ActionResult]:
            fact = self.desk.in_force(state)
            if fact is None:
                return None, ActionResult(False, "take the conversation over first")
            fact = {**fact, "holder": {**new_holder(teammate, "console"), "by": operator}}
            return _with_fact(state, fact), ActionResult(True, f"assigned to {teammate}", fact)

        result = await self._amend(key, change)
        if result.ok:
            await self._tell_desk(
                customer,
                f"{operator} assigned this conversation to {teammate} (console).",
                key=f"console:{new_id()}:assign",
            )
        return result

    async def add_note(self, key: str, operator: str, text: str) -> ActionResult:
        """A private note: operators see it, the customer never does."""
        note = {"by": operator, "text": text, "at": utcnow().isoformat()}
        await self.store.append_log(
            self._notes_key(key), json.dumps(note).encode(), cap=_NOTES_KEPT
        )
        await self.desk.touched()
        return ActionResult(True, "note added")

    # -- plumbing --------------------------------------------------------------------------------
    async def _amend(self, key: str, change: Change) -> ActionResult:
        state_key = self.keyspace.state(key)
        for _ in range(_MAX_CONFLICTS):
            current = await self.store.get_state(state_key)
            if current is None:
                return ActionResult(False, "no such conversation")
            state = ConversationState.model_validate_json(current.value)
            new_state, result = change(state)
            if new_state is None:
                return result
            new_state = new_state.model_copy(update={"updated_at": utcnow()})
            version = await self.store.commit(
                Commit(
                    state=StateWrite(
                        key=state_key,
                        value=stored_json(new_state),
                        expected_version=current.version,
                    )
                )
            )
            if version is not None:
                await self.desk.touched()
                return result
        raise StoreError("the conversation kept changing; try again")

    async def _tell_desk(self, customer: ConversationKey, text: str, *, key: str) -> None:
        """Post to the customer's thread at the desk serving their tenant, if there is one."""
        desk = self.desk.desk_for(customer.tenant)
        if desk is None:
            return
        await self.desk.post(
            OutboundMessage(
                conversation=self.desk.operators_key(desk, self.desk.thread_for(customer)),
                persona=PersonaPresentation(name="handoff", display_name="FlowBiz console"),
                text=text,
                idempotency_key=key,
                reply_context=desk.reply_context,
            )
        )


def _with_fact(state: ConversationState, fact: dict[str, Any]) -> ConversationState:
    return state.model_copy(update={"facts": {**state.facts, FACT: fact}})


def _reply_context(fact: dict[str, Any]) -> ReplyContext:
    raw = fact.get("reply_context")
    return REPLY_CONTEXT.validate_python(raw if raw is not None else {"kind": "http"})
