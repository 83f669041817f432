"""The worker and the dispatcher on their own, over real stores (memory and SQLite).

No app, no listener: a :class:`Pipeline` appends entries to a partition's inbox or outbox
and hands them out through the consumer group exactly as the partition consumer does, so a
test calls ``Worker.handle`` / ``Dispatcher.handle`` with a real pending entry. Replies go
to a :class:`~connectors.collecting.CollectingConnector`; the personas are the shipped ones
(rules agents).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agents.persona import load_personas
from connectors.collecting import CollectingConnector
from gateway.config import GatewayConfig, parse_config
from gateway.deadletters import OUTBOX_GROUP, DeadLetter
from gateway.dispatcher import Dispatcher
from gateway.envelope import encode_raw_event
from gateway.ingest import INBOX_GROUP
from gateway.metrics import Metrics
from gateway.models import (
    Channel,
    ConversationKey,
    EncodedInbound,
    InboundMessage,
    OutboundMessage,
    Participant,
    PersonaPresentation,
)
from gateway.quotas import QuotaPolicy
from gateway.store import Keyspace, Store, StreamEntry, open_store
from gateway.worker import Worker
from tests.harness import base_config, http_tenant


@pytest.fixture(autouse=True)
def _channel_env(channel_env: None) -> None:
    """The HTTP channel of the test tenant reads its secrets from the environment."""


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/pipeline.db"
    opened = await open_store(url)
    yield opened
    await opened.aclose()


def make_config(
    store: Store, *, plans: dict[str, Any] | None = None, **tenant_fields: Any
) -> GatewayConfig:
    """The test tenant ``acme`` with one HTTP channel; ``tenant_fields`` added to it."""
    data = base_config(store.url, tenants=[http_tenant(None) | tenant_fields])
    if plans is not None:
        data["plans"] = plans
    return parse_config(data)


@dataclass
class Pipeline:
    config: GatewayConfig
    store: Store
    metrics: Metrics
    connector: CollectingConnector

    @property
    def keyspace(self) -> Keyspace:
        return Keyspace(prefix=self.config.store.prefix, partitions=self.config.store.partitions)

    def worker(self, *, quotas: bool = False) -> Worker:
        policy = (
            QuotaPolicy(
                config=self.config, store=self.store, keyspace=self.keyspace, metrics=self.metrics
            )
            if quotas
            else None
        )
        return Worker(
            config=self.config,
            store=self.store,
            keyspace=self.keyspace,
            personas=load_personas(self.config.personas_dir),
            connectors={Channel.HTTP: self.connector},
            metrics=self.metrics,
            quotas=policy,
        )

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(
            config=self.config,
            store=self.store,
            keyspace=self.keyspace,
            connectors={Channel.HTTP: self.connector},
            metrics=self.metrics,
        )

    async def _hand_out(self, stream: str, group: str, payload: bytes) -> StreamEntry:
        await self.store.append(stream, payload)
        got = await self.store.read_group(
            [stream], group=group, consumer="test", count=1, block=0.5
        )
        assert len(got) == 1, got
        return got[0][1]

    async def inbound(self, message: InboundMessage) -> tuple[int, StreamEntry]:
        """Put ``message`` on its inbox, handed out to this test as a worker would get it."""
        partition = self.keyspace.partition(message.conversation.key)
        payload = message.model_dump_json().encode()
        return partition, await self._hand_out(self.keyspace.inbox(partition), INBOX_GROUP, payload)

    async def event(
        self, event: Any, *, conversation: ConversationKey, event_id: str = "ev-raw"
    ) -> tuple[int, StreamEntry, EncodedInbound]:
        """Put a platform event on the inbox as an edge stores it (gateway/envelope.py)."""
        encoded = encode_raw_event(
            event_id=event_id,
            tenant=conversation.tenant,
            channel=conversation.channel,
            source=conversation.channel.value,
            conversation_key=conversation.key,
            event=event,
        )
        partition = self.keyspace.partition(conversation.key)
        entry = await self._hand_out(self.keyspace.inbox(partition), INBOX_GROUP, encoded.payload)
        return partition, entry, encoded

    async def outbound(self, message: OutboundMessage) -> tuple[int, StreamEntry]:
        partition = self.keyspace.partition(message.conversation.key)
        payload = message.model_dump_json().encode()
        return partition, await self._hand_out(
            self.keyspace.outbox(partition), OUTBOX_GROUP, payload
        )

    async def outbox(self, conversation: ConversationKey) -> list[OutboundMessage]:
        stream = self.keyspace.outbox(self.keyspace.partition(conversation.key))
        return [
            m
            for e in await self.store.range(stream, count=1000)
            if (m := OutboundMessage.model_validate_json(e.payload)).conversation == conversation
        ]

    async def dead_letters(self, conversation: ConversationKey) -> list[DeadLetter]:
        stream = self.keyspace.dead_letters(self.keyspace.partition(conversation.key))
        return [
            DeadLetter.model_validate_json(e.payload)
            for e in await self.store.range(stream, count=1000)
        ]

    def count(self, metric: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(metric, labels)
        return 0.0 if value is None else value


@pytest.fixture
def pipeline(store: Store) -> Pipeline:
    return Pipeline(make_config(store), store, Metrics(), CollectingConnector())


CUSTOMER = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="c1")


def said(text: str, *, event_id: str, conversation: ConversationKey = CUSTOMER) -> InboundMessage:
    return InboundMessage(
        event_id=event_id,
        conversation=conversation,
        sender=Participant(id="u1", display_name="Ann"),
        text=text,
    )


def reply(text: str, *, key: str, conversation: ConversationKey = CUSTOMER) -> OutboundMessage:
    return OutboundMessage(
        conversation=conversation,
        persona=PersonaPresentation(name="core", display_name="FlowBiz Assistant"),
        text=text,
        idempotency_key=key,
    )
