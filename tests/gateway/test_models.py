"""The normalised model: immutable, JSON round-trips, channel-neutral helpers."""

import typing

import pydantic
import pytest

from gateway.conversations import ConversationIndexEntry
from gateway.models import (
    Button,
    Channel,
    ConversationKey,
    DeliveryReceipt,
    InboundMessage,
    LineReplyContext,
    OutboundMessage,
    Participant,
    PersonaPresentation,
    new_id,
    stored_json,
    utcnow,
)
from gateway.state import ConversationState


def _conv(**kw):
    return ConversationKey(tenant="acme", channel=Channel.LINE, conversation_id="U1", **kw)


def test_inbound_round_trips_with_typed_reply_context():
    """The reply context comes back as the channel's own type after a JSON round trip."""
    msg = InboundMessage(
        event_id="ev1",
        conversation=_conv(),
        sender=Participant(id="U1"),
        text="hi",
        reply_context=LineReplyContext(destination="Ubot", source_id="U1", reply_token="rt"),
    )
    back = InboundMessage.model_validate_json(msg.model_dump_json())
    assert back == msg
    assert isinstance(back.reply_context, LineReplyContext)
    assert back.reply_context.reply_token == "rt"


def test_models_are_immutable():
    """A message cannot be changed after creation (copies are explicit)."""
    msg = InboundMessage(event_id="e", conversation=_conv(), sender=Participant(id="u"))
    with pytest.raises(pydantic.ValidationError):
        msg.text = "changed"  # type: ignore[misc]


def test_conversation_key_is_unambiguous():
    """Separators inside ids cannot make two conversations share a key."""
    a = ConversationKey(tenant="t", channel=Channel.HTTP, conversation_id="a/b")
    b = ConversationKey(tenant="t", channel=Channel.HTTP, conversation_id="a", thread="b")
    assert a.key != b.key


def test_buttons_degrade_to_numbered_text():
    """Channels without buttons get the choices as numbered lines after the text."""
    out = OutboundMessage(
        conversation=_conv(),
        persona=PersonaPresentation(name="core", display_name="Core"),
        text="Pick one",
        buttons=(Button(label="Yes", value="y"), Button(label="No", value="n")),
        idempotency_key="k",
    )
    assert out.plain_text() == "Pick one\n\n1. Yes\n2. No"


def test_ids_are_unique_and_time_ordered():
    """Gateway ids sort in creation order, so stores and logs read chronologically."""
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def _models_within(model: type[pydantic.BaseModel]) -> set[type[pydantic.BaseModel]]:
    """``model`` and every model its fields can hold, however deeply nested."""
    found: set[type[pydantic.BaseModel]] = set()
    todo = [model]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found.add(current)
        for field in current.model_fields.values():
            stack = [field.annotation]
            while stack:
                kind = stack.pop()
                if isinstance(kind, type) and issubclass(kind, pydantic.BaseModel):
                    todo.append(kind)
                stack.extend(typing.get_args(kind))
    return found


@pytest.mark.parametrize(
    "stored", [ConversationState, ConversationIndexEntry, DeliveryReceipt], ids=lambda m: m.__name__
)
def test_stored_models_read_back_what_stored_json_leaves_out(
    stored: type[pydantic.BaseModel],
) -> None:
    """stored_json drops None fields; that is only lossless while every field that can be None
    (in the model and in every model inside it) defaults to None."""
    for model in _models_within(stored):
        for name, field in model.model_fields.items():
            if type(None) in typing.get_args(field.annotation):
                assert field.default is None, f"{model.__name__}.{name} must default to None"


def test_stored_json_round_trips_a_state_with_none_fields() -> None:
    key = ConversationKey(tenant="t", channel=Channel.LINE, conversation_id="U1")
    now = utcnow()
    state = ConversationState(conversation=key, facts={"reply_token": None}).after_turn(
        inbound_id="m1",
        inbound_text="hi",
        received_at=now,
        persona="core",
        sticky_seconds=0,
        replies=["hello"],
        history_limit=4,
        now=now,
    )
    data = stored_json(state)
    assert b"null" in data  # the fact's None stays: dict values are data, not fields
    assert b'"thread"' not in data
    assert ConversationState.model_validate_json(data) == state
