"""Contacts through the admin API, on a served gateway with two tenants: an operator links
one person's identities, pages through the book, is refused a link another contact holds;
a key of another tenant is refused (403) and another tenant's contact is not found (404);
the audit names the change but never the identity; the agent is given the contact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from connectors.http_api.emulator import CallbackReceiver
from gateway.admin.keys import Role, create_key
from gateway.audit import digest
from gateway.client import AdminClient, ChannelClient, Conflict, NotFound, PermissionDenied
from tests.harness import SECRETS, RunningGateway, base_config, http_tenant, running_gateway


@dataclass(slots=True)
class Book:
    gw: RunningGateway
    operator: AdminClient  # global operator
    admin: AdminClient  # global admin
    acme: AdminClient  # acme-scoped operator
    beta: AdminClient  # beta-scoped admin
    channel: ChannelClient  # acme's HTTP channel


@pytest.fixture
def personas_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "personas"
    folder.mkdir()
    core = {
        "name": "core",
        "display_name": "Acme Helper",
        "agent": {
            "kind": "rules",
            "options": {"fallback": "Hi $user_name, known as $contact_name."},
        },
    }
    (folder / "core.yaml").write_text(yaml.safe_dump(core), encoding="utf-8")
    return folder


@pytest.fixture
async def book(
    store_url: str, receiver: CallbackReceiver, personas_dir: Path
) -> AsyncIterator[Book]:
    data = base_config(
        store_url,
        tenants=[http_tenant(receiver.url), http_tenant(receiver.url, tenant="beta")],
        personas_dir=str(personas_dir),
        routing={"default_persona": "core"},
    )
    async with running_gateway(data) as gw:
        rt = gw.runtime
        assert rt.store is not None
        tokens = {}
        for name, role, tenant in (
            ("operator", Role.OPERATOR, None),
            ("admin", Role.ADMIN, None),
            ("acme", Role.OPERATOR, "acme"),
            ("beta", Role.ADMIN, "beta"),
        ):
            _, tokens[name] = await create_key(
                rt.store, rt.keyspace, name=name, role=role, tenant=tenant
            )
        async with (
            AdminClient(gw.ops_url, tokens["operator"]) as operator,
            AdminClient(gw.ops_url, tokens["admin"]) as admin,
            AdminClient(gw.ops_url, tokens["acme"]) as acme,
            AdminClient(gw.ops_url, tokens["beta"]) as beta,
            ChannelClient(gw.url, "acme", api_key=SECRETS["T_API_KEY"]) as channel,
        ):
            yield Book(gw, operator, admin, acme, beta, channel)


async def test_an_operator_links_identities_and_the_agent_is_given_the_contact(
    book: Book, receiver: CallbackReceiver
) -> None:
    ops = book.acme
    made = await ops.put_contact("acme", "alice", name="Alice Example", emails=["A@Example.com"])
    assert (made.name, made.emails, made.identities) == ("Alice Example", ["a@example.com"], [])
    linked = await ops.link_contact_identity("acme", "alice", "http", "u-alice")
    linked = await ops.link_contact_identity("acme", "alice", "slack", "U0ALICE")
    assert [(i.channel, i.id) for i in linked.identities] == [
        ("http", "u-alice"),
        ("slack", "U0ALICE"),
    ]
    # Linking again where it is changes nothing; elsewhere it is refused, nothing changes.
    assert await ops.link_contact_identity("acme", "alice", "http", "u-alice") == linked
    await ops.put_contact("acme", "bob", name="Bob")
    with pytest.raises(Conflict):
        await ops.link_contact_identity("acme", "bob", "http", "u-alice")
    with pytest.raises(Conflict):
        await ops.put_contact("acme", "bob", name="Bob", emails=["a@example.com"])
    assert (await ops.get_contact("acme", "bob")).identities == []

    # The agent is given the contact's name (the sender gave none on the HTTP channel).
    await book.channel.send("c1", "hello", user_id="u-alice")
    [callback] = await receiver.wait_for(1)
    assert callback.payload["text"] == "Hi Alice Example, known as Alice Example."

    after = await ops.unlink_contact_identity("acme", "alice", "http", "u-alice")
    assert [(i.channel, i.id) for i in after.identities] == [("slack", "U0ALICE")]
    with pytest.raises(NotFound):
        await ops.unlink_contact_identity("acme", "alice", "http", "u-alice")
    # Deleting needs the admin role.
    with pytest.raises(PermissionDenied):
        await ops.delete_contact("acme", "alice")
    await book.admin.delete_contact("acme", "alice")
    with pytest.raises(NotFound):
        await ops.get_contact("acme", "alice")
    await book.channel.send("c1", "hello", user_id="u-alice")
    callbacks = await receiver.wait_for(2)
    assert callbacks[1].payload["text"] == "Hi u-alice, known as u-alice."


async def test_the_list_pages_by_id(book: Book) -> None:
    for n in range(5):
        await book.operator.put_contact("acme", f"c{n}", name=f"Person {n}")
    first = await book.operator.list_contacts("acme", limit=2)
    assert [c.id for c in first.contacts] == ["c0", "c1"]
    second = await book.operator.list_contacts("acme", limit=2, after=first.next)
    third = await book.operator.list_contacts("acme", limit=2, after=second.next)
    assert [c.id for c in second.contacts + third.contacts] == ["c2", "c3", "c4"]
    assert third.next is None


async def test_attack_another_tenants_key_and_contacts_stay_out_of_reach(book: Book) -> None:
    await book.acme.put_contact("acme", "alice", name="Alice", emails=["alice@example.com"])
    await book.acme.link_contact_identity("acme", "alice", "http", "u-alice")
    # beta's key, admin though it is, reaches none of acme's routes: 403, as elsewhere.
    with pytest.raises(PermissionDenied):
        await book.beta.list_contacts("acme")
    with pytest.raises(PermissionDenied):
        await book.beta.get_contact("acme", "alice")
    with pytest.raises(PermissionDenied):
        await book.beta.link_contact_identity("acme", "alice", "http", "u-mallory")
    with pytest.raises(PermissionDenied):
        await book.beta.delete_contact("acme", "alice")
    # acme's key on beta's routes: 403 too.
    with pytest.raises(PermissionDenied):
        await book.acme.list_contacts("beta")
    # A contact id is per tenant: beta's book has no "alice", and linking into its own
    # "alice" does not touch acme's.
    with pytest.raises(NotFound):
        await book.beta.get_contact("beta", "alice")
    await book.beta.put_contact("beta", "alice", name="Another Alice")
    await book.beta.link_contact_identity("beta", "alice", "http", "u-alice")
    acme_alice = await book.acme.get_contact("acme", "alice")
    assert (acme_alice.name, [i.id for i in acme_alice.identities]) == ("Alice", ["u-alice"])
    assert [c.id for c in (await book.beta.list_contacts("beta")).contacts] == ["alice"]


async def test_the_audit_names_the_change_never_the_identity(book: Book) -> None:
    await book.acme.put_contact("acme", "alice", name="Alice")
    await book.acme.link_contact_identity("acme", "alice", "whatsapp", "whatsapp:+15551234567")
    await book.acme.unlink_contact_identity("acme", "alice", "whatsapp", "whatsapp:+15551234567")
    events = (await book.admin.list_audit_events(tenant="acme")).events
    actions = [e.event.action for e in events]
    assert actions[-3:] == ["putContact", "linkContactIdentity", "unlinkContactIdentity"]
    for item in events[-3:]:
        assert "+15551234567" not in item.event.model_dump_json()
    link, unlink = events[-2].event, events[-1].event
    assert link.detail == {"channel": "whatsapp", "identity": digest("whatsapp:+15551234567")}
    assert unlink.target["identity"] == digest("whatsapp:+15551234567")
