"""The ``{pN}`` hash-tag design: every key of a partition lies in that partition's slot.

A Redis Cluster runs an atomic call only when all its keys share a slot. The store's atomic
calls (admit, commit) combine a partition's streams with its conversations' states, records,
logs, dedupe claims and delivery records, so all of those must hash alike.
"""

from __future__ import annotations

from redis.crc import key_slot

from gateway.store import Keyspace


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_every_key_of_a_partition_shares_its_slot() -> None:
    keyspace = Keyspace(prefix="fb", partitions=16)
    for conversation in ("acme/http/c1", "acme/slack/T1:C1/1700000000.0001", "x/line/U{p3}"):
        p = keyspace.partition(conversation)
        keys = [
            keyspace.inbox(p),
            keyspace.outbox(p),
            keyspace.dead_letters(p),
            keyspace.seen(p, "http:acme", "event-1"),
            keyspace.replayed(p, "1-0"),
            keyspace.delivered(p, "message-1:0"),
            keyspace.state(conversation),
            keyspace.replies(conversation),
            keyspace.receipts(conversation),
            keyspace.conversation_record(conversation, "in:message-1"),
            keyspace.conversation_index("acme", conversation),
        ]
        assert {slot(k) for k in keys} == {slot(keyspace.inbox(p))}, conversation


def test_partitions_have_slots_of_their_own() -> None:
    """Distinct partitions hash to distinct slots, so a cluster can spread them out."""
    keyspace = Keyspace(partitions=64)
    assert len({slot(keyspace.inbox(p)) for p in range(64)}) == 64
