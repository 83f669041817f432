"""Human handoff: a conversation handed to people, across channels.

A handoff starts when an agent's reply asks for one (``AgentReply.handoff``: the LLM agent's
``handoff`` tool, a webhook bot's ``"handoff": "reason"``) or when the customer writes the
configured command (``/human``). From then on:

- the bot stops answering that conversation: the worker runs no agent for it;
- the conversation appears in the **operators' conversation** as a thread of its own: an
  announcement (who, where, why, the recent history), then every customer message;
- whatever operators write in that thread goes back to the customer, on the customer's own
  channel, under the operator presentation (``operator_display_name``);
- an operator writing ``/release`` in the thread hands the conversation back to the bot.

Configuration (top level of the gateway file)::

    handoff:
      operators: {tenant: acme-support, channel: http, conversation_id: operators}
      command: /human
      release_command: /release

Where things are kept. The customer's conversation state holds the fact
``facts["handoff"] = {since, reason, thread, customer, persona, reply_context}`` (the reply
context is refreshed by each customer message, so a reply to a WhatsApp or email customer
is addressed as the platform needs). The operators' thread id is derived from the customer's
conversation key (``handoff-<hash>``), and a record under the operators' thread key maps it
back to the customer's conversation.

The operators' channel. Any connector can carry the operators' conversation if it
round-trips :attr:`ConversationKey.thread`: a message it was asked to post with
``thread=X`` and that people answer in place must come back as an ``InboundMessage`` with
``thread=X``. The HTTP API channel does so as is (operators post with ``"thread": X``; the
callback carries ``thread``). A platform that names threads itself (Slack's ``thread_ts``)
keeps a small map from our thread id to its own in its channel records — set when the
announcement is posted, read when a reply arrives — and ``operators.reply_context`` gives
the fields its sends need (e.g. ``{kind: slack, team_id: T…, channel_id: C…}``).

Every store write that crosses conversations (the announcement and the relays appended to
another conversation's outbox, the operators' notes on the customer's state) is its own
atomic step with a deterministic idempotency key, so a redelivered message never produces
a second delivery, and no commit spans two partitions (one Redis Cluster slot each).
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from agents.base import AgentReply, ReplyPart
from gateway.errors import StoreError
from gateway.ingest import INBOX_GROUP
from gateway.models import (
    Channel,
    ConversationKey,
    EventKind,
    HttpReplyContext,
    InboundMessage,
    OutboundMessage,
    PersonaPresentation,
    ReplyContext,
    stored_json,
    utcnow,
)
from gateway.observability import get_logger
from gateway.state import ConversationState, HistoryEntry
from gateway.store import Commit, Keyspace, StateWrite, Store, StreamEntry

__all__ = ["HandoffConfig", "HandoffDesk", "OperatorsTarget", "handoff_fact"]

log = get_logger(__name__)

FACT = "handoff"
_REPLY_CONTEXT: TypeAdapter[ReplyContext] = TypeAdapter(ReplyContext)
_MAX_CONFLICTS = 8
_TEXT_KINDS = frozenset({EventKind.MESSAGE, EventKind.COMMAND, EventKind.ACTION})


class OperatorsTarget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    channel: Channel
    conversation_id: str
    # What the operators' connector needs to post there (HTTP: nothing; Slack: team/channel).
    reply_context: dict[str, Any] = Field(default_factory=lambda: {"kind": "http"})


class HandoffConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    operators: OperatorsTarget
    command: str | None = "/human"  # a customer writing exactly this asks for a person
    release_command: str = "/release"
    operator_display_name: str = "Support team"
    customer_notice: str = (
        "I have asked a person from our team to take over. They will answer you here."
    )
    released_notice: str | None = "You are back with the assistant. How else can I help?"
    history_in_announcement: int = Field(default=6, ge=0)


def handoff_fact(state: ConversationState) -> dict[str, Any] | None:
    """The handoff in force on this conversation, if any."""
    fact = state.facts.get(FACT)
    return fact if isinstance(fact, dict) else None


class HandoffDesk:
    """What the worker asks about handoffs; stateless apart from the store."""

    def __init__(
        self, *, config: HandoffConfig | None, store: Store, keyspace: Keyspace, history_limit: int
    ) -> None:
        self.config = config
        self.store = store
        self.keyspace = keyspace
        self.history_limit = history_limit
        self._operators_reply_context = (
            _REPLY_CONTEXT.validate_python(config.operators.reply_context)
            if config is not None
            else HttpReplyContext()
        )

    @property
    def enabled(self) -> bool:
        return self.config is not None

    # -- questions the worker asks ---------------------------------------------------------------
    def is_operators(self, conv: ConversationKey) -> bool:
        """True for the operators' conversation (any thread): no bot ever answers there."""
        if self.config is None:
            return False
        ops = self.config.operators
        return (
            conv.tenant == ops.tenant
            and conv.channel == ops.channel
            and conv.conversation_id == ops.conversation_id
        )

    def requested(self, message: InboundMessage) -> bool:
        """The customer wrote the handoff command."""
        command = self.config.command if self.config is not None else None
        return command is not None and message.text.strip().lower() == command.lower()

    def customer_reply(self, reply: AgentReply) -> AgentReply:
        """A handoff reply with no words of its own gets the configured notice."""
        if self.config is None or reply.handoff is None or reply.parts:
            return reply
        return AgentReply(
            parts=(ReplyPart(text=self.config.customer_notice),),
            switch_persona=reply.switch_persona,
            handoff=reply.handoff,
        )

    @staticmethod
    def thread_for(customer: ConversationKey) -> str:
        return "handoff-" + hashlib.sha256(customer.key.encode()).hexdigest()[:16]

    def _operators_key(self, thread: str) -> ConversationKey:
        assert self.config is not None  # only called while enabled
        ops = self.config.operators
        return ConversationKey(
            tenant=ops.tenant,
            channel=ops.channel,
            conversation_id=ops.conversation_id,
            thread=thread,
        )

    def _mapping_key(self, operators: ConversationKey) -> str:
        return self.keyspace.conversation_record(operators.key, "handoff-customer")

    async def _post(self, message: OutboundMessage) -> None:
        """Append to the outbox of the message's own conversation (its partition)."""
        partition = self.keyspace.partition(message.conversation.key)
        await self.store.append(self.keyspace.outbox(partition), message.model_dump_json().encode())

    def _to_operators(
        self, thread: str, text: str, *, key: str, who: PersonaPresentation, source: InboundMessage
    ) -> OutboundMessage:
        return OutboundMessage(
            conversation=self._operators_key(thread),
            persona=who,
            text=text,
            attachments=source.attachments,
            idempotency_key=key,
            reply_context=self._operators_reply_context,
            trace_id=source.trace_id,
        )

    # -- the customer's side -----------------------------------------------------------------------
    async def begin(
        self,
        *,
        message: InboundMessage,
        state: ConversationState,
        persona: PersonaPresentation,
        reason: str,
    ) -> dict[str, Any]:
        """Announce the conversation to the operators; return the fact to keep in its state."""
        assert self.config is not None  # the worker checks ``enabled`` first
        customer = message.conversation
        thread = self.thread_for(customer)
        name = message.sender.display_name or message.sender.id
        await self.store.put_record(
            self._mapping_key(self._operators_key(thread)), customer.model_dump_json().encode()
        )
        recent = (
            state.history[-self.config.history_in_announcement :]
            if self.config.history_in_announcement
            else ()
        )
        lines = [
            f"Handoff: {name} on {customer.channel.value} ({customer.key})",
            f"Reason: {reason}",
        ]
        if recent:
            lines.append("Recent:")
            lines += [
                f"  {'customer' if h.role == 'user' else h.persona or 'assistant'}: {h.text}"
                for h in recent
            ]
        lines.append(
            f"Reply in this thread to answer the customer; write {self.config.release_command} "
            "to hand the conversation back to the assistant."
        )
        await self._post(
            self._to_operators(
                thread,
                "\n".join(lines),
                key=f"{message.id}:handoff",
                who=persona,
                source=message.model_copy(update={"attachments": ()}),
            )
        )
        log.info("handoff.started", persona=persona.name, thread=thread)
        return {
            "since": utcnow().isoformat(),
            "reason": reason[:500],
            "thread": thread,
            "customer": name,
            "persona": persona.model_dump(mode="json"),
            "reply_context": message.reply_context.model_dump(mode="json"),
        }

    async def relay_customer(self, message: InboundMessage, fact: dict[str, Any]) -> None:
        """A customer message during a handoff goes to the operators' thread."""
        if message.kind not in _TEXT_KINDS:
            return
        name = str(fact.get("customer") or message.sender.id)
        await self._post(
            self._to_operators(
                str(fact["thread"]),
                message.text,
                key=f"{message.id}:relay",
                who=PersonaPresentation(name="customer", display_name=name),
                source=message,
            )
        )

    @staticmethod
    def refreshed(fact: dict[str, Any], message: InboundMessage) -> dict[str, Any]:
        """The fact with the customer's latest reply context (where replies must go)."""
        return {**fact, "reply_context": message.reply_context.model_dump(mode="json")}

    # -- the operators' side -----------------------------------------------------------------------
    async def operator_turn(
        self, partition: int, entry: StreamEntry, message: InboundMessage
    ) -> str:
        """Handle one message from the operators' conversation; acknowledges the entry."""
        outcome = "ignored"
        conv = message.conversation
        if conv.thread is not None and not message.sender.is_bot and message.kind in _TEXT_KINDS:
            raw = await self.store.get_record(self._mapping_key(conv))
            if raw is not None:
                customer = ConversationKey.model_validate_json(raw)
                outcome = await self._from_operator(message, customer)
        await self.store.ack(self.keyspace.inbox(partition), INBOX_GROUP, [entry.id])
        log.info("handoff.operator_message", outcome=outcome)
        return outcome

    async def _from_operator(self, message: InboundMessage, customer: ConversationKey) -> str:
        assert self.config is not None  # operators' messages exist only while enabled
        release = message.text.strip().lower() == self.config.release_command.lower()
        fact = await self._note_on_customer(message, customer, release=release)
        thread = message.conversation.thread or ""
        desk = PersonaPresentation(name="handoff", display_name="FlowBiz handoff")
        if fact is None:
            await self._post(
                self._to_operators(
                    thread,
                    "This conversation is not handed off (any more); nothing was sent.",
                    key=f"{message.id}:inactive",
                    who=desk,
                    source=message.model_copy(update={"attachments": ()}),
                )
            )
            return "inactive"
        reply_context = _REPLY_CONTEXT.validate_python(fact["reply_context"])
        if release:
            if self.config.released_notice:
                await self._post(
                    OutboundMessage(
                        conversation=customer,
                        persona=PersonaPresentation.model_validate(fact["persona"]),
                        text=self.config.released_notice,
                        idempotency_key=f"{message.id}:released",
                        reply_context=reply_context,
                        trace_id=message.trace_id,
                    )
                )
            await self._post(
                self._to_operators(
                    thread,
                    "Released: the assistant answers this customer again.",
                    key=f"{message.id}:released-ops",
                    who=desk,
                    source=message.model_copy(update={"attachments": ()}),
                )
            )
            log.info("handoff.released")
            return "released"
        name = message.sender.display_name
        await self._post(
            OutboundMessage(
                conversation=customer,
                persona=PersonaPresentation(
                    name="operator",
                    display_name=self.config.operator_display_name,
                    signature=f"— {name}" if name else "",
                ),
                text=message.text,
                attachments=message.attachments,
                idempotency_key=f"{message.id}:operator",
                reply_context=reply_context,
                trace_id=message.trace_id,
            )
        )
        return "relayed"

    async def _note_on_customer(
        self, message: InboundMessage, customer: ConversationKey, *, release: bool
    ) -> dict[str, Any] | None:
        """Record the operator's message in the customer's history, or end the handoff.

        Returns the handoff fact as it was, or None when the conversation is not handed off.
        A compare-and-set on the customer's state, retried on conflict with its own worker.
        """
        key = self.keyspace.state(customer.key)
        for _ in range(_MAX_CONFLICTS):
            current = await self.store.get_state(key)
            if current is None:
                return None
            state = ConversationState.model_validate_json(current.value)
            fact = handoff_fact(state)
            if fact is None:
                return None
            if release:
                facts = {k: v for k, v in state.facts.items() if k != FACT}
                new_state = state.model_copy(update={"facts": facts, "updated_at": utcnow()})
            elif any(h.message_id == message.id for h in state.history):
                return fact  # a redelivery: noted already
            else:
                entry = HistoryEntry(
                    role="assistant",
                    text=message.text,
                    at=message.received_at,
                    persona="operator",
                    message_id=message.id,
                )
                history = (
                    (*state.history, entry)[-self.history_limit :] if self.history_limit else ()
                )
                new_state = state.model_copy(update={"history": history, "updated_at": utcnow()})
            version = await self.store.commit(
                Commit(
                    state=StateWrite(
                        key=key,
                        value=stored_json(new_state),
                        expected_version=current.version,
                    )
                )
            )
            if version is not None:
                return fact
        raise StoreError("the customer's state kept changing; the operator message will be retried")
