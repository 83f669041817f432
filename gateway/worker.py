"""The worker: one inbound message in, the persona's replies out, exactly once.

For each inbox entry (one conversation at a time, in order — see
:mod:`gateway.partitions`): load the conversation state, route to a persona, run its agent
under a timeout, then commit — in one atomic step — the new state, the replies on the
outbox and the acknowledgement of the inbox entry. The state is written with the version it
was read at; if another process got there first the commit changes nothing and the turn
runs again on fresh state, so a message never yields two sets of replies. A turn that starts
a human handoff is acknowledged after the commit instead, once the desk has been told
(:meth:`gateway.handoff.HandoffDesk.announce`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from pydantic import ValidationError

from agents.base import (
    Agent,
    AgentContact,
    AgentContext,
    AgentReply,
    HistoryTurn,
    fill_template,
)
from agents.persona import Persona, PersonaRegistry
from agents.registry import build_agent
from agents.tools.mcp_servers import McpServers
from connectors.base import ChannelCapabilities, Connector, TypingIndicator
from gateway.audit import AuditEvent, AuditLog, digest
from gateway.choices import answered_choice, offered_fact
from gateway.config import GatewayConfig
from gateway.contacts import Contact, ContactBook, sender_contact, with_clean_sender
from gateway.conversations import index_records
from gateway.deadletters import DeadLetter, move_to_dead_letters
from gateway.drafts import ReplyDrafts
from gateway.envelope import RawEvent, is_raw_event
from gateway.errors import AgentError, EventParseError, StoreError
from gateway.handoff import HandoffDesk, handoff_fact
from gateway.ingest import INBOX_GROUP
from gateway.media import MediaService
from gateway.metrics import Metrics
from gateway.models import (
    Channel,
    EventKind,
    InboundMessage,
    OutboundMessage,
    stored_json,
    utcnow,
)
from gateway.observability import bind, get_logger
from gateway.quota_step import QuotaStep
from gateway.quotas import QuotaPolicy
from gateway.routing import Router
from gateway.safety import SafetyCheck, Verdict, audit_verdict
from gateway.state import ConversationState
from gateway.store import Commit, Keyspace, StateWrite, Store, StreamEntry
from gateway.typing_indicators import TypingIndicators
from gateway.usage import Usage

__all__ = ["Worker"]

log = get_logger(__name__)

_MAX_CONFLICTS = 8
_SILENT_KINDS = frozenset({EventKind.UNFOLLOW, EventKind.LEAVE})
_GREETING_KINDS = frozenset({EventKind.FOLLOW, EventKind.JOIN})


class Worker:
    def __init__(
        self,
        *,
        config: GatewayConfig,
        store: Store,
        keyspace: Keyspace,
        personas: PersonaRegistry,
        connectors: Mapping[Channel, Connector],
        metrics: Metrics,
        quotas: QuotaPolicy | None = None,
        mcp: McpServers | None = None,
        media: MediaService | None = None,
    ) -> None:
        self.config = config
        self.media = media  # None: files stay metadata (unit tests of the bare pipeline)
        self.typing = TypingIndicators(metrics)
        self.drafts = ReplyDrafts(metrics)  # a streaming agent's answer shown as it is written
        self.mcp = mcp  # the MCP server connections the agents share, across reloads
        self.store = store
        self.keyspace = keyspace
        self.connectors = connectors
        self.metrics = metrics
        self.quotas = quotas  # None: no plans enforced (unit tests of the bare pipeline)
        self.usage = Usage(store, keyspace)
        self.audit = AuditLog(store, keyspace)
        self.safety = SafetyCheck(config.safety)
        self.contacts = ContactBook(store, keyspace)
        self.personas = personas
        # Applies tenants changed in the store if this process has not yet; True when it did
        # (gateway/tenant_sync.py): see _parse.
        self.catch_up: Callable[[], Awaitable[bool]] | None = None
        self.reconfigure(config)

    def reconfigure(self, config: GatewayConfig) -> None:
        """Serve another configuration (tenants changed at run time) from the next turn."""
        self.config = config
        self.handoff = HandoffDesk(
            desks=config.handoff_desks(),
            store=self.store,
            keyspace=self.keyspace,
            history_limit=config.pipeline.history_limit,
        )
        self.reload(self.personas)

    def reload(self, personas: PersonaRegistry) -> None:
        """Swap in a new set of personas (and their agents) without a restart."""
        agents = {name: build_agent(p, mcp=self.mcp) for name, p in personas.items()}
        self.personas = personas
        self.agents: dict[str, Agent] = agents
        self.router = Router(config=self.config, personas=personas, metrics=self.metrics)

    async def handle(self, partition: int, entry: StreamEntry) -> None:
        message = await self._read(partition, entry)
        if message is None:
            return
        conv = message.conversation
        if self.catch_up is not None and self.config.tenant(conv.tenant) is None:
            await self.catch_up()  # a tenant another process just added: its settings, please
        with bind(
            trace_id=message.trace_id,
            tenant=conv.tenant,
            channel=conv.channel.value,
            conversation=conv.key,
        ):
            # At DEBUG this line carries the full conversation key next to its reference.
            log.debug("worker.turn_started", kind=message.kind.value)
            message = await self._keep_media(message)
            if self.handoff.is_operators(conv):  # people talk there; no bot answers
                outcome = await self.handoff.operator_turn(partition, entry, message)
                self.metrics.turns.labels(f"handoff_{outcome}").inc()
                return
            await self._turn(partition, entry, message)

    async def _read(self, partition: int, entry: StreamEntry) -> InboundMessage | None:
        """The message of an inbox entry: stored parsed, or parsed now from the platform's
        event (gateway/envelope.py). None when there is nothing to answer; an entry that
        cannot be read is moved to the dead-letter list with its reason, whole."""
        if not is_raw_event(entry.payload):
            try:
                return InboundMessage.model_validate_json(entry.payload)
            except ValidationError as exc:
                self.metrics.turns.labels("unparsable").inc()
                await self._dead_letter(
                    partition,
                    entry,
                    DeadLetter(
                        kind="inbound",
                        reason=f"unparsable inbox entry: {exc.error_count()} errors",
                        partition=partition,
                        raw=entry.payload.decode("utf-8", "replace")[:10_000],
                    ),
                )
                return None
        try:
            event = RawEvent.model_validate_json(entry.payload)
        except ValidationError as exc:
            self.metrics.turns.labels("unparsable").inc()
            reason = f"unreadable event envelope: {exc.error_count()} errors"
            await self._dead_letter_event(partition, entry, None, reason)
            return None
        with bind(trace_id=event.trace_id, tenant=event.tenant, channel=event.channel.value):
            try:
                message = await self._parse(event)
            except EventParseError as exc:
                reason, detail = exc.reason, str(exc)
            except Exception as exc:  # noqa: BLE001 - any parser defect must dead-letter, not loop
                # A parser defect met by hostile input. The event is acknowledged and stored:
                # letting the error escape would hand it out again and again and hold up its
                # conversation. Only the type is logged (an exception's text may quote the
                # message); the dead letter keeps the event whole for replay.
                reason, detail = "parser_error", type(exc).__name__
                log.error("worker.parser_error", error_type=detail, event_id=event.event_id)
            else:
                if message is None:
                    self.metrics.inbound.labels(event.channel.value, "ignored").inc()
                    await self.store.ack(self.keyspace.inbox(partition), INBOX_GROUP, [entry.id])
                    return None
                if message.conversation.key == event.conversation:
                    return message
                # The edge partitioned by a conversation the parser disagrees with: answering
                # would break the one-turn-at-a-time order of the conversation it really is.
                reason, detail = "conversation_mismatch", "edge and parser disagree"
            self.metrics.inbound.labels(event.channel.value, "parse_failed").inc()
            self.metrics.turns.labels("unparsable").inc()
            log.warning("worker.event_unparsable", reason=reason, event_id=event.event_id)
            await self._dead_letter_event(partition, entry, event, f"{reason}: {detail}")
            return None

    async def _keep_media(self, message: InboundMessage) -> InboundMessage:
        """The message with its files kept (or refused, with the reason) before any agent
        or operator sees it: off the acknowledged path, with the platform's credentials."""
        if self.media is None or not message.attachments:
            return message
        # A redelivery of a message already answered (a crash between commit and ack): its
        # files were kept then, and the turn will only acknowledge it; fetch nothing again.
        current = await self.store.get_state(self.keyspace.state(message.conversation.key))
        if current is not None and message.id in _handled_ids(current.value):
            return message
        connector = self.connectors.get(message.conversation.channel)
        return await self.media.keep_inbound(message, connector)

    async def _parse(self, event: RawEvent) -> InboundMessage | None:
        try:
            return await self._parse_once(event)
        except EventParseError as exc:
            # A channel this process does not know yet may be one a tenant just got in
            # another process: apply what the store holds, then try once more.
            if exc.reason != "no_channel" or self.catch_up is None or not await self.catch_up():
                raise
        return await self._parse_once(event)

    async def _parse_once(self, event: RawEvent) -> InboundMessage | None:
        connector = self.connectors.get(event.channel)
        if connector is None:
            raise EventParseError(
                f"no {event.channel.value} channel is configured", reason="no_channel"
            )
        return await connector.parse(event)

    async def _dead_letter_event(
        self, partition: int, entry: StreamEntry, event: RawEvent | None, reason: str
    ) -> None:
        # The whole envelope is kept: replaying the letter puts it back on the inbox as it was.
        letter = DeadLetter(
            kind="inbound",
            reason=reason,
            code="unparsable_event",
            partition=partition,
            channel=None if event is None else event.channel.value,
            tenant=None if event is None else event.tenant,
            conversation=None if event is None else event.conversation,
            raw=entry.payload.decode("utf-8", "replace"),
        )
        await self._dead_letter(partition, entry, letter)

    async def _dead_letter(self, partition: int, entry: StreamEntry, letter: DeadLetter) -> None:
        inbox = self.keyspace.inbox(partition)
        await move_to_dead_letters(
            self.store, self.keyspace, letter, ack=(inbox, INBOX_GROUP, entry.id)
        )

    async def _turn(self, partition: int, entry: StreamEntry, message: InboundMessage) -> None:
        message = with_clean_sender(message)  # a name is shown, stored, templated: one line
        quota = QuotaStep(self.quotas, message)
        contact = await sender_contact(self.contacts, message)
        try:
            await self._turn_once(partition, entry, message, quota, contact)
        finally:
            # Whatever was reserved but not committed with replies (a failure, or a race lost
            # to another process that already answered) returns to the tenant.
            await quota.give_back()

    async def _turn_once(
        self,
        partition: int,
        entry: StreamEntry,
        message: InboundMessage,
        quota: QuotaStep,
        contact: Contact | None,
    ) -> None:
        inbox = self.keyspace.inbox(partition)
        conv = message.conversation
        state_key = self.keyspace.state(conv.key)
        # The safety pre-check, once per message (not per commit retry), before any agent.
        verdict = (
            self.safety.check(message.text)
            if message.kind not in _SILENT_KINDS | _GREETING_KINDS
            else Verdict("allow", redacted=message.text)
        )
        if verdict.action != "allow":
            await audit_verdict(self.audit, message, verdict)
        for _ in range(_MAX_CONFLICTS):
            current = await self.store.get_state(state_key)
            state = (
                ConversationState.model_validate_json(current.value)
                if current is not None
                else ConversationState(conversation=message.conversation)
            )
            if message.id in state.handled:
                # Answered already (a redelivery after a crash between commit and ack). A
                # handoff the turn started may not have been announced yet: the entry stays
                # unacknowledged until it is (see HandoffDesk.announce).
                await self.handoff.announce(message, state)
                await self.store.ack(inbox, INBOX_GROUP, [entry.id])
                self.metrics.turns.labels("already_handled").inc()
                return
            # "2" after a message offering numbered choices is that choice's ACTION.
            message = answered_choice(message, state.facts)
            # The quota step (DESIGN: load state → quota → route → agent).
            if message.kind not in _SILENT_KINDS and not await quota.inbound_allowed():
                await self.store.ack(inbox, INBOX_GROUP, [entry.id])
                self.metrics.turns.labels("rate_limited").inc()
                await self.usage.record(
                    tenant=conv.tenant, channel=conv.channel.value, persona=None, rate_limited=1
                )
                return
            exhausted = await quota.exhausted_before_agent()
            now = utcnow()
            route = self.router.route(message, state, now)
            persona = route.presenter or self.personas[route.persona]
            started = time.perf_counter()
            handed_off = self.handoff.in_force(state)
            if exhausted:
                reply = AgentReply()  # over quota: the agent is not even asked
            elif verdict.blocked:
                reply = AgentReply.text(persona.refusal)
            elif handed_off is not None:
                reply = AgentReply()  # people answer this conversation now
            elif route.reply is not None and message.kind not in _SILENT_KINDS | _GREETING_KINDS:
                reply = AgentReply.text(
                    route.reply
                )  # the gateway's own answer (gateway/routing.py)
            elif self.handoff.requested(message):
                reply = self.handoff.customer_reply(
                    AgentReply(handoff="the customer asked"), conv.tenant
                )
            else:
                reply = await self._answer(persona, message, state, route.remaining_text, contact)
                reply = self.handoff.customer_reply(reply, conv.tenant)
            agent_ms = 0 if exhausted else round((time.perf_counter() - started) * 1000)
            # An agent may hand over only to a persona that may answer on this channel.
            if reply.switch_persona is not None and self.router.reachable(
                reply.switch_persona, message
            ):
                persona = self.personas[reply.switch_persona]
            outbound = [
                OutboundMessage(
                    conversation=message.conversation,
                    persona=persona.presentation,
                    text=part.text,
                    attachments=part.attachments,
                    buttons=part.buttons,
                    quick_replies=part.quick_replies,
                    cards=part.cards,
                    options=part.options,
                    idempotency_key=f"{message.id}:{n}",
                    in_reply_to=message.id,
                    inbound_received_at=message.received_at,
                    reply_context=message.reply_context,
                    trace_id=message.trace_id,
                )
                for n, part in enumerate(reply.parts)
                if not part.is_empty()
            ]
            outcome = await quota.settle(len(outbound)) if not exhausted else "over_quota"
            if outcome != "ok":
                outbound = await self._quota_outcome(outcome, persona, message, quota)
            new_state = state.after_turn(
                inbound_id=message.id,
                inbound_text=verdict.redacted,  # a blocked card number is not kept
                received_at=message.received_at,
                persona=persona.name,
                sticky_seconds=self.config.routing.sticky_seconds,
                replies=[o.text for o in outbound],
                history_limit=self.config.pipeline.history_limit,
                now=now,
            )
            new_state = new_state.model_copy(
                update={"facts": offered_fact(new_state.facts, outbound)}
            )
            if message.kind in _SILENT_KINDS:
                new_state = new_state.model_copy(
                    update={"facts": {**new_state.facts, "left": now.isoformat()}}
                )
            new_state = await self._handoff_step(new_state, message, persona, reply, verdict)
            # A turn that starts a handoff is acknowledged only once the desk is told.
            opens_handoff = self.handoff.opened_by(new_state, message)
            version = await self.store.commit(
                Commit(
                    state=StateWrite(
                        key=state_key,
                        value=stored_json(new_state),
                        expected_version=current.version if current is not None else 0,
                    ),
                    appends=[
                        (self.keyspace.outbox(partition), o.model_dump_json().encode())
                        for o in outbound
                    ],
                    acks=[] if opens_handoff else [(inbox, INBOX_GROUP, entry.id)],
                    records=index_records(
                        self.keyspace,
                        message,
                        persona=persona.name,
                        dedupe_ttl=self.config.store.dedupe_ttl_seconds,
                        route=route.reason,
                    ),
                    # Counted with the turn itself: a turn is counted once, however often
                    # its commit is retried, and never without having happened.
                    counters=self.usage.counters(
                        tenant=conv.tenant,
                        channel=conv.channel.value,
                        persona=persona.name,
                        inbound=1,
                        outbound=len(outbound) if outcome == "ok" else 0,
                        agent_ms=agent_ms,
                        over_quota=int(outcome == "over_quota"),
                        reply_capped=int(outcome == "reply_capped"),
                    ),
                )
            )
            if version is not None:
                quota.reserved = 0  # the replies are queued: the reservation is spent
                label = outcome if outcome != "ok" else "answered" if outbound else "silent"
                self.metrics.turns.labels(label).inc()
                log.info(
                    "worker.turn_committed",
                    persona=persona.name,
                    route=route.reason,
                    replies=len(outbound),
                )
                if opens_handoff:
                    await self.handoff.announce(message, new_state)
                    await self.store.ack(inbox, INBOX_GROUP, [entry.id])
                return
            self.metrics.turns.labels("conflict").inc()
        raise StoreError(f"conversation state kept changing; gave up after {_MAX_CONFLICTS} tries")

    async def _quota_outcome(
        self, outcome: str, persona: Persona, message: InboundMessage, quota: QuotaStep
    ) -> list[OutboundMessage]:
        """Over quota: the notice once per window and conversation, else nothing."""
        if outcome != "over_quota" or not await quota.notice_claimed():
            return []
        conv = message.conversation
        if not quota.audited:  # once, even when the commit is retried
            quota.audited = True
            await self.audit.write(
                AuditEvent(
                    actor="gateway",
                    action="quota.exceeded",
                    tenant=conv.tenant,
                    detail={"quota": "outbound", "conversation": digest(conv.key)},
                )
            )
        variables = {"display_name": persona.display_name, "tenant": conv.tenant}
        template = persona.prompts.get("quota_notice")
        if template is not None:
            text: str | None = template.render(variables)
        else:
            assert self.quotas is not None  # outcomes other than "ok" come from the policy
            text = (await self.quotas.plan(conv.tenant)).over_quota_notice
        if not text:
            return []
        return [
            OutboundMessage(
                conversation=conv,
                persona=persona.presentation,
                text=fill_template(text, variables),
                idempotency_key=f"{message.id}:quota-notice",
                in_reply_to=message.id,
                inbound_received_at=message.received_at,
                reply_context=message.reply_context,
                trace_id=message.trace_id,
            )
        ]

    async def _handoff_step(
        self,
        state: ConversationState,
        message: InboundMessage,
        persona: Persona,
        reply: AgentReply,
        verdict: Verdict,
    ) -> ConversationState:
        """Relay a handed-off customer's message to the operators, or start a handoff."""
        fact = self.handoff.in_force(state)
        if fact is None and handoff_fact(state) is not None:
            # The desk that took it no longer serves this tenant: the handoff ends here.
            log.info("handoff.desk_gone")
            facts = {k: v for k, v in state.facts.items() if k != "handoff"}
            state = state.model_copy(update={"facts": facts})
        if fact is not None:
            if not verdict.blocked:
                await self.handoff.relay_customer(message, fact)
            fact = self.handoff.refreshed(fact, message)
        elif reply.handoff is not None and self.handoff.serves(message.conversation.tenant):
            fact = self.handoff.begin(
                message=message, state=state, persona=persona.presentation, reason=reply.handoff
            )
        elif reply.handoff is not None:
            log.warning("handoff.not_configured", persona=persona.name)
        if fact is None:
            return state
        return state.model_copy(update={"facts": {**state.facts, "handoff": fact}})

    async def _answer(
        self,
        persona: Persona,
        message: InboundMessage,
        state: ConversationState,
        text: str,
        contact: Contact | None,
    ) -> AgentReply:
        tenant = self.config.tenant(message.conversation.tenant)
        # The name the platform gave (cleaned: gateway/contacts/model.py), else the
        # contact's, else the raw id. Filled in one pass: never read as a template itself.
        user_name = (
            message.sender.display_name
            or (contact.name if contact is not None else None)
            or message.sender.id
        )
        variables = {
            "user_name": user_name,
            "contact_name": (contact.name if contact is not None else None) or user_name,
            "display_name": persona.display_name,
            "persona": persona.name,
            "tenant": message.conversation.tenant,
            "tenant_name": (tenant.name if tenant is not None else "")
            or message.conversation.tenant,
            "channel": message.conversation.channel.value,
        }
        if message.kind in _SILENT_KINDS:
            return AgentReply()
        if message.kind in _GREETING_KINDS:
            if persona.welcome is None:
                return AgentReply()
            return AgentReply.text(fill_template(persona.welcome, variables))
        connector = self.connectors.get(message.conversation.channel)
        draft = self.drafts.open(connector, message, persona.presentation)
        context = AgentContext(
            message=message.model_copy(update={"text": text}) if text != message.text else message,
            persona=persona,
            history=tuple(
                HistoryTurn(role=h.role, text=h.text, at=h.at, persona=h.persona)
                for h in state.history
            ),
            capabilities=connector.capabilities if connector is not None else ChannelCapabilities(),
            variables=variables,
            audit=self.audit,
            media=self.media,
            contact=None
            if contact is None
            else AgentContact(id=contact.id, name=contact.name, channels=contact.channels),
            on_partial=draft.on_partial if draft is not None else None,
        )
        timeout = persona.agent.timeout_seconds or self.config.pipeline.agent_timeout_seconds
        started = time.perf_counter()
        if persona.typing and isinstance(connector, TypingIndicator):
            self.typing.start(connector, message)
        try:
            async with asyncio.timeout(timeout):
                reply = await self.agents[persona.name].respond(context)
        except (TimeoutError, AgentError) as exc:
            outcome = "timeout" if isinstance(exc, TimeoutError) else "error"
            self.metrics.agent_seconds.labels(persona.name, outcome).observe(
                time.perf_counter() - started
            )
            log.warning("worker.agent_failed", persona=persona.name, outcome=outcome)
            return AgentReply.text(persona.failure_reply)
        finally:
            if draft is not None:  # settled before the commit: the reply finds its ts
                await draft.close()
        self.metrics.agent_seconds.labels(persona.name, "ok").observe(time.perf_counter() - started)
        return reply


def _handled_ids(state: bytes) -> tuple[str, ...]:
    return ConversationState.model_validate_json(state).handled
