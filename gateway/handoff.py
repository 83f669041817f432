"""Human handoff: a conversation handed to people, across channels.

A handoff starts when an agent's reply asks for one (``AgentReply.handoff``: the LLM agent's
``handoff`` tool, a webhook bot's ``"handoff": "reason"``) or when the customer writes the
configured command (``/human``). From then on:

- the bot stops answering that conversation: the worker runs no agent for it;
- the conversation appears in the **operators' conversation** as a thread of its own: an
  announcement (who, where, why, the recent history), then every customer message;
- whatever operators write in that thread goes back to the customer, on the customer's own
  channel, under the operator presentation (``operator_display_name``);
- an operator writing the release command in the thread (:mod:`gateway.handoff_release`)
  hands the conversation back to the bot.

Desks and tenants. A **desk** is one operators' conversation with its settings, and it
serves a set of tenants: only customers of those tenants are announced there, and an
operator's message is relayed only to a customer of a tenant the desk serves (anything else
is refused, logged as ``handoff.cross_tenant_refused`` and counted). A desk is declared on a
tenant (it serves that tenant; ``operators.tenant`` defaults to it) or at the top level (it
serves ``tenants:``, by default only the operators' own tenant)::

    tenants:
      - id: acme
        handoff:
          operators: {channel: http, conversation_id: operators}
    handoff:                        # one desk for several tenants, listed explicitly
      operators: {tenant: support, channel: http, conversation_id: operators}
      tenants: [beta, gamma]

A tenant is served by at most one desk, and an operators' conversation is one desk's.

The holder. A handed-off conversation is *waiting for a person* until someone answers it;
whoever answers first **holds** it: an operator replying from the console, or the person whose
message in the desk's thread is relayed first (a Slack user, an HTTP operator). The holder is
kept in the fact (``holder = {name, via, since}``) so every desk shows the same person; other
operators at the desk may still write (relayed as before) without taking it, and the
console's *assign* hands it to a named teammate. The release command in the thread, or the
console's button, ends the handoff whoever holds it. A conversation taken over in the console
for a tenant that no desk serves is kept under the desk name :data:`CONSOLE_DESK`.

Where things are kept. The customer's conversation state holds the fact
``facts["handoff"] = {since, reason, thread, desk, customer, persona, reply_context, holder}``
(the reply
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

from collections.abc import Iterable, Mapping
from typing import Any

from agents.base import AgentReply, ReplyPart
from gateway.errors import StoreError
from gateway.handoff_config import (
    CONSOLE_DESK,
    Desk,
    HandoffConfig,
    OperatorsTarget,
    plan_desks,
    thread_name,
)
from gateway.handoff_config import REPLY_CONTEXT as _REPLY_CONTEXT
from gateway.handoff_release import instructions, is_release
from gateway.ingest import INBOX_GROUP
from gateway.models import (
    Channel,
    ConversationKey,
    EventKind,
    InboundMessage,
    OutboundMessage,
    PersonaPresentation,
    stored_json,
    utcnow,
)
from gateway.observability import get_logger
from gateway.state import ConversationState, HistoryEntry
from gateway.store import Commit, Keyspace, StateWrite, Store, StreamEntry

__all__ = [
    "CONSOLE_DESK",
    "Desk",
    "HandoffConfig",
    "HandoffDesk",
    "OperatorsTarget",
    "handoff_fact",
    "handoff_status",
    "holder_of",
    "plan_desks",
]

log = get_logger(__name__)

FACT = "handoff"
_MAX_CONFLICTS = 8
_TEXT_KINDS = frozenset({EventKind.MESSAGE, EventKind.COMMAND, EventKind.ACTION})


def handoff_fact(state: ConversationState) -> dict[str, Any] | None:
    """The handoff in force on this conversation, if any."""
    fact = state.facts.get(FACT)
    return fact if isinstance(fact, dict) else None


def holder_of(fact: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Who holds a handed-off conversation (``{name, via, since}``), or None while it waits."""
    holder = None if fact is None else fact.get("holder")
    return holder if isinstance(holder, dict) and holder.get("name") else None


def handoff_status(state: ConversationState) -> str:
    """``bot``, ``waiting`` (for a person), ``person`` (held by one) or ``closed`` (the
    customer left: unfollowed, or the bot was removed from the chat)."""
    fact = handoff_fact(state)
    if fact is not None:
        return "person" if holder_of(fact) is not None else "waiting"
    return "closed" if "left" in state.facts else "bot"


def new_holder(name: str, via: str) -> dict[str, Any]:
    return {"name": name[:100], "via": via, "since": utcnow().isoformat()}


class HandoffDesk:
    """What the worker asks about handoffs, for every desk; stateless apart from the store."""

    def __init__(
        self, *, desks: Iterable[Desk], store: Store, keyspace: Keyspace, history_limit: int
    ) -> None:
        self.desks = tuple(desks)
        self.store = store
        self.keyspace = keyspace
        self.history_limit = history_limit
        self._by_tenant: Mapping[str, Desk] = {t: d for d in self.desks for t in d.serves}
        self._by_operators: Mapping[tuple[str, Channel, str], Desk] = {
            (d.operators.tenant, d.operators.channel, d.operators.conversation_id): d
            for d in self.desks
        }

    def desk_for(self, tenant: str) -> Desk | None:
        """The desk that serves this tenant's customers, if any."""
        return self._by_tenant.get(tenant)

    def serves(self, tenant: str) -> bool:
        return tenant in self._by_tenant

    # -- questions the worker asks ---------------------------------------------------------------
    def _operators_desk(self, conv: ConversationKey) -> Desk | None:
        return self._by_operators.get((conv.tenant, conv.channel, conv.conversation_id))

    def is_operators(self, conv: ConversationKey) -> bool:
        """True for an operators' conversation (any thread): no bot ever answers there."""
        return self._operators_desk(conv) is not None

    def requested(self, message: InboundMessage) -> bool:
        """The customer wrote the handoff command of the desk serving their tenant."""
        desk = self.desk_for(message.conversation.tenant)
        command = desk.config.command if desk is not None else None
        return command is not None and message.text.strip().lower() == command.lower()

    def customer_reply(self, reply: AgentReply, tenant: str) -> AgentReply:
        """A handoff reply with no words of its own gets the configured notice."""
        desk = self.desk_for(tenant)
        if desk is None or reply.handoff is None or reply.parts:
            return reply
        return AgentReply(
            parts=(ReplyPart(text=desk.config.customer_notice),),
            switch_persona=reply.switch_persona,
            handoff=reply.handoff,
        )

    def in_force(self, state: ConversationState) -> dict[str, Any] | None:
        """The handoff fact, while the desk that took it still serves the customer's tenant.

        A desk removed or changed in the configuration ends its handoffs: the bot answers
        again rather than leaving the customer talking to nobody.
        """
        fact = handoff_fact(state)
        if fact is None:
            return None
        taken_by = fact.get("desk")
        if taken_by == CONSOLE_DESK:
            return fact  # taken over in the console; no desk involved
        desk = self.desk_for(state.conversation.tenant)
        if desk is None:
            return None
        return fact if taken_by is None or taken_by == desk.operators.key else None

    @staticmethod
    def thread_for(customer: ConversationKey) -> str:
        return thread_name(customer.key)

    @staticmethod
    def operators_key(desk: Desk, thread: str) -> ConversationKey:
        return desk.operators.model_copy(update={"thread": thread})

    def mapping_key(self, operators: ConversationKey) -> str:
        return self.keyspace.handoff_customer(operators.key)

    async def post(self, message: OutboundMessage) -> None:
        """Append to the outbox of the message's own conversation (its partition)."""
        partition = self.keyspace.partition(message.conversation.key)
        await self.store.append(self.keyspace.outbox(partition), message.model_dump_json().encode())

    def to_operators(
        self,
        desk: Desk,
        thread: str,
        text: str,
        *,
        key: str,
        who: PersonaPresentation,
        source: InboundMessage,
    ) -> OutboundMessage:
        return OutboundMessage(
            conversation=self.operators_key(desk, thread),
            persona=who,
            text=text,
            attachments=source.attachments,
            idempotency_key=key,
            reply_context=desk.reply_context,
            trace_id=source.trace_id,
        )

    # -- the customer's side -----------------------------------------------------------------------
    def begin(
        self,
        *,
        message: InboundMessage,
        state: ConversationState,
        persona: PersonaPresentation,
        reason: str,
    ) -> dict[str, Any]:
        """The fact to keep in the state of the customer whose turn hands them off (the
        worker asks only for a tenant a desk serves). Writes nothing: see :meth:`announce`."""
        desk = self.desk_for(message.conversation.tenant)
        assert desk is not None  # the worker checks ``serves`` first
        return {
            "since": utcnow().isoformat(),
            "reason": reason[:500],
            "thread": self.thread_for(message.conversation),
            "desk": desk.operators.key,
            "customer": message.sender.display_name or message.sender.id,
            "persona": persona.model_dump(mode="json"),
            "reply_context": message.reply_context.model_dump(mode="json"),
            "opened_by": message.id,  # the message whose turn announces it
        }

    def opened_by(self, state: ConversationState, message: InboundMessage) -> bool:
        """True when the handoff in force was started by ``message``'s turn."""
        fact = self.in_force(state)
        return fact is not None and fact.get("opened_by") == message.id

    async def announce(self, message: InboundMessage, state: ConversationState) -> bool:
        """Announce at the desk the handoff ``message``'s committed turn started (else False).

        After the commit, never before: an operator answering the announcement at once must
        find the customer's state handed off, or the answer is refused. Never lost: the worker
        acknowledges that turn's inbox entry only after this returns; a redelivery (already
        handled) announces again, once (key ``<message id>:handoff``). Holding operators'
        messages until the customer's commit lands instead would stall the desk's partition
        and could not tell "not yet" from "not any more". No commit spans two partitions.
        """
        fact = handoff_fact(state)
        desk = self.desk_for(message.conversation.tenant)
        if fact is None or desk is None or not self.opened_by(state, message):
            return False
        thread, customer = str(fact["thread"]), message.conversation
        mapping = self.mapping_key(self.operators_key(desk, thread))
        await self.store.put_record(mapping, customer.model_dump_json().encode())
        recent = state.history[-count:] if (count := desk.config.history_in_announcement) else ()
        lines = [f"Handoff: {fact['customer']} on {customer.channel.value} ({customer.key})"]
        lines += [f"Reason: {fact['reason']}", *(["Recent:"] if recent else [])]
        lines += [
            f"  {'customer' if h.role == 'user' else h.persona or 'assistant'}: {h.text}"
            for h in recent
        ]
        lines.append(instructions(desk.operators.channel, desk.config.release_command))
        persona = PersonaPresentation.model_validate(fact["persona"])
        text, key = "\n".join(lines), f"{message.id}:handoff"
        source = message.model_copy(update={"attachments": ()})
        await self.post(self.to_operators(desk, thread, text, key=key, who=persona, source=source))
        log.info("handoff.started", persona=persona.name, thread=thread)
        return True

    async def relay_customer(self, message: InboundMessage, fact: dict[str, Any]) -> None:
        """A customer message during a handoff goes to the operators' thread."""
        desk = self.desk_for(message.conversation.tenant)
        if message.kind not in _TEXT_KINDS or desk is None:
            return
        name = str(fact.get("customer") or message.sender.id)
        await self.post(
            self.to_operators(
                desk,
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
        desk = self._operators_desk(conv)
        if (
            desk is not None
            and conv.thread is not None
            and not message.sender.is_bot
            and message.kind in _TEXT_KINDS
        ):
            raw = await self.store.get_record(self.mapping_key(conv))
            if raw is not None:
                customer = ConversationKey.model_validate_json(raw)
                outcome = await self._from_operator(desk, message, customer)
        await self.store.ack(self.keyspace.inbox(partition), INBOX_GROUP, [entry.id])
        log.info("handoff.operator_message", outcome=outcome)
        return outcome

    async def _from_operator(
        self, desk: Desk, message: InboundMessage, customer: ConversationKey
    ) -> str:
        config = desk.config
        thread = message.conversation.thread or ""
        notice = PersonaPresentation(name="handoff", display_name="FlowBiz handoff")
        if customer.tenant not in desk.serves:
            # Never relay across tenants: a thread left from an earlier configuration (or a
            # record written by anything but this desk) must not reach another tenant's customer.
            log.warning(
                "handoff.cross_tenant_refused",
                desk=desk.where,
                customer_tenant=customer.tenant,
            )
            await self.post(
                self.to_operators(
                    desk,
                    thread,
                    "This customer is not served by this desk; nothing was sent.",
                    key=f"{message.id}:refused",
                    who=notice,
                    source=message.model_copy(update={"attachments": ()}),
                )
            )
            return "refused"
        release = is_release(message.text, desk.operators.channel, config.release_command)
        fact = await self._note_on_customer(message, customer, release=release)
        if fact is None:
            await self.post(
                self.to_operators(
                    desk,
                    thread,
                    "This conversation is not handed off (any more); nothing was sent.",
                    key=f"{message.id}:inactive",
                    who=notice,
                    source=message.model_copy(update={"attachments": ()}),
                )
            )
            return "inactive"
        reply_context = _REPLY_CONTEXT.validate_python(fact["reply_context"])
        if release:
            if config.released_notice:
                await self.post(
                    OutboundMessage(
                        conversation=customer,
                        persona=PersonaPresentation.model_validate(fact["persona"]),
                        text=config.released_notice,
                        idempotency_key=f"{message.id}:released",
                        reply_context=reply_context,
                        trace_id=message.trace_id,
                    )
                )
            await self.post(
                self.to_operators(
                    desk,
                    thread,
                    "Released: the assistant answers this customer again.",
                    key=f"{message.id}:released-ops",
                    who=notice,
                    source=message.model_copy(update={"attachments": ()}),
                )
            )
            log.info("handoff.released")
            return "released"
        name = message.sender.display_name
        await self.post(
            OutboundMessage(
                conversation=customer,
                persona=PersonaPresentation(
                    name="operator",
                    display_name=config.operator_display_name,
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
            fact = self.in_force(state)
            if fact is None:
                return None
            facts = dict(state.facts)
            if release:
                del facts[FACT]
                new_state = state.model_copy(update={"facts": facts, "updated_at": utcnow()})
            elif any(h.message_id == message.id for h in state.history):
                return fact  # a redelivery: noted already
            else:
                if holder_of(fact) is None:  # the first to answer holds it
                    name = message.sender.display_name or message.sender.id
                    via = message.conversation.channel.value  # the desk's channel
                    facts[FACT] = {**fact, "holder": new_holder(name, via)}
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
                new_state = state.model_copy(
                    update={"history": history, "facts": facts, "updated_at": utcnow()}
                )
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
                await self.touched()
                return fact
        raise StoreError("the customer's state kept changing; the operator message will be retried")

    # The names these helpers had before the console used them (kept for other callers).
    _post = post
    _to_operators = to_operators
    _operators_key = operators_key
    _mapping_key = mapping_key

    async def touched(self) -> None:
        """Tell the console's live pages that a handoff changed outside a worker turn."""
        await self.store.incr(self.keyspace.console_activity())
