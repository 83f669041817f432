"""The WhatsApp edge stores the verified form as Twilio sent it; the worker parses it.

What moved from the acknowledged path to the worker keeps its meaning: the window replies
see opens when the edge received the message, and a form the parser cannot read is kept
whole and can be replayed.
"""

from __future__ import annotations

import aiohttp

from connectors.whatsapp.emulator import TwilioEmulator
from gateway.deadletters import DeadLetter, list_dead_letters, replay
from gateway.envelope import RawEvent, is_raw_event
from gateway.models import conversation_key_of
from gateway.state import ConversationState
from tests.connectors.whatsapp.conftest import ConfigFactory
from tests.connectors.whatsapp.support import CUSTOMER, SENDER, conversation, sender_for
from tests.harness import RunningGateway, eventually, running_gateway


async def _stored_events(gw: RunningGateway) -> list[RawEvent]:
    store, keys = gw.runtime.store, gw.runtime.keyspace
    assert store is not None
    return [
        RawEvent.model_validate_json(entry.payload)
        for p in range(keys.partitions)
        for entry in await store.range(keys.inbox(p), count=1000)
        if is_raw_event(entry.payload)
    ]


async def test_the_inbox_holds_the_signed_form_and_the_admission_keys(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """One envelope per message: the form as posted, MessageSid as the event id, the
    customer's conversation, the channel block it came through."""
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        params = sender.inbound(from_=CUSTOMER, to=SENDER, body="hi", profile_name="Zoë")
        assert (await sender.post(params))[0] == 200
        await emulator.wait_for(1)
        [event] = await _stored_events(gw)
        assert event.event == params
        assert event.event_id == params["MessageSid"]
        assert (event.tenant, event.channel.value, event.source) == ("acme", "whatsapp", "whatsapp")
        assert event.conversation == conversation_key_of("acme", "whatsapp", CUSTOMER, None)


async def test_the_window_opens_when_the_edge_received_the_message(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """The conversation's last inbound time (what the 24-hour window is measured from) is
    the edge's receipt time kept in the envelope, not the time the worker parsed it."""
    async with running_gateway(make_config()) as gw:
        await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body="hello")
        await emulator.wait_for(1)
        [event] = await _stored_events(gw)
        store = gw.runtime.store
        assert store is not None
        current = await store.get_state(gw.runtime.keyspace.state(conversation().key))
        assert current is not None
        state = ConversationState.model_validate_json(current.value)
        assert state.last_inbound_at == event.received_at


async def test_a_dead_lettered_form_replays_onto_the_inbox_as_it_came(
    make_config: ConfigFactory, emulator: TwilioEmulator, http: aiohttp.ClientSession
) -> None:
    """A signed form the parser cannot read is acknowledged, dead-lettered with its reason,
    and an operator's replay puts the same envelope back on the inbox, where it is parsed
    again (once: a second replay of the letter is refused)."""
    async with running_gateway(make_config()) as gw:
        sender = sender_for(gw, http)
        params = {**sender.inbound(from_=CUSTOMER, to=SENDER, body="x"), "NumMedia": "2"}
        params["MediaUrl0"] = "https://api.twilio.com/m/1"
        assert (await sender.post(params))[0] == 200
        rt = gw.runtime
        assert rt.store is not None
        [(handle, first)] = await eventually(lambda: list_dead_letters(rt.store, rt.keyspace))
        assert first.reason == "bad_media: MediaUrl1 is missing"
        assert await replay(rt.store, rt.keyspace, handle)
        assert not await replay(rt.store, rt.keyspace, handle)

        async def letters_again() -> list[DeadLetter]:
            letters = await list_dead_letters(rt.store, rt.keyspace)
            return [letter for _, letter in letters if letter.id != first.id]

        [second] = await eventually(letters_again)
        assert second.raw == first.raw  # byte for byte the same envelope
        assert second.reason == first.reason
        assert emulator.messages == []
