"""The worker's parse step: a platform event stored by its edge becomes a message, or nothing,
or a dead letter that keeps the event whole — never a wedged partition."""

from __future__ import annotations

import pytest

from gateway.conversations import erase_conversation
from gateway.envelope import RawEvent
from gateway.ingest import INBOX_GROUP
from gateway.models import Channel, ConversationKey
from tests.pipeline.conftest import CUSTOMER, Pipeline

HELLO = "Hello Ann! How can I help you today?"
COLLECTED = {
    "message": {
        "conversation": CUSTOMER.model_dump(mode="json"),
        "sender": {"id": "u1", "display_name": "Ann"},
        "text": "hello",
    }
}


async def _backlog(pipeline: Pipeline, partition: int) -> int:
    return await pipeline.store.backlog(pipeline.keyspace.inbox(partition), INBOX_GROUP)


async def test_a_stored_event_is_parsed_and_answered_as_the_edge_named_it(
    pipeline: Pipeline,
) -> None:
    partition, entry, encoded = await pipeline.event(COLLECTED, conversation=CUSTOMER)
    await pipeline.worker().handle(partition, entry)
    [out] = await pipeline.outbox(CUSTOMER)
    assert out.text == HELLO
    # The message keeps the id the edge gave the event: a redelivery is the same message.
    assert out.in_reply_to == encoded.id
    assert out.trace_id == encoded.trace_id  # one trace from the edge to the send
    assert await _backlog(pipeline, partition) == 0


async def test_a_redelivered_event_is_answered_once(pipeline: Pipeline) -> None:
    partition, entry, _ = await pipeline.event(COLLECTED, conversation=CUSTOMER)
    worker = pipeline.worker()
    await worker.handle(partition, entry)
    await worker.handle(partition, entry)
    assert len(await pipeline.outbox(CUSTOMER)) == 1


async def test_an_event_that_needs_no_turn_is_acknowledged_silently(pipeline: Pipeline) -> None:
    partition, entry, _ = await pipeline.event({"ignore": True}, conversation=CUSTOMER)
    await pipeline.worker().handle(partition, entry)
    assert await pipeline.outbox(CUSTOMER) == []
    assert await pipeline.dead_letters(CUSTOMER) == []
    assert await _backlog(pipeline, partition) == 0
    assert pipeline.count("flowbiz_inbound_total", channel="http", outcome="ignored") == 1


async def test_an_unreadable_event_is_dead_lettered_whole_with_its_reason(
    pipeline: Pipeline,
) -> None:
    partition, entry, _ = await pipeline.event({"nonsense": 1}, conversation=CUSTOMER)
    await pipeline.worker().handle(partition, entry)
    [letter] = await pipeline.dead_letters(CUSTOMER)
    assert letter.reason == "malformed_event: not a collected message"
    assert (letter.kind, letter.code, letter.channel, letter.tenant) == (
        "inbound",
        "unparsable_event",
        "http",
        "acme",
    )
    assert letter.conversation == CUSTOMER.key
    assert letter.raw is not None
    assert letter.raw.encode() == entry.payload  # the envelope, byte for byte, for replay
    assert await pipeline.outbox(CUSTOMER) == []
    assert await _backlog(pipeline, partition) == 0
    assert pipeline.count("flowbiz_inbound_total", channel="http", outcome="parse_failed") == 1


async def test_a_parser_defect_dead_letters_the_event_and_logs_no_text(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception the parser did not mean (hostile input meeting a bug) must not escape:
    the consumer would hand the event out again and again and hold up its conversation."""
    pipeline.connector.break_parser(KeyError("secret customer words"))
    partition, entry, _ = await pipeline.event(COLLECTED, conversation=CUSTOMER)
    await pipeline.worker().handle(partition, entry)
    [letter] = await pipeline.dead_letters(CUSTOMER)
    assert letter.reason == "parser_error: KeyError"
    assert await _backlog(pipeline, partition) == 0
    assert "secret customer words" not in caplog.text
    # The next event of the conversation is answered as usual.
    partition, entry, _ = await pipeline.event(COLLECTED, conversation=CUSTOMER, event_id="ev-2")
    await pipeline.worker().handle(partition, entry)
    assert [m.text for m in await pipeline.outbox(CUSTOMER)] == [HELLO]


async def test_a_parse_into_another_conversation_is_refused(pipeline: Pipeline) -> None:
    """The edge partitioned the event by its conversation; answering a message of another
    would break that conversation's one-turn-at-a-time order."""
    elsewhere = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="c2")
    partition, entry, _ = await pipeline.event(COLLECTED, conversation=elsewhere)
    await pipeline.worker().handle(partition, entry)
    [letter] = await pipeline.dead_letters(elsewhere)
    assert letter.reason.startswith("conversation_mismatch: ")
    assert await pipeline.outbox(CUSTOMER) == []
    assert await pipeline.outbox(elsewhere) == []


async def test_an_event_of_a_channel_with_no_connector_is_kept(pipeline: Pipeline) -> None:
    line = ConversationKey(tenant="acme", channel=Channel.LINE, conversation_id="line:U1")
    partition, entry, _ = await pipeline.event({"type": "message"}, conversation=line)
    await pipeline.worker().handle(partition, entry)
    [letter] = await pipeline.dead_letters(line)
    assert letter.reason == "no_channel: no line channel is configured"
    assert RawEvent.model_validate_json(letter.raw or "").event == {"type": "message"}


async def test_erase_removes_a_stored_event_and_its_dead_letter(pipeline: Pipeline) -> None:
    """Envelopes name their conversation by its key (not an object, as messages do): the
    GDPR erase must find them on the inbox and on the dead-letter list all the same."""
    waiting = await pipeline.event(COLLECTED, conversation=CUSTOMER, event_id="ev-wait")
    partition, entry, _ = await pipeline.event({"nonsense": 1}, conversation=CUSTOMER)
    await pipeline.worker().handle(partition, entry)
    assert len(await pipeline.dead_letters(CUSTOMER)) == 1
    report = await erase_conversation(pipeline.store, pipeline.keyspace, "acme", CUSTOMER.key)
    assert report.stream_entries_deleted >= 2
    inbox = await pipeline.store.range(pipeline.keyspace.inbox(waiting[0]), count=100)
    assert [e.id for e in inbox if e.id == waiting[1].id] == []
    assert await pipeline.dead_letters(CUSTOMER) == []
