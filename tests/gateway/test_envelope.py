"""The envelope of a platform's event: told from a message, ordered with its conversation."""

from __future__ import annotations

from gateway.envelope import RawEvent, encode_raw_event, is_raw_event
from gateway.models import Channel, ConversationKey, InboundMessage, Participant
from gateway.partitions import conversation_of
from gateway.store import StreamEntry


def _message(conversation: ConversationKey) -> InboundMessage:
    return InboundMessage(
        event_id="m1", conversation=conversation, sender=Participant(id="u"), text="hi"
    )


def test_an_envelope_and_a_message_of_one_conversation_share_one_queue() -> None:
    """The consumer orders by conversation: both entry kinds must name it identically, or a
    conversation's entries would be answered concurrently, out of order."""
    conv = ConversationKey(
        tenant="acme", channel=Channel.LINE, conversation_id="line:U1/odd id", thread="t 1"
    )
    envelope = encode_raw_event(
        event_id="e1",
        tenant="acme",
        channel=Channel.LINE,
        source="line",
        conversation_key=conv.key,
        event={"type": "message"},
    )
    message = _message(conv).model_dump_json().encode()
    by_envelope = conversation_of(StreamEntry(id="1-0", payload=envelope.payload))
    by_message = conversation_of(StreamEntry(id="2-0", payload=message))
    assert by_envelope == by_message == conv.key


def test_an_envelope_reads_back_as_written_and_is_told_from_a_message() -> None:
    envelope = encode_raw_event(
        event_id="e1",
        tenant="acme",
        channel=Channel.SLACK,
        source="slack-eu",
        conversation_key="acme/slack/C1",
        event_json=b'{"type":"event_callback","event":{"text":"caf\\u00e9"}}',
        context={"retry_num": 1},
    )
    assert is_raw_event(envelope.payload)
    event = RawEvent.model_validate_json(envelope.payload)
    assert (event.id, event.trace_id, event.event_id) == (
        envelope.id,
        envelope.trace_id,
        "e1",
    )
    assert (event.tenant, event.channel, event.source) == ("acme", Channel.SLACK, "slack-eu")
    assert event.conversation == "acme/slack/C1"
    assert event.context == {"retry_num": 1}
    assert event.event == {"type": "event_callback", "event": {"text": "café"}}
    conv = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="c")
    assert not is_raw_event(_message(conv).model_dump_json().encode())


def test_a_hostile_conversation_in_an_entry_gets_its_own_queue() -> None:
    for payload in (b'{"conversation": {"tenant": [1]}}', b'{"conversation": 5}', b"nope"):
        assert conversation_of(StreamEntry(id="9-0", payload=payload)) == "?9-0"
