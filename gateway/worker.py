"""The worker: one inbound message in, the persona's replies out, exactly once.

For each inbox entry (one conversation at a time, in order — see
:mod:`gateway.partitions`): load the conversation state, route to a persona, run its agent
under a timeout, then commit — in one atomic step — the new state, the replies on the
outbox and the acknowledgement of the inbox entry. The state is written with the version it
was read at; if another process got there first the commit changes nothing and the turn
runs again on fresh state, so a message never yields two sets of replies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from pydantic import ValidationError

from agents.base import Agent, AgentContext, AgentReply, HistoryTurn, fill_template
from agents.persona import Persona, PersonaRegistry
from agents.registry import build_agent
from connectors.base import ChannelCapabilities, Connector
from gateway.config import GatewayConfig
from gateway.deadletters import DeadLetter, move_to_dead_letters
from gateway.errors import AgentError, StoreError
from gateway.ingest import INBOX_GROUP
from gateway.metrics import Metrics
from gateway.models import Channel, EventKind, InboundMessage, OutboundMessage, utcnow
from gateway.observability import bind, get_logger
from gateway.routing import Router
from gateway.state import ConversationState
from gateway.store import Commit, Keyspace, StateWrite, Store, StreamEntry

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
    ) -> None:
        self.config = config
        self.store = store
        self.keyspace = keyspace
        self.connectors = connectors
        self.metrics = metrics
        self.reload(personas)

    def reload(self, personas: PersonaRegistry) -> None:
        """Swap in a new set of personas (and their agents) without a restart."""
        agents = {name: build_agent(p) for name, p in personas.items()}
        self.personas = personas
        self.agents: dict[str, Agent] = agents
        self.router = Router(config=self.config, personas=personas)

    async def handle(self, partition: int, entry: StreamEntry) -> None:
        inbox = self.keyspace.inbox(partition)
        try:
            message = InboundMessage.model_validate_json(entry.payload)
        except ValidationError as exc:
            self.metrics.turns.labels("unparsable").inc()
            letter = DeadLetter(
                kind="inbound",
                reason=f"unparsable inbox entry: {exc.error_count()} errors",
                partition=partition,
                raw=entry.payload.decode("utf-8", "replace")[:10_000],
            )
            await move_to_dead_letters(
                self.store, self.keyspace, letter, ack=(inbox, INBOX_GROUP, entry.id)
            )
            return
        conv = message.conversation
        with bind(
            trace_id=message.trace_id,
            tenant=conv.tenant,
            channel=conv.channel.value,
            conversation=conv.key,
        ):
            await self._turn(partition, entry, message)

    async def _turn(self, partition: int, entry: StreamEntry, message: InboundMessage) -> None:
        inbox = self.keyspace.inbox(partition)
        state_key = self.keyspace.state(message.conversation.key)
        for _ in range(_MAX_CONFLICTS):
            current = await self.store.get_state(state_key)
            state = (
                ConversationState.model_validate_json(current.value)
                if current is not None
                else ConversationState(conversation=message.conversation)
            )
            if message.id in state.handled:
                # Answered already (a redelivery after a crash between commit and ack).
                await self.store.ack(inbox, INBOX_GROUP, [entry.id])
                self.metrics.turns.labels("already_handled").inc()
                return
            now = utcnow()
            route = self.router.route(message, state, now)
            persona = self.personas[route.persona]
            reply = await self._answer(persona, message, state, route.remaining_text)
            if reply.switch_persona is not None and reply.switch_persona in self.personas:
                persona = self.personas[reply.switch_persona]
            outbound = [
                OutboundMessage(
                    conversation=message.conversation,
                    persona=persona.presentation,
                    text=part.text,
                    attachments=part.attachments,
                    buttons=part.buttons,
                    idempotency_key=f"{message.id}:{n}",
                    in_reply_to=message.id,
                    inbound_received_at=message.received_at,
                    reply_context=message.reply_context,
                    trace_id=message.trace_id,
                )
                for n, part in enumerate(reply.parts)
                if part.text or part.attachments
            ]
            new_state = state.after_turn(
                inbound_id=message.id,
                inbound_text=message.text,
                received_at=message.received_at,
                persona=persona.name,
                sticky_seconds=self.config.routing.sticky_seconds,
                replies=[o.text for o in outbound],
                history_limit=self.config.pipeline.history_limit,
                now=now,
            )
            if message.kind in _SILENT_KINDS:
                new_state = new_state.model_copy(
                    update={"facts": {**new_state.facts, "left": now.isoformat()}}
                )
            version = await self.store.commit(
                Commit(
                    state=StateWrite(
                        key=state_key,
                        value=new_state.model_dump_json().encode(),
                        expected_version=current.version if current is not None else 0,
                    ),
                    appends=[
                        (self.keyspace.outbox(partition), o.model_dump_json().encode())
                        for o in outbound
                    ],
                    acks=[(inbox, INBOX_GROUP, entry.id)],
                )
            )
            if version is not None:
                self.metrics.turns.labels("answered" if outbound else "silent").inc()
                log.info(
                    "worker.turn_committed",
                    persona=persona.name,
                    route=route.reason,
                    replies=len(outbound),
                )
                return
            self.metrics.turns.labels("conflict").inc()
        raise StoreError(f"conversation state kept changing; gave up after {_MAX_CONFLICTS} tries")

    async def _answer(
        self, persona: Persona, message: InboundMessage, state: ConversationState, text: str
    ) -> AgentReply:
        tenant = self.config.tenant(message.conversation.tenant)
        variables = {
            "user_name": message.sender.display_name or message.sender.id,
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
        context = AgentContext(
            message=message.model_copy(update={"text": text}) if text != message.text else message,
            persona=persona,
            history=tuple(
                HistoryTurn(role=h.role, text=h.text, at=h.at, persona=h.persona)
                for h in state.history
            ),
            capabilities=connector.capabilities if connector is not None else ChannelCapabilities(),
            variables=variables,
        )
        timeout = persona.agent.timeout_seconds or self.config.pipeline.agent_timeout_seconds
        started = time.perf_counter()
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
        self.metrics.agent_seconds.labels(persona.name, "ok").observe(time.perf_counter() - started)
        return reply
