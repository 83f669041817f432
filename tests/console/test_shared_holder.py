"""One handoff state, two desks: whoever answers first holds the conversation, and the
console and the desk's thread both show it. The desk here is an HTTP operators'
conversation (the relay path every desk uses); the console acts through
:mod:`gateway.takeover` as its pages do."""

from __future__ import annotations

import aiohttp
import pytest

from connectors.http_api.emulator import HttpChannelClient
from gateway.conversations import read_state
from gateway.handoff import HandoffDesk, handoff_status, holder_of
from gateway.models import Channel, ConversationKey, PersonaPresentation
from gateway.takeover import HandoffActions
from tests.harness import SECRETS, base_config, eventually, http_tenant, running_gateway

CUSTOMER = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="cust-1")


def _callbacks(receiver, conversation_id):
    return [c.payload for c in receiver.unique() if c.payload["conversation_id"] == conversation_id]


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


async def test_first_answer_from_the_desk_holds_it_and_the_console_sees_it(
    tmp_path, receiver, channel_env, session
):
    data = base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[http_tenant(receiver.url)])
    data["tenants"][0]["handoff"] = {"operators": {"channel": "http", "conversation_id": "desk"}}
    async with running_gateway(data) as gw:
        rt = gw.runtime
        customer = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        await customer.send(
            conversation_id="cust-1", text="/human", user_name="Cleo", event_id="c1"
        )
        await eventually(lambda: _callbacks(receiver, "desk"))
        state = await read_state(rt.store, rt.keyspace, CUSTOMER.key)
        assert handoff_status(state) == "waiting"

        body = {
            "conversation_id": "desk",
            "thread": HandoffDesk.thread_for(CUSTOMER),
            "user": {"id": "op-hana", "name": "Hana"},
            "text": "Hana here, looking into it.",
            "event_id": "o1",
        }
        async with session.post(
            f"{gw.url}/v1/channels/http/acme/messages",
            json=body,
            headers={"Authorization": f"Bearer {SECRETS['T_API_KEY']}"},
        ) as response:
            assert response.status == 202
        await eventually(lambda: len(_callbacks(receiver, "cust-1")) == 2)

        state = await read_state(rt.store, rt.keyspace, CUSTOMER.key)
        assert handoff_status(state) == "person"
        holder = holder_of(state.facts["handoff"])
        assert (holder["name"], holder["via"]) == ("Hana", "http")

        actions = HandoffActions(rt.worker.handoff)
        refused = await actions.reply(CUSTOMER, "Olga", "me too", reply_id="0190-1")
        assert not refused.ok
        assert refused.message == "held by Hana"
        persona = PersonaPresentation(name="core", display_name="Core")
        taken = await actions.take_over(CUSTOMER, "Olga", persona=persona, force=True)
        assert taken.ok
        # The desk's thread is told who holds it now.
        await eventually(
            lambda: any("Olga holds it now" in p["text"] for p in _callbacks(receiver, "desk"))
        )
        sent = await actions.reply(CUSTOMER, "Olga", "Olga here.", reply_id="0190-2")
        again = await actions.reply(CUSTOMER, "Olga", "Olga here.", reply_id="0190-2")
        assert sent.ok
        assert again.ok
        await eventually(lambda: len(_callbacks(receiver, "cust-1")) == 3)
        assert _callbacks(receiver, "cust-1")[2]["text"].startswith("Olga here.")
        released = await actions.release(CUSTOMER, "Olga")
        assert released.ok
        state = await read_state(rt.store, rt.keyspace, CUSTOMER.key)
        assert handoff_status(state) == "bot"
        await eventually(lambda: len(_callbacks(receiver, "cust-1")) == 4)  # released notice
        assert [p["text"] for p in _callbacks(receiver, "cust-1")].count("Olga here.") <= 1
