"""The ingest hot path's shortcuts keep the behaviour of the code they replace."""

from __future__ import annotations

import os
import uuid

import pytest
from pydantic_core import from_json

from connectors.base import InboundRequest
from gateway.models import (
    Channel,
    ConversationKey,
    EncodedInbound,
    EventKind,
    HttpReplyContext,
    InboundMessage,
    OutboundMessage,
    Participant,
    PersonaPresentation,
    encode_inbound,
    new_id,
    trace_id_of,
)


def test_new_id_is_a_uuid7_string() -> None:
    """new_id() formats a canonical version-7, RFC 4122 variant UUID."""
    for _ in range(2000):
        text = new_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_new_ids_are_unique_and_time_ordered() -> None:
    """Ids minted later sort after earlier ones at millisecond granularity, and never repeat."""
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    stamps = [i[:13] for i in ids]  # the 48-bit millisecond timestamp
    assert stamps == sorted(stamps)


def _message(**extra: object) -> InboundMessage:
    return InboundMessage(
        event_id="e1",
        conversation=ConversationKey(tenant="t", channel=Channel.HTTP, conversation_id="c"),
        sender=Participant(id="u"),
        **extra,  # type: ignore[arg-type]
    )


def test_default_trace_id_is_the_message_id() -> None:
    """Without an explicit trace id, a message's trace id is its own id as 32 hex digits."""
    message = _message()
    assert message.trace_id == message.id.replace("-", "") == trace_id_of(message.id)
    assert len(message.trace_id) == 32
    assert _message(trace_id="abc").trace_id == "abc"
    outbound = OutboundMessage(
        conversation=message.conversation,
        persona=PersonaPresentation(name="core", display_name="Core"),
        text="hi",
        idempotency_key="k",
    )
    assert outbound.trace_id == outbound.id.replace("-", "")


def test_conversation_key_follows_copies() -> None:
    """The cached key string is per value: a copy with another id gets its own key."""
    key = ConversationKey(tenant="t", channel=Channel.HTTP, conversation_id="a/b", thread="x y")
    assert key.key == "t/http/a%2Fb/x%20y"
    moved = key.model_copy(update={"conversation_id": "other"})
    assert moved.key == "t/http/other/x%20y"
    assert key.key == "t/http/a%2Fb/x%20y"


def test_inbound_request_computes_url_and_query_once_on_demand() -> None:
    """Lazy url/query are computed on first read only, and plain values work as before."""
    calls: list[str] = []

    def url() -> str:
        calls.append("url")
        return "http://gw/p?a=1"

    def query() -> dict[str, str]:
        calls.append("query")
        return {"a": "1"}

    request = InboundRequest("POST", "/p", url, {"x-a": "1"}, query, b"{}")
    assert calls == []
    assert request.header("X-A") == "1"
    assert (request.url, request.url) == ("http://gw/p?a=1", "http://gw/p?a=1")
    assert (request.query, request.query) == ({"a": "1"}, {"a": "1"})
    assert calls == ["url", "query"]
    plain = InboundRequest(
        method="GET", path="/p", url="http://gw/p", headers={}, query={}, body=b""
    )
    assert (plain.url, plain.query, plain.match_info, plain.remote) == ("http://gw/p", {}, {}, None)


_RAW_BODY = (
    b'{"conversation_id": "c/1", "thread": "t 1", "event_id": "ev\\u00e9",'
    b' "user": {"id": "u1", "name": "\xc3\xa9 \\"q\\""}, "text": "a\\nb\\u2028", "n": 1.5,'
    b' "big": 123456789012345678901234567890, "list": [null, true, {}]}'
)


@pytest.mark.parametrize(
    ("kind", "thread", "name"),
    [(EventKind.MESSAGE, None, None), (EventKind.ACTION, "t 1", 'é "q"')],
)
def test_encode_inbound_writes_what_the_model_writes(
    kind: EventKind, thread: str | None, name: str | None
) -> None:
    """encode_inbound's bytes equal InboundMessage.model_dump_json() for the same values."""
    raw = from_json(_RAW_BODY)
    encoded = encode_inbound(
        event_id="evé",
        tenant="acme",
        channel=Channel.HTTP,
        conversation_id="c/1",
        thread=thread,
        sender_id="u1",
        sender_name=name,
        kind=kind,
        text="a\nb\u2028",
        raw=raw,
    )
    message = InboundMessage.model_validate_json(encoded.payload)
    assert message.model_dump_json().encode() == encoded.payload
    assert message == InboundMessage(
        id=encoded.id,
        event_id="evé",
        conversation=ConversationKey(
            tenant="acme", channel=Channel.HTTP, conversation_id="c/1", thread=thread
        ),
        sender=Participant(id="u1", display_name=name),
        kind=kind,
        received_at=message.received_at,
        text="a\nb\u2028",
        reply_context=HttpReplyContext(),
        raw=raw,
    )
    assert encoded == EncodedInbound.of(message)
    assert message.trace_id == trace_id_of(encoded.id)


def test_encode_inbound_covers_every_inbound_field() -> None:
    """A field added to InboundMessage must be added to encode_inbound too (this fails)."""
    encoded = encode_inbound(
        event_id="e",
        tenant="t",
        channel=Channel.HTTP,
        conversation_id="c",
        thread=None,
        sender_id="u",
        sender_name=None,
        kind=EventKind.MESSAGE,
        text="hi",
        raw={},
    )
    written = list(from_json(encoded.payload))
    assert written == list(InboundMessage.model_fields)
    nested = from_json(encoded.payload)
    assert list(nested["conversation"]) == list(ConversationKey.model_fields)
    assert list(nested["sender"]) == list(Participant.model_fields)


def test_forked_child_draws_its_own_id_randomness() -> None:
    """A child forked after ids were minted never repeats the parent's next random bits."""
    new_id()  # fill the parent's pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave at once
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    parent = new_id()
    assert child[14:] != parent[14:]  # everything after the timestamp and version digit
