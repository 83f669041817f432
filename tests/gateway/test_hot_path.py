"""The ingest hot path's shortcuts keep the behaviour of the code they replace."""

from __future__ import annotations

import uuid

from connectors.base import InboundRequest
from gateway.models import (
    Channel,
    ConversationKey,
    InboundMessage,
    OutboundMessage,
    Participant,
    PersonaPresentation,
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
