"""Contacts on every store: the book's compare-and-set keeps one identity on one contact,
even when writers race, and its indexes agree with the contacts they point to; the name
cache keeps what a platform said and remembers a failure only briefly."""

from __future__ import annotations

import asyncio

import pytest

from gateway.contacts import (
    ContactBook,
    ContactIdentity,
    IdentityTaken,
    NameCache,
    Profile,
    UnknownContact,
    sender_contact,
)
from gateway.metrics import Metrics
from gateway.models import Channel, ConversationKey, InboundMessage, Participant
from gateway.store import Keyspace, Store

KS = Keyspace(prefix="fb", partitions=8)
ALICE_SLACK = ContactIdentity(channel=Channel.SLACK, id="U0ALICE")
ALICE_LINE = ContactIdentity(channel=Channel.LINE, id="U" + "a1" * 16)


async def test_link_unlink_and_the_indexes_agree(store: Store) -> None:
    book = ContactBook(store, KS)
    await book.put("acme", "alice", name="Alice", emails=["Alice@Example.com"])
    await book.link("acme", "alice", ALICE_SLACK)
    contact = await book.link("acme", "alice", ALICE_LINE)
    assert contact.identities == (ALICE_SLACK, ALICE_LINE)
    assert contact.emails == ("alice@example.com",)
    assert contact.channels == ("slack", "line")
    found = await book.of_identity("acme", Channel.LINE, ALICE_LINE.id)
    assert found is not None
    assert found.id == "alice"
    # Another tenant's book knows nothing of it.
    assert await book.of_identity("beta", Channel.LINE, ALICE_LINE.id) is None
    assert await book.get("beta", "alice") is None

    await book.unlink("acme", "alice", ALICE_SLACK)
    assert await book.of_identity("acme", Channel.SLACK, "U0ALICE") is None
    await book.delete("acme", "alice")
    assert await book.of_identity("acme", Channel.LINE, ALICE_LINE.id) is None
    assert await store.get_record(KS.contact_email("acme", "alice@example.com")) is None
    with pytest.raises(UnknownContact):
        await book.delete("acme", "alice")


async def test_racing_links_of_one_identity_leave_it_on_one_contact(store: Store) -> None:
    book = ContactBook(store, KS)
    for name in ("a", "b", "c", "d"):
        await book.put("acme", name, name=name, emails=[])

    async def link(name: str) -> str | None:
        try:
            await book.link("acme", name, ALICE_SLACK)
        except IdentityTaken:
            return None
        return name

    won = [w for w in await asyncio.gather(*(link(n) for n in "abcd")) if w is not None]
    assert len(won) == 1
    holders = [c.id for c in await book.page("acme") if c.has(ALICE_SLACK)]
    assert holders == won
    indexed = await book.of_identity("acme", Channel.SLACK, "U0ALICE")
    assert indexed is not None
    assert indexed.id == won[0]


async def test_verified_email_links_into_the_contact_holding_it(store: Store) -> None:
    book = ContactBook(store, KS)
    await book.put("acme", "alice", name="Alice", emails=["alice@example.com"])
    linked = await book.link_verified("acme", ALICE_SLACK, "ALICE@example.com", name="Al")
    assert linked is not None
    assert linked.id == "alice"
    assert linked.identities == (ALICE_SLACK,)
    # A second verified sighting changes nothing; an unknown address makes its own contact.
    assert await book.link_verified("acme", ALICE_SLACK, "alice@example.com", name=None) is None
    bob = ContactIdentity(channel=Channel.SLACK, id="U0BOB")
    made = await book.link_verified("acme", bob, "bob@example.com", name="Bob")
    assert made is not None
    assert made.emails == ("bob@example.com",)
    assert made.name == "Bob"
    # An operator's link is never undone by a verified address.
    carol = ContactIdentity(channel=Channel.SLACK, id="U0CAROL")
    await book.put("acme", "carol", name="Carol", emails=[])
    await book.link("acme", "carol", carol)
    assert await book.link_verified("acme", carol, "alice@example.com", name=None) is None
    still = await book.of_identity("acme", Channel.SLACK, "U0CAROL")
    assert still is not None
    assert still.id == "carol"


async def test_pages_follow_ids(store: Store) -> None:
    book = ContactBook(store, KS)
    for n in range(7):
        await book.put("acme", f"c{n}", name=None, emails=[])
    first = await book.page("acme", limit=3)
    second = await book.page("acme", limit=3, after=first[-1].id)
    third = await book.page("acme", limit=3, after=second[-1].id)
    assert [c.id for c in first + second + third] == [f"c{n}" for n in range(7)]


async def test_forget_deletes_a_contact_left_without_identities(store: Store) -> None:
    book = ContactBook(store, KS)
    await book.put("acme", "alice", name="Alice", emails=["alice@example.com"])
    await book.link("acme", "alice", ALICE_SLACK)
    await book.link("acme", "alice", ALICE_LINE)
    assert await book.forget("acme", [ALICE_SLACK]) == 1
    kept = await book.get("acme", "alice")
    assert kept is not None
    assert kept.identities == (ALICE_LINE,)
    assert await book.forget("acme", [ALICE_LINE]) == 1
    assert await book.get("acme", "alice") is None
    assert await store.get_record(KS.contact_email("acme", "alice@example.com")) is None
    assert await store.scan(KS.contact_prefix("acme")) == []


async def test_name_cache_keeps_answers_and_failures_for_their_own_time(store: Store) -> None:
    metrics = Metrics()
    ttl = {"ok": 3600.0, "failed": 0.3}
    cache = NameCache(
        store=lambda: store,
        keyspace=KS,
        metrics=metrics,
        ttl=lambda: ttl["ok"],
        failure_ttl=lambda: ttl["failed"],
    )
    calls: list[str] = []

    async def answer() -> Profile | None:
        calls.append("ok")
        return Profile(name="Alice\r\nBcc: x@example.com", verified_email="A@Example.com")

    async def broken() -> Profile | None:
        calls.append("broken")
        raise ConnectionError("platform down")

    profile = await cache.resolve("acme", "slack", "U0ALICE", answer)
    assert profile == Profile(name="Alice Bcc: x@example.com", verified_email="a@example.com")
    assert await cache.resolve("acme", "slack", "U0ALICE", answer) == profile
    assert calls == ["ok"]  # the second came from the store

    assert await cache.resolve("acme", "slack", "U0BOB", broken) is None
    assert await cache.resolve("acme", "slack", "U0BOB", broken) is None
    assert calls == ["ok", "broken"]  # the failure is remembered…
    await asyncio.sleep(0.6)
    assert await cache.resolve("acme", "slack", "U0BOB", answer) is not None
    assert calls == ["ok", "broken", "ok"]  # …only briefly
    counted = {
        s.labels["outcome"]: s.value
        for m in metrics.registry.collect()
        if m.name == "flowbiz_contact_lookups"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert counted == {"fetched": 2.0, "cached": 2.0, "failed": 1.0}


async def test_attack_an_email_from_a_contacts_address_is_not_linked_to_it(store: Store) -> None:
    """The gateway does not verify inbound mail (no DKIM/SPF/DMARC verdict is kept), so a
    From address proves nothing: the worker's step links only what a platform vouched for."""
    book = ContactBook(store, KS)
    await book.put("acme", "alice", name="Alice", emails=["alice@example.com"])
    spoofed = InboundMessage(
        event_id="<forged@evil.example>",
        conversation=ConversationKey(
            tenant="acme", channel=Channel.EMAIL, conversation_id="<forged@evil.example>"
        ),
        sender=Participant(id="alice@example.com", display_name="Alice"),
        text="please send my invoices to evil@example.net",
    )
    assert await sender_contact(book, spoofed) is None
    kept = await book.get("acme", "alice")
    assert kept is not None
    assert kept.identities == ()
    vouched = InboundMessage(
        event_id="Ev1",
        conversation=ConversationKey(tenant="acme", channel=Channel.SLACK, conversation_id="D1"),
        sender=Participant(id="U0ALICE", verified_email="alice@example.com"),
        text="hello",
    )
    linked = await sender_contact(book, vouched)
    assert linked is not None
    assert (linked.id, linked.identities) == ("alice", (ALICE_SLACK,))
