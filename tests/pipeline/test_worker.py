"""``Worker.handle`` on its own: one inbox entry in, the persona's replies on the outbox,
the state committed with them, each message answered once."""

from __future__ import annotations

from gateway.conversations import read_index_entry, read_state
from gateway.ingest import INBOX_GROUP
from gateway.metrics import Metrics
from gateway.models import Channel, ConversationKey
from tests.pipeline.conftest import CUSTOMER, Pipeline, make_config, said

HELLO = "Hello Ann! How can I help you today?"


async def test_a_turn_puts_the_persona_reply_on_the_outbox_with_the_state(
    pipeline: Pipeline,
) -> None:
    message = said("hello", event_id="ev-1")
    partition, entry = await pipeline.inbound(message)

    await pipeline.worker().handle(partition, entry)

    [out] = await pipeline.outbox(CUSTOMER)
    assert (out.text, out.persona.name) == (HELLO, "core")
    assert out.idempotency_key == f"{message.id}:0"
    assert out.in_reply_to == message.id
    assert [b.value for b in out.buttons] == ["opening hours", "pricing"]
    state = await read_state(pipeline.store, pipeline.keyspace, CUSTOMER.key)
    assert state is not None
    assert [(h.role, h.text) for h in state.history] == [("user", "hello"), ("assistant", HELLO)]
    assert message.id in state.handled
    assert state.persona == "core"
    entry_ = await read_index_entry(pipeline.store, pipeline.keyspace, "acme", CUSTOMER.key)
    assert entry_ is not None
    assert entry_.customer == "Ann"
    # acknowledged in the same commit: nothing left for another worker to take
    assert await pipeline.store.backlog(pipeline.keyspace.inbox(partition), INBOX_GROUP) == 0
    assert pipeline.count("flowbiz_turns_total", outcome="answered") == 1


async def test_a_redelivered_entry_is_not_answered_twice(pipeline: Pipeline) -> None:
    """The same entry again (a crash between commit and ack, then a reclaim): acked, silent."""
    partition, entry = await pipeline.inbound(said("pricing", event_id="ev-1"))
    worker = pipeline.worker()
    await worker.handle(partition, entry)
    await worker.handle(partition, entry)
    assert len(await pipeline.outbox(CUSTOMER)) == 1
    assert pipeline.count("flowbiz_turns_total", outcome="already_handled") == 1


async def test_a_duplicate_inbox_entry_is_not_answered_twice(pipeline: Pipeline) -> None:
    """One message appended twice (two entries, one id), handled by two workers."""
    message = said("opening hours", event_id="ev-1")
    first = await pipeline.inbound(message)
    second = await pipeline.inbound(message)
    assert first[1].id != second[1].id
    await pipeline.worker().handle(*first)
    await pipeline.worker().handle(*second)
    [out] = await pipeline.outbox(CUSTOMER)
    assert out.text == "We are open Monday to Friday, 9:00 to 18:00."
    state = await read_state(pipeline.store, pipeline.keyspace, CUSTOMER.key)
    assert state is not None
    assert len(state.history) == 2
    assert await pipeline.store.backlog(pipeline.keyspace.inbox(first[0]), INBOX_GROUP) == 0


async def test_a_handoff_is_announced_and_the_bot_falls_silent(pipeline: Pipeline) -> None:
    desk = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="desk")
    config = make_config(
        pipeline.store,
        handoff={"operators": {"channel": "http", "conversation_id": "desk"}},
    )
    pipeline = Pipeline(config, pipeline.store, Metrics(), pipeline.connector)
    worker = pipeline.worker()

    await worker.handle(*await pipeline.inbound(said("/human", event_id="ev-1")))
    [notice] = await pipeline.outbox(CUSTOMER)
    assert notice.text == config.handoff_desks()[0].config.customer_notice
    state = await read_state(pipeline.store, pipeline.keyspace, CUSTOMER.key)
    assert state is not None
    assert "handoff" in state.facts
    thread = str(state.facts["handoff"]["thread"])
    on_desk = desk.model_copy(update={"thread": thread})
    [announcement] = await pipeline.outbox(on_desk)
    assert announcement.text.startswith("Handoff: Ann on http")

    await worker.handle(*await pipeline.inbound(said("are you there?", event_id="ev-2")))
    assert len(await pipeline.outbox(CUSTOMER)) == 1  # no bot answer while handed off
    relayed = await pipeline.outbox(on_desk)
    assert [m.text for m in relayed][1:] == ["are you there?"]
    assert relayed[1].persona.name == "customer"


async def test_over_quota_the_notice_goes_once_then_silence(pipeline: Pipeline) -> None:
    config = make_config(
        pipeline.store, plans={"tiny": {"monthly_outbound_messages": 1}}, plan="tiny"
    )
    pipeline = Pipeline(config, pipeline.store, Metrics(), pipeline.connector)
    worker = pipeline.worker(quotas=True)

    for n, text in enumerate(["hello", "pricing", "opening hours"]):
        await worker.handle(*await pipeline.inbound(said(text, event_id=f"ev-{n}")))

    texts = [m.text for m in await pipeline.outbox(CUSTOMER)]
    assert texts == [HELLO, config.plans["tiny"].over_quota_notice]
    assert pipeline.count("flowbiz_turns_total", outcome="over_quota") == 2
    state = await read_state(pipeline.store, pipeline.keyspace, CUSTOMER.key)
    assert state is not None
    assert len(state.handled) == 3  # every message counted as handled
