"""``Dispatcher.handle`` on its own: send through the connector, record the receipt, pace,
retry a transient failure (after the platform's Retry-After), dead-letter a permanent one."""

from __future__ import annotations

import itertools

import pytest

from connectors.base import Pacing
from connectors.collecting import CollectingConnector
from gateway.conversations import read_receipts
from gateway.deadletters import OUTBOX_GROUP
from gateway.dispatcher import Dispatcher
from gateway.errors import DeliveryFailure
from gateway.models import DeliveryReceipt
from gateway.store import Keyspace
from tests.pipeline.conftest import CUSTOMER, Pipeline, reply, said


async def _backlog(pipeline: Pipeline, partition: int) -> int:
    return await pipeline.store.backlog(pipeline.keyspace.outbox(partition), OUTBOX_GROUP)


async def test_a_send_is_recorded_with_its_receipt_and_acknowledged(pipeline: Pipeline) -> None:
    message = reply("hi there", key="m1:0")
    partition, entry = await pipeline.outbound(message)

    await pipeline.dispatcher().handle(partition, entry)

    assert pipeline.connector.sent == [message]
    [receipt] = await read_receipts(pipeline.store, pipeline.keyspace, CUSTOMER.key)
    assert (receipt.outbound_id, receipt.idempotency_key) == (message.id, "m1:0")
    delivered = await pipeline.store.get_record(pipeline.keyspace.delivered(partition, "m1:0"))
    assert delivered is not None
    assert DeliveryReceipt.model_validate_json(delivered) == receipt
    assert await _backlog(pipeline, partition) == 0
    assert pipeline.count("flowbiz_deliveries_total", channel="http", outcome="delivered") == 1


async def test_a_delivered_message_is_not_sent_twice(pipeline: Pipeline) -> None:
    """A second entry with the same idempotency key (a redelivery) is acked unsent."""
    dispatcher = pipeline.dispatcher()
    await dispatcher.handle(*await pipeline.outbound(reply("once", key="m1:0")))
    partition, again = await pipeline.outbound(reply("once", key="m1:0"))
    await dispatcher.handle(partition, again)
    assert pipeline.connector.texts == ["once"]
    assert await _backlog(pipeline, partition) == 0
    assert (
        pipeline.count("flowbiz_deliveries_total", channel="http", outcome="already_delivered") == 1
    )


async def test_a_transient_failure_waits_for_retry_after(pipeline: Pipeline) -> None:
    """The platform's Retry-After (0.4 s) wins over the configured backoff (0.05 s base)."""
    pipeline.connector.fail_next(1, retry_after=0.4, code=DeliveryFailure.RATE_LIMITED)
    await pipeline.dispatcher().handle(*await pipeline.outbound(reply("later", key="m1:0")))
    first, second = pipeline.connector.attempts
    assert (first.outcome, second.outcome) == ("transient", "sent")
    assert 0.4 <= second.at - first.at < 1.0
    assert pipeline.count("flowbiz_delivery_retries_total", channel="http") == 1


async def test_transient_failures_back_off_then_deliver(pipeline: Pipeline) -> None:
    pipeline.connector.fail_next(2)
    partition, entry = await pipeline.outbound(reply("eventually", key="m1:0"))
    await pipeline.dispatcher().handle(partition, entry)
    assert [a.outcome for a in pipeline.connector.attempts] == ["transient", "transient", "sent"]
    stamps = [a.at for a in pipeline.connector.attempts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert all(0.02 <= gap < 0.5 for gap in gaps)  # full jitter over 0.05 s, then 0.1 s
    assert len(await read_receipts(pipeline.store, pipeline.keyspace, CUSTOMER.key)) == 1
    assert await pipeline.dead_letters(CUSTOMER) == []


async def test_too_many_transient_failures_dead_letter(pipeline: Pipeline) -> None:
    attempts = pipeline.config.pipeline.max_delivery_attempts
    pipeline.connector.fail_next(attempts, code=DeliveryFailure.PLATFORM_UNAVAILABLE)
    partition, entry = await pipeline.outbound(reply("never", key="m1:0"))
    await pipeline.dispatcher().handle(partition, entry)
    assert len(pipeline.connector.attempts) == attempts
    [letter] = await pipeline.dead_letters(CUSTOMER)
    assert (letter.kind, letter.code, letter.attempts) == (
        "outbound",
        "platform_unavailable",
        attempts,
    )
    assert letter.message is not None
    assert letter.message["text"] == "never"
    assert await _backlog(pipeline, partition) == 0
    assert await read_receipts(pipeline.store, pipeline.keyspace, CUSTOMER.key) == []


async def test_a_permanent_failure_dead_letters_at_once(pipeline: Pipeline) -> None:
    pipeline.connector.fail_next(1, permanent=True, platform_code="blocked_by_user")
    partition, entry = await pipeline.outbound(reply("refused", key="m1:0"))
    await pipeline.dispatcher().handle(partition, entry)
    assert [a.outcome for a in pipeline.connector.attempts] == ["permanent"]
    [letter] = await pipeline.dead_letters(CUSTOMER)
    assert (letter.code, letter.platform_code, letter.attempts, letter.conversation) == (
        "rejected",
        "blocked_by_user",
        1,
        CUSTOMER.key,
    )
    assert await _backlog(pipeline, partition) == 0
    assert await pipeline.store.get_record(pipeline.keyspace.delivered(partition, "m1:0")) is None
    assert pipeline.count("flowbiz_dead_letters_total", channel="http", reason="rejected") == 1


async def test_sends_are_paced_by_the_connector_bucket(pipeline: Pipeline) -> None:
    """At 10 sends/s with no burst, four sends take at least 0.3 s; none is dropped."""
    keyspace: Keyspace = pipeline.keyspace
    connector = CollectingConnector(
        pacing=Pacing(key=keyspace.collecting_pace("paced"), rate=10.0, burst=1.0)
    )
    dispatcher = Dispatcher(
        config=pipeline.config,
        store=pipeline.store,
        keyspace=keyspace,
        connectors={CUSTOMER.channel: connector},
        metrics=pipeline.metrics,
    )
    for n in range(4):
        await dispatcher.handle(*await pipeline.outbound(reply(f"part {n}", key=f"m1:{n}")))
    assert connector.texts == [f"part {n}" for n in range(4)]
    assert connector.attempts[-1].at - connector.attempts[0].at >= 0.28


async def test_the_worker_reply_reaches_the_connector(pipeline: Pipeline) -> None:
    """Worker then dispatcher: the persona's answer is what the channel is asked to send."""
    message = said("pricing", event_id="ev-1")
    await pipeline.worker().handle(*await pipeline.inbound(message))
    [queued] = await pipeline.outbox(CUSTOMER)
    partition = pipeline.keyspace.partition(CUSTOMER.key)
    [(_, entry)] = await pipeline.store.read_group(
        [pipeline.keyspace.outbox(partition)], group=OUTBOX_GROUP, consumer="t", count=5, block=0.5
    )
    await pipeline.dispatcher().handle(partition, entry)
    [sent] = await pipeline.connector.wait_for(1)
    assert sent == queued
    assert sent.text == "Our plans: Free, Pro (29/month) and Enterprise (talk to us)."


async def test_wait_for_times_out_when_nothing_comes() -> None:
    """A test waiting on a reply that never comes fails in time rather than hanging."""
    with pytest.raises(TimeoutError):
        await CollectingConnector().wait_for(1, timeout=0.05)
