"""Safety and human handoff through the real gateway and the HTTP API channel."""

import json
import re

import aiohttp
import pytest

from connectors.http_api.emulator import HttpChannelClient
from gateway.audit import AuditLog
from gateway.handoff import HandoffDesk
from gateway.models import Channel, ConversationKey
from gateway.state import ConversationState
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway

CORE = """
name: core
display_name: Core Bot
refusal: "Please do not send card numbers here."
agent: {kind: rules, options: {rules: [{keywords: [hello], reply: 'Hello $user_name!'}],
        fallback: 'bot fallback'}}
"""


@pytest.fixture
def personas_dir(tmp_path):
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "core.yaml").write_text(CORE)
    return folder


def config(store_url, receiver, personas_dir, **extra):
    data = base_config(store_url, tenants=[http_tenant(receiver.url)], **extra)
    data["personas_dir"] = str(personas_dir)
    data["routing"] = {"default_persona": "core"}
    return data


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


def client(gateway, session):
    return HttpChannelClient(
        session=session, base_url=gateway.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
    )


def texts(receiver, conversation_id, thread=None):
    return [
        cb.payload["text"]
        for cb in receiver.unique()
        if cb.payload["conversation_id"] == conversation_id and cb.payload["thread"] == thread
    ]


async def operator_says(gateway, session, thread, text, *, event_id):
    body = {
        "conversation_id": "operators",
        "thread": thread,
        "user": {"id": "op-bob", "name": "Bob"},
        "text": text,
        "event_id": event_id,
    }
    async with session.post(
        f"{gateway.url}/v1/channels/http/acme/messages",
        json=body,
        headers={"Authorization": f"Bearer {SECRETS['T_API_KEY']}"},
    ) as response:
        assert response.status == 202


async def test_handoff_round_trip_over_the_http_channel(store_url, receiver, personas_dir, session):
    """/human hands off; the bot is quiet; operators' thread replies reach the customer."""
    data = config(
        store_url,
        receiver,
        personas_dir,
        handoff={
            "operators": {"tenant": "acme", "channel": "http", "conversation_id": "operators"}
        },
    )
    customer = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="cust-1")
    thread = HandoffDesk.thread_for(customer)
    async with running_gateway(data) as gw:
        web = client(gw, session)
        await web.send(conversation_id="cust-1", text="hello", user_name="Alice", event_id="e1")
        await eventually(lambda: texts(receiver, "cust-1") == ["Hello Alice!"])

        await web.send(conversation_id="cust-1", text="/human", user_name="Alice", event_id="e2")
        await eventually(lambda: len(texts(receiver, "cust-1")) == 2)
        assert "person from our team" in texts(receiver, "cust-1")[1]
        announcement = await eventually(lambda: texts(receiver, "operators", thread))
        assert "Alice on http" in announcement[0]
        assert "customer: hello" in announcement[0]

        await web.send(conversation_id="cust-1", text="are you there?", event_id="e3")
        await eventually(lambda: len(texts(receiver, "operators", thread)) == 2)
        assert texts(receiver, "operators", thread)[1] == "are you there?"

        await operator_says(gw, session, thread, "Hi Alice, Bob here.", event_id="o1")
        await eventually(lambda: len(texts(receiver, "cust-1")) == 3)
        relayed = [
            cb.payload for cb in receiver.unique() if cb.payload["conversation_id"] == "cust-1"
        ]
        assert relayed[2]["text"] == "Hi Alice, Bob here."
        assert relayed[2]["persona"]["display_name"] == "Support team"
        assert texts(receiver, "cust-1")[:2] == ["Hello Alice!", texts(receiver, "cust-1")[1]]

        await operator_says(gw, session, thread, "/release", event_id="o2")
        await eventually(lambda: len(texts(receiver, "cust-1")) == 4)
        assert "back with the assistant" in texts(receiver, "cust-1")[3]
        await eventually(lambda: texts(receiver, "operators", thread)[-1].startswith("Released"))

        await web.send(
            conversation_id="cust-1", text="hello again", user_name="Alice", event_id="e4"
        )
        await eventually(lambda: texts(receiver, "cust-1")[-1:] == ["Hello Alice!"])

        store = gw.runtime.store
        raw = await store.get_state(gw.runtime.keyspace.state(customer.key))
        state = ConversationState.model_validate_json(raw.value)
        assert "handoff" not in state.facts
        assert any(
            h.persona == "operator" and h.text == "Hi Alice, Bob here." for h in state.history
        )


async def test_operator_message_outside_a_handoff_sends_nothing(
    tmp_path, receiver, personas_dir, session
):
    """Operators writing in an unknown thread, or top-level, reach no customer and get no answer."""
    data = config(
        f"sqlite:///{tmp_path}/gw.db",
        receiver,
        personas_dir,
        handoff={
            "operators": {"tenant": "acme", "channel": "http", "conversation_id": "operators"}
        },
    )
    async with running_gateway(data) as gw:
        await operator_says(gw, session, "handoff-unknown", "hello", event_id="o1")
        await operator_says(gw, session, None, "hello", event_id="o2")
        web = client(gw, session)
        await web.send(conversation_id="cust-2", text="hello", event_id="e1")
        await eventually(lambda: texts(receiver, "cust-2"))
        assert [cb.payload["conversation_id"] for cb in receiver.unique()] == ["cust-2"]


# The card's digits, standing alone: a timestamp's microseconds may hold "4111" by chance.
_CARD_DIGITS = re.compile(r"4111 1111|1111 1111|(?<![0-9A-Za-z])4111(?![0-9A-Za-z])")


async def test_card_number_is_refused_audited_and_not_kept(
    tmp_path, receiver, personas_dir, session
):
    """A pasted card gets the persona's refusal; the audit log and history hold no digits."""
    data = config(f"sqlite:///{tmp_path}/gw.db", receiver, personas_dir)
    async with running_gateway(data) as gw:
        web = client(gw, session)
        await web.send(
            conversation_id="cust-3", text="hello, card 4111 1111 1111 1111", event_id="e1"
        )
        await eventually(lambda: texts(receiver, "cust-3"))
        assert texts(receiver, "cust-3") == ["Please do not send card numbers here."]
        rt = gw.runtime
        events = await AuditLog(rt.store, rt.keyspace).read(tenant="acme")
        safety = [e for _, e in events if e.action == "safety.block"]
        assert len(safety) == 1
        assert safety[0].detail["findings"] == ["card_number"]
        assert not _CARD_DIGITS.search(safety[0].model_dump_json())
        key = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="cust-3").key
        raw = await rt.store.get_state(rt.keyspace.state(key))
        assert not _CARD_DIGITS.search(raw.value.decode())
        assert "[redacted:card_number]" in json.loads(raw.value)["history"][0]["text"]


async def test_flagged_message_is_answered_and_audited(tmp_path, receiver, personas_dir, session):
    """A flag rule lets the agent answer and records a safety.flag audit event."""
    data = config(
        f"sqlite:///{tmp_path}/gw.db",
        receiver,
        personas_dir,
        safety={"rules": [{"name": "iban", "pattern": r"\bDE\d{20}\b", "action": "flag"}]},
    )
    async with running_gateway(data) as gw:
        web = client(gw, session)
        await web.send(conversation_id="c4", text="hello DE89370400440532013000", event_id="e1")
        await eventually(lambda: texts(receiver, "c4"))
        assert texts(receiver, "c4") == ["Hello user-1!"]
        rt = gw.runtime
        events = await AuditLog(rt.store, rt.keyspace).read(tenant="acme")
        assert [e.action for _, e in events if e.action.startswith("safety.")] == ["safety.flag"]


def test_handoff_operators_must_name_a_configured_channel(tmp_path, personas_dir):
    """A handoff whose operators' tenant has no channel of that kind is a config error."""
    from gateway.config import parse_config
    from gateway.errors import ConfigError

    data = base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[http_tenant(None)])
    data["personas_dir"] = str(personas_dir)
    data["handoff"] = {"operators": {"tenant": "acme", "channel": "slack", "conversation_id": "C1"}}
    with pytest.raises(ConfigError, match=r"handoff\.operators"):
        parse_config(data)
    data["handoff"]["operators"]["channel"] = "http"
    assert parse_config(data).handoff.operators.conversation_id == "C1"
