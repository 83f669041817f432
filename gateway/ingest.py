"""Ingest: dedupe on the platform's event id and append to the inbox, before any ack.

This is the only door into the pipeline. Web routes, Socket Mode, the SMTP listener and the
IMAP poller all call :meth:`Ingestor.submit` and acknowledge to the platform only after it
returns. The store group-commits concurrent submissions, so a burst of requests costs one
transaction (SQLite) or one pipeline (Redis) rather than one round trip each.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial

from prometheus_client import Counter, Histogram

from gateway.errors import IngestUnavailableError, StoreError
from gateway.metrics import Metrics
from gateway.models import EncodedInbound, InboundMessage
from gateway.observability import get_logger
from gateway.store import Admission, Keyspace, ReplicationError, Store

__all__ = ["INBOX_GROUP", "Ingestor"]

INBOX_GROUP = "workers"

log = get_logger(__name__)
_debug_enabled = partial(logging.getLogger(__name__).isEnabledFor, logging.DEBUG)


class Ingestor:
    def __init__(
        self, *, store: Store, keyspace: Keyspace, metrics: Metrics, dedupe_ttl: float
    ) -> None:
        self.store = store
        self.keyspace = keyspace
        self.metrics = metrics
        self.dedupe_ttl = dedupe_ttl
        # Labelled metric children, looked up once: ``labels()`` costs about a microsecond,
        # which the ingest path pays per message (see docs/performance.md).
        self._outcomes: dict[tuple[str, str], Counter] = {}
        self._latency: dict[str, Histogram] = {}

    def _count(self, channel: str, outcome: str) -> Counter:
        child = self._outcomes.get((channel, outcome))
        if child is None:
            child = self._outcomes[channel, outcome] = self.metrics.inbound.labels(channel, outcome)
        return child

    def _latency_of(self, channel: str) -> Histogram:
        child = self._latency.get(channel)
        if child is None:
            child = self._latency[channel] = self.metrics.ingest_seconds.labels(channel)
        return child

    def admission(self, message: InboundMessage | EncodedInbound) -> Admission:
        encoded = message if isinstance(message, EncodedInbound) else EncodedInbound.of(message)
        return self._admission(encoded)

    def _admission(self, message: EncodedInbound) -> Admission:
        partition = self.keyspace.partition(message.conversation_key)
        return Admission(
            dedupe_key=self.keyspace.inbound_seen(
                partition, message.channel.value, message.tenant, message.event_id
            ),
            stream=self.keyspace.inbox(partition),
            payload=message.payload,
        )

    async def submit(
        self,
        messages: Sequence[InboundMessage | EncodedInbound],
        *,
        started: float | None = None,
    ) -> list[bool]:
        """Make ``messages`` durable; per message, True if new and False if a duplicate.

        Takes models or their already-encoded form (:class:`EncodedInbound`): the inbox
        entry is the same either way. Raises IngestUnavailableError when the store cannot
        take them: the caller must then refuse the request so that the platform retries.
        """
        if not messages:
            return []
        begin = time.perf_counter() if started is None else started
        encoded = [m if type(m) is EncodedInbound else self._encoded(m) for m in messages]
        try:
            ids = await self.store.admit(
                [self._admission(m) for m in encoded], dedupe_ttl=self.dedupe_ttl
            )
        except StoreError as exc:
            # Not replicated: stored on the primary only, which a failover may lose, so it
            # is not acknowledged either (store.replica_acks).
            unreplicated = isinstance(exc, ReplicationError)
            outcome = "not_replicated" if unreplicated else "store_unavailable"
            for m in encoded:
                self.metrics.inbound.labels(m.channel.value, outcome).inc()
            if unreplicated:
                log.error("ingest.not_replicated", error=str(exc))
            else:
                log.error("ingest.store_unavailable", error=str(exc))
            raise IngestUnavailableError("the message could not be stored; retry later") from exc
        elapsed = time.perf_counter() - begin
        flags = [entry_id is not None for entry_id in ids]
        # Asked once per call, not per message: the keyword arguments of a line that is not
        # written still cost their dict.
        debug = _debug_enabled()
        for message, new in zip(encoded, flags, strict=True):
            channel = message.channel.value
            self._count(channel, "accepted" if new else "duplicate").inc()
            self._latency_of(channel).observe(elapsed)
            if debug:
                log.debug(
                    "ingest.accepted" if new else "ingest.duplicate",
                    trace_id=message.trace_id,
                    tenant=message.tenant,
                    channel=channel,
                    event_id=message.event_id,
                )
        return flags

    @staticmethod
    def _encoded(message: InboundMessage | EncodedInbound) -> EncodedInbound:
        return message if isinstance(message, EncodedInbound) else EncodedInbound.of(message)
