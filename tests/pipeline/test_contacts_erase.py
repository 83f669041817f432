"""GDPR: erasing a conversation takes its people's cached names and their identities on
the tenant's contacts with it (a contact left with none is deleted), and its export shows
both. Another conversation's people keep theirs."""

from __future__ import annotations

from gateway.contacts import ContactBook, ContactIdentity
from gateway.conversations import erase_conversation, export_conversation, index_records
from gateway.models import Channel, ConversationKey, InboundMessage, Participant
from gateway.store import Commit, Keyspace, Store

KS = Keyspace(prefix="fb", partitions=8)
ALICE = "U" + "a1" * 16
BOB = "U" + "b2" * 16


def _message(chat: str, sender: str, name: str) -> InboundMessage:
    return InboundMessage(
        event_id=f"ev-{chat}-{sender}",
        conversation=ConversationKey(tenant="acme", channel=Channel.LINE, conversation_id=chat),
        sender=Participant(id=sender, display_name=name),
        text="hello",
    )


async def _turn(store: Store, message: InboundMessage) -> None:
    await store.commit(Commit(records=index_records(KS, message, persona="core", dedupe_ttl=600)))
    key = KS.contact_name("acme", "line", message.sender.id)
    await store.put_record(key, f'{{"ok":true,"name":"{message.sender.display_name}"}}'.encode())


async def test_erase_takes_names_and_identities_and_export_shows_them(store: Store) -> None:
    group = _message("line:C-group", ALICE, "Alice")
    await _turn(store, group)
    await _turn(store, _message("line:C-group", BOB, "Bob"))
    await _turn(store, _message("line:C-other", BOB, "Bob"))  # Bob writes elsewhere too
    book = ContactBook(store, KS)
    await book.put("acme", "alice", name="Alice Example", emails=["alice@example.com"])
    await book.link("acme", "alice", ContactIdentity(channel=Channel.LINE, id=ALICE))
    await book.put("acme", "bob", name="Bob", emails=[])
    await book.link("acme", "bob", ContactIdentity(channel=Channel.LINE, id=BOB))
    await book.link("acme", "bob", ContactIdentity(channel=Channel.SLACK, id="U0BOB"))

    key = group.conversation.key
    exported = await export_conversation(store, KS, "acme", key)
    assert exported is not None
    assert {(n["id"], n["name"]) for n in exported["names"]} == {(ALICE, "Alice"), (BOB, "Bob")}
    assert {c["id"] for c in exported["contacts"]} == {"alice", "bob"}
    assert (
        "alice@example.com" in exported["contacts"][0]["emails"] + exported["contacts"][1]["emails"]
    )

    report = await erase_conversation(store, KS, "acme", key)

    assert report.contacts_changed == 2
    assert await store.get_record(KS.contact_name("acme", "line", ALICE)) is None
    assert await store.get_record(KS.contact_name("acme", "line", BOB)) is None
    assert await book.get("acme", "alice") is None  # no identity left: deleted
    assert await store.get_record(KS.contact_email("acme", "alice@example.com")) is None
    bob = await book.get("acme", "bob")
    assert bob is not None
    assert bob.identities == (ContactIdentity(channel=Channel.SLACK, id="U0BOB"),)
    assert await book.of_identity("acme", Channel.LINE, BOB) is None
    assert await store.scan(KS.conversation_participant_prefix(key)) == []
    # The other conversation is untouched, its participant record included.
    other = _message("line:C-other", BOB, "Bob").conversation.key
    assert await store.scan(KS.conversation_participant_prefix(other)) == [
        KS.conversation_participant(other, BOB)
    ]
