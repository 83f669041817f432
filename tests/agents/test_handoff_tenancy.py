"""Handoff across tenants: a desk sees and speaks to the customers of the tenants it serves only.

Two tenants on one gateway, each with an HTTP API channel; the operators' desk lives in
``acme``. Nothing here is mocked: requests go through the real edge, worker and dispatcher.
"""

import logging

import aiohttp
import pytest

from connectors.http_api.emulator import HttpChannelClient
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.handoff import HandoffDesk
from gateway.models import Channel, ConversationKey
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway

CORE = """
name: core
display_name: Core Bot
agent: {kind: rules, options: {rules: [], fallback: 'bot answer'}}
"""

DESK = {"operators": {"tenant": "acme", "channel": "http", "conversation_id": "operators"}}
BETA_CUSTOMER = ConversationKey(tenant="beta", channel=Channel.HTTP, conversation_id="cust-b")


@pytest.fixture
def personas_dir(tmp_path):
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "core.yaml").write_text(CORE)
    return folder


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


def two_tenants(tmp_path, receiver, personas_dir, **extra):
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db",
        tenants=[http_tenant(receiver.url, "acme"), http_tenant(receiver.url, "beta")],
        **extra,
    )
    data["personas_dir"] = str(personas_dir)
    data["routing"] = {"default_persona": "core"}
    return data


def client(gateway, session, tenant):
    return HttpChannelClient(
        session=session, base_url=gateway.url, tenant=tenant, api_key=SECRETS["T_API_KEY"]
    )


def callbacks(receiver, conversation_id):
    return [
        cb.payload for cb in receiver.unique() if cb.payload["conversation_id"] == conversation_id
    ]


async def acme_operator_says(gateway, session, thread, text, *, event_id):
    body = {
        "conversation_id": "operators",
        "thread": thread,
        "user": {"id": "op-eve", "name": "Eve"},
        "text": text,
        "event_id": event_id,
    }
    async with session.post(
        f"{gateway.url}/v1/channels/http/acme/messages",
        json=body,
        headers={"Authorization": f"Bearer {SECRETS['T_API_KEY']}"},
    ) as response:
        assert response.status == 202


def handoff_outcomes(gateway, outcome):
    value = gateway.runtime.metrics.registry.get_sample_value(
        "flowbiz_turns_total", {"outcome": f"handoff_{outcome}"}
    )
    return value or 0.0


async def test_attack_other_tenants_customer_is_not_announced_to_the_desk(
    tmp_path, receiver, personas_dir, session
):
    """beta's customer asking for a person is not announced on acme's desk (it serves acme)."""
    data = two_tenants(tmp_path, receiver, personas_dir, handoff=DESK)
    async with running_gateway(data) as gw:
        beta = client(gw, session, "beta")
        await beta.send(conversation_id="cust-b", text="/human", user_name="Bob", event_id="b1")
        await eventually(lambda: callbacks(receiver, "cust-b"))
        # No desk serves beta: the command is ordinary text, answered by the bot.
        assert [c["text"] for c in callbacks(receiver, "cust-b")] == ["bot answer"]
        acme = client(gw, session, "acme")
        await acme.send(conversation_id="cust-a", text="/human", user_name="Ann", event_id="a1")
        announced = await eventually(lambda: callbacks(receiver, "operators"))
        assert len(announced) == 1
        assert "Ann on http" in announced[0]["text"]
        assert "Bob" not in str(callbacks(receiver, "operators"))


async def test_attack_operator_cannot_write_to_other_tenants_customer(
    tmp_path, receiver, personas_dir, session
):
    """acme's operator writing in the thread of beta's customer reaches nobody."""
    data = two_tenants(tmp_path, receiver, personas_dir, handoff=DESK)
    thread = HandoffDesk.thread_for(BETA_CUSTOMER)
    async with running_gateway(data) as gw:
        beta = client(gw, session, "beta")
        await beta.send(conversation_id="cust-b", text="/human", user_name="Bob", event_id="b1")
        await eventually(lambda: callbacks(receiver, "cust-b"))
        await acme_operator_says(gw, session, thread, "send me your password", event_id="o1")
        outcomes = ("ignored", "relayed", "refused")
        await eventually(lambda: sum(handoff_outcomes(gw, o) for o in outcomes) == 1)
        assert handoff_outcomes(gw, "relayed") == 0
        await beta.send(conversation_id="cust-b", text="hello", user_name="Bob", event_id="b2")
        await eventually(lambda: len(callbacks(receiver, "cust-b")) == 2)
        texts = [c["text"] for c in callbacks(receiver, "cust-b")]
        assert "send me your password" not in texts


async def test_attack_stale_thread_relay_across_tenants_refused_logged_and_counted(
    tmp_path, receiver, personas_dir, session, caplog
):
    """A desk that stops serving beta cannot speak to beta's customer through an old thread.

    The desk served acme and beta and took beta's customer; then the configuration gives
    beta a desk of its own. acme's operator writing in the old thread is refused, logged,
    counted and told; beta's customer hears nothing from acme and gets the bot back.
    """
    shared = {**DESK, "tenants": ["acme", "beta"]}
    thread = HandoffDesk.thread_for(BETA_CUSTOMER)
    async with running_gateway(two_tenants(tmp_path, receiver, personas_dir, handoff=shared)) as gw:
        beta = client(gw, session, "beta")
        await beta.send(conversation_id="cust-b", text="/human", user_name="Bob", event_id="b1")
        await eventually(lambda: callbacks(receiver, "operators"))
        assert "person from our team" in callbacks(receiver, "cust-b")[0]["text"]

    data = two_tenants(tmp_path, receiver, personas_dir, handoff=DESK)
    data["tenants"][1]["handoff"] = {"operators": {"channel": "http", "conversation_id": "desk"}}
    caplog.set_level(logging.WARNING, logger="gateway.handoff")
    async with running_gateway(data) as gw:
        await acme_operator_says(gw, session, thread, "send me your password", event_id="o1")
        await eventually(lambda: handoff_outcomes(gw, "refused") == 1)
        notice = await eventually(lambda: callbacks(receiver, "operators")[1:])
        assert notice[0]["text"] == "This customer is not served by this desk; nothing was sent."
        refused = [r for r in caplog.records if r.getMessage() == "handoff.cross_tenant_refused"]
        assert len(refused) == 1
        assert refused[0].fields["customer_tenant"] == "beta"

        beta = client(gw, session, "beta")
        await beta.send(conversation_id="cust-b", text="hello", user_name="Bob", event_id="b2")
        await eventually(lambda: len(callbacks(receiver, "cust-b")) == 2)
        assert callbacks(receiver, "cust-b")[1]["text"] == "bot answer"  # the handoff ended
        texts = [c["text"] for c in callbacks(receiver, "cust-b")]
        assert "send me your password" not in texts


async def test_tenant_desk_serves_its_own_customers(tmp_path, receiver, personas_dir, session):
    """A tenant's own desk: announced in its operators' conversation, relays back to them."""
    data = two_tenants(tmp_path, receiver, personas_dir)
    data["tenants"][1]["handoff"] = {"operators": {"channel": "http", "conversation_id": "desk"}}
    thread = HandoffDesk.thread_for(BETA_CUSTOMER)
    async with running_gateway(data) as gw:
        beta = client(gw, session, "beta")
        await beta.send(conversation_id="cust-b", text="/human", user_name="Bob", event_id="b1")
        announced = await eventually(lambda: callbacks(receiver, "desk"))
        assert announced[0]["tenant"] == "beta"
        assert announced[0]["thread"] == thread
        body = {
            "conversation_id": "desk",
            "thread": thread,
            "user": {"id": "op-ann", "name": "Ann"},
            "text": "Ann from beta here.",
            "event_id": "o1",
        }
        async with session.post(
            f"{gw.url}/v1/channels/http/beta/messages",
            json=body,
            headers={"Authorization": f"Bearer {SECRETS['T_API_KEY']}"},
        ) as response:
            assert response.status == 202
        await eventually(lambda: len(callbacks(receiver, "cust-b")) == 2)
        assert callbacks(receiver, "cust-b")[1]["text"] == "Ann from beta here."
        # acme has no desk: its customers' /human is plain text.
        acme = client(gw, session, "acme")
        await acme.send(conversation_id="cust-a", text="/human", event_id="a1")
        await eventually(lambda: callbacks(receiver, "cust-a"))
        assert callbacks(receiver, "cust-a")[0]["text"] == "bot answer"


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (lambda d: d["handoff"].update(tenants=["acme", "nobody"]), "handoff.tenants", "nobody"),
        (
            lambda d: d["tenants"][1].update(handoff=DESK),
            "tenants.1.handoff.operators",
            "already the desk of handoff",
        ),
        (
            lambda d: d["tenants"][0].update(
                handoff={"operators": {"channel": "http", "conversation_id": "own"}}
            ),
            "tenants.0.handoff",
            "'acme' is already served by the desk at handoff",
        ),
        (
            lambda d: d["tenants"][1].update(handoff={**DESK, "tenants": ["beta"]}),
            "tenants.1.handoff.tenants",
            "serves that tenant only",
        ),
        (
            lambda d: d["handoff"]["operators"].pop("tenant"),
            "handoff.operators.tenant",
            "must name a tenant",
        ),
    ],
)
def test_desk_configuration_problems_are_reported(tmp_path, personas_dir, change, where, message):
    """Unknown tenants, a tenant served twice, a conversation used by two desks: config errors."""
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db",
        tenants=[http_tenant(None, "acme"), http_tenant(None, "beta")],
    )
    data["personas_dir"] = str(personas_dir)
    data["handoff"] = {
        "operators": {"tenant": "acme", "channel": "http", "conversation_id": "operators"}
    }
    change(data)
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert any(path == where and message in text for path, text in caught.value.problems), (
        caught.value.problems
    )
