"""The ``{pN}`` hash-tag design: every key of a partition lies in that partition's slot.

A Redis Cluster runs an atomic call only when all its keys share a slot. The store's atomic
calls (admit, commit) combine a partition's streams with its conversations' states, records,
logs, dedupe claims and delivery records, so all of those must hash alike. The test reads
:class:`Keyspace`'s methods from their signatures, so a key added later is held to it too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from redis.crc import key_slot

from gateway.store import Keyspace

CONVERSATIONS = ("acme/http/c1", "acme/slack/T1:C1/1700000000.0001", "x/line/U{p3}")


def slot(key: str) -> int:
    return key_slot(key.encode())


def partition_keys(keyspace: Keyspace, conversation: str) -> dict[str, str]:
    """Every key (or key prefix) a public Keyspace method builds for ``conversation`` or
    its partition, by method name; other arguments get placeholder values."""
    partition = keyspace.partition(conversation)
    found: dict[str, str] = {}
    for name, method in inspect.getmembers(keyspace, inspect.ismethod):
        if name.startswith("_"):
            continue
        signature = inspect.signature(method)
        if signature.return_annotation not in ("str", str):
            continue  # lists of keys for erase mix in cluster-wide ones; each is deleted alone
        params = signature.parameters
        if not any(p == "partition" or p.endswith("conversation_key") for p in params):
            continue
        args: dict[str, object] = {}
        for param in params.values():
            if param.name == "partition":
                args[param.name] = partition
            elif param.name.endswith("conversation_key"):
                args[param.name] = conversation
            elif param.annotation in ("int", int):
                args[param.name] = 1
            else:
                args[param.name] = f"{param.name}-1"
        build: Callable[..., str] = method
        found[name] = build(**args)
    return found


# The keys the atomic calls combine (admit: claim + inbox / receipts / dead letters; commit:
# state, outbox, inbox ack, index entry, records, logs, delivery record, replay claim).
COMBINED = {
    "inbox", "outbox", "dead_letters", "delivered", "replayed",
    "state", "replies", "receipts", "conversation_index", "conversation_prefix",
}  # fmt: skip


def test_every_key_of_a_partition_shares_its_slot() -> None:
    """The keys the atomic calls combine lie in the partition's slot, and no key carries
    another partition's tag. A key named by a conversation or partition without the tag
    (a lease, a token bucket) is cluster-wide: the store only ever touches it alone."""
    keyspace = Keyspace(prefix="fb", partitions=16)
    for conversation in CONVERSATIONS:
        keys = partition_keys(keyspace, conversation)
        home = slot(keyspace.inbox(keyspace.partition(conversation)))
        assert {name for name, key in keys.items() if slot(key) == home} >= COMBINED
        tagged = f"{keyspace.prefix}:{{"  # a partition key: the tag right after the prefix
        strays = {k: v for k, v in keys.items() if v.startswith(tagged) and slot(v) != home}
        assert strays == {}, conversation


def test_partitions_have_slots_of_their_own() -> None:
    """Distinct partitions hash to distinct slots, so a cluster can spread them out."""
    keyspace = Keyspace(partitions=64)
    assert len({slot(keyspace.inbox(p)) for p in range(64)}) == 64
