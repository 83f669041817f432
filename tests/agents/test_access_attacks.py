"""Who may reach a persona: attacks from customer-facing channels through the real gateway.

A customer on a channel the tenant did not mark ``internal: true`` must not reach a persona
with a host tool (``run_command``) — not by ``/persona``, not by a sticky choice made
elsewhere, not by a default — and a refused switch must look exactly like an unknown one.
"""

import json
from datetime import timedelta

import aiohttp
import pytest

from connectors.http_api.emulator import HttpChannelClient
from connectors.whatsapp.emulator import TwilioEmulator
from gateway.models import Channel, ConversationKey, utcnow
from gateway.state import ConversationState
from gateway.store import Commit, StateWrite
from tests.connectors.whatsapp.support import ACCOUNT_SID, AUTH_TOKEN, SENDER, sender_for
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway

PERSONAS = {
    "core": """
name: core
display_name: Core Bot
agent: {kind: rules, options: {rules: [{keywords: [hello], reply: 'Hello $user_name!'}],
        fallback: 'core fallback'}}
""",
    "docs": """
name: docs
display_name: Docs Bot
agent: {kind: rules, options: {fallback: 'docs here'}}
""",
    # A host tool makes a persona internal-only unless its file says otherwise.
    "oncall": """
name: oncall
display_name: Infra On-Call
tools: [run_command]
agent: {kind: rules, options: {fallback: 'oncall here'}}
""",
}


@pytest.fixture
def personas_dir(tmp_path):
    folder = tmp_path / "personas"
    folder.mkdir()
    for name, text in PERSONAS.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


def config(tmp_path, receiver, personas_dir, *, internal=False, **channel):
    tenant = http_tenant(receiver.url)
    block = tenant["channels"][0]
    if internal:
        block["internal"] = True
    block.update(channel)
    data = base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[tenant])
    data["personas_dir"] = str(personas_dir)
    data["routing"] = {"default_persona": "core"}
    return data


def client(gw, session):
    return HttpChannelClient(
        session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
    )


def replies(receiver, conversation_id, count=1):
    mine = [c.payload for c in receiver.unique() if c.payload["conversation_id"] == conversation_id]
    return mine if len(mine) >= count else None


def shown(reply):
    """Everything the customer sees of a reply, as bytes."""
    return json.dumps(
        {k: reply[k] for k in ("text", "persona", "buttons", "attachments")}, sort_keys=True
    ).encode()


async def test_attack_persona_switch_to_internal_persona_refused(
    tmp_path, receiver, personas_dir, session
):
    """`/persona oncall` on a customer channel answers byte for byte like an unknown name."""
    async with running_gateway(config(tmp_path, receiver, personas_dir)) as gw:
        web = client(gw, session)
        await web.send(conversation_id="known", text="/persona oncall uptime", event_id="e1")
        await web.send(conversation_id="unknown", text="/persona nosuchbot uptime", event_id="e2")
        [refused] = await eventually(lambda: replies(receiver, "known"))
        [unknown] = await eventually(lambda: replies(receiver, "unknown"))
        assert shown(refused) == shown(unknown)
        assert refused["persona"]["name"] == "core"
        assert "oncall" not in refused["text"]
        assert "On-Call" not in shown(refused).decode()
        # The refused choice does not stick either.
        await web.send(conversation_id="known", text="hello", user_name="Eve", event_id="e3")
        answers = await eventually(lambda: replies(receiver, "known", 2))
        assert answers[1]["text"] == "Hello Eve!"


async def test_switch_offers_only_personas_this_channel_may_reach(
    tmp_path, receiver, personas_dir, session
):
    """The unknown-persona reply lists what may be chosen here; internal channels see oncall."""
    public = config(tmp_path, receiver, personas_dir)
    async with running_gateway(public) as gw:
        await client(gw, session).send(conversation_id="p", text="/persona x", event_id="e1")
        [reply] = await eventually(lambda: replies(receiver, "p"))
    assert reply["text"].endswith("core, docs.")
    internal = config(tmp_path, receiver, personas_dir, internal=True)
    async with running_gateway(internal) as gw:
        web = client(gw, session)
        await web.send(conversation_id="i", text="/persona x", event_id="e2")
        [reply] = await eventually(lambda: replies(receiver, "i"))
        assert reply["text"].endswith("core, docs, oncall.")
        await web.send(conversation_id="i", text="/persona oncall uptime", event_id="e3")
        answers = await eventually(lambda: replies(receiver, "i", 2))
        assert (answers[1]["persona"]["name"], answers[1]["text"]) == ("oncall", "oncall here")


async def test_switch_command_can_be_turned_off_per_channel_and_tenant(
    tmp_path, receiver, personas_dir, session
):
    """With the switch off, `/persona docs` is plain text for the routed persona."""
    data = config(tmp_path, receiver, personas_dir, persona_switch=False)
    async with running_gateway(data) as gw:
        await client(gw, session).send(conversation_id="c", text="/persona docs", event_id="e1")
        [reply] = await eventually(lambda: replies(receiver, "c"))
    assert (reply["persona"]["name"], reply["text"]) == ("core", "core fallback")
    data = config(tmp_path, receiver, personas_dir)
    data["tenants"][0]["persona_switch"] = False
    async with running_gateway(data) as gw:
        await client(gw, session).send(conversation_id="t", text="/persona docs", event_id="e2")
        [reply] = await eventually(lambda: replies(receiver, "t"))
    assert (reply["persona"]["name"], reply["text"]) == ("core", "core fallback")


async def test_unreachable_default_fails_closed_logged_and_metered(
    tmp_path, receiver, personas_dir, session
):
    """A default persona this channel may not reach is not used: a neutral refusal instead."""
    data = config(tmp_path, receiver, personas_dir)
    data["routing"] = {
        "default_persona": "oncall",
        "rules": [{"persona": "oncall", "keywords": ["load"]}],
    }
    async with running_gateway(data) as gw:
        await client(gw, session).send(conversation_id="d", text="the load?", event_id="e1")
        [reply] = await eventually(lambda: replies(receiver, "d"))
        metrics = gw.runtime.metrics.render().decode()
    assert reply["text"] == "Sorry, no assistant is available on this channel."
    assert reply["persona"]["name"] != "oncall"
    assert "On-Call" not in shown(reply).decode()
    assert 'flowbiz_routing_unreachable_total{step="rule"} 1.0' in metrics
    assert 'flowbiz_routing_unreachable_total{step="default"} 1.0' in metrics


# -- sticky choices across channels (WhatsApp: one conversation per customer number) --------
OPS_NUMBER = "whatsapp:+14155230000"
CUSTOMER = "whatsapp:+14155550123"


@pytest.fixture
async def twilio():
    emulator = await TwilioEmulator(accounts={ACCOUNT_SID: AUTH_TOKEN}).start()
    yield emulator
    await emulator.stop()


def whatsapp_config(tmp_path, twilio, personas_dir, monkeypatch):
    """Tenant acme with its public number and an ops number marked internal."""
    monkeypatch.setenv("WA_TEST_AUTH_TOKEN", AUTH_TOKEN)
    common = {
        "kind": "whatsapp",
        "account_sid": ACCOUNT_SID,
        "auth_token": "env:WA_TEST_AUTH_TOKEN",
        "public_base_url": "https://wa.example.test",
        "api_base_url": twilio.url,
    }
    data = base_config(f"sqlite:///{tmp_path}/wa.db", personas_dir=str(personas_dir))
    data["routing"] = {"default_persona": "core"}
    data["tenants"] = [
        {
            "id": "acme",
            "channels": [
                {**common, "id": "public", "from_number": SENDER},
                {**common, "id": "ops", "from_number": OPS_NUMBER, "internal": True},
            ],
        }
    ]
    return data


async def stick(gw, persona):
    """The customer's conversation stuck to ``persona`` (as a choice made elsewhere leaves it)."""
    store, keys = gw.runtime.store, gw.runtime.keyspace
    conversation = ConversationKey(
        tenant="acme", channel=Channel.WHATSAPP, conversation_id=CUSTOMER
    )
    key = keys.state(conversation.key)
    current = await store.get_state(key)
    state = (
        ConversationState.model_validate_json(current.value)
        if current is not None
        else ConversationState(conversation=conversation)
    ).model_copy(update={"persona": persona, "persona_until": utcnow() + timedelta(minutes=30)})
    written = await store.commit(
        Commit(
            state=StateWrite(
                key=key,
                value=state.model_dump_json().encode(),
                expected_version=current.version if current is not None else 0,
            )
        )
    )
    assert written is not None


async def test_attack_sticky_persona_does_not_leak_across_channels(
    tmp_path, twilio, personas_dir, monkeypatch
):
    """oncall, stuck on the conversation, answers on the internal number, never the public one."""
    data = whatsapp_config(tmp_path, twilio, personas_dir, monkeypatch)
    async with running_gateway(data) as gw, aiohttp.ClientSession() as http:
        sender = sender_for(gw, http)
        await stick(gw, "oncall")
        status, _ = await sender.send(from_=CUSTOMER, to=SENDER, body="uptime?")
        assert status == 200
        [public] = await twilio.wait_for(1)
        assert (public.from_, public.body) == (SENDER, "core fallback")
        await stick(gw, "oncall")
        status, _ = await sender.send(from_=CUSTOMER, to=OPS_NUMBER, body="uptime?")
        assert status == 200
        internal = (await twilio.wait_for(2))[1]
        assert (internal.from_, internal.body) == (OPS_NUMBER, "oncall here")
