"""The dead-letter list: messages that could not be handled or delivered, with the reason.

Each partition keeps its own list (same hash tag as its outbox), so moving a message there
and acknowledging it is one atomic commit. Operators list, inspect, replay and discard
entries (admin API and ``flowbiz dlq``); a replayed outbound message keeps its idempotency
key, so replaying twice still delivers once.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.envelope import is_raw_event
from gateway.models import new_id, utcnow
from gateway.store import Commit, Keyspace, Store

__all__ = ["DeadLetter", "discard", "list_dead_letters", "move_to_dead_letters", "replay"]

OUTBOX_GROUP = "dispatchers"
_REPLAY_CLAIM_TTL = 30 * 86400.0
_SCAN_PAGE = 500  # entries per read while looking for one tenant's letters


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=new_id)
    kind: Literal["inbound", "outbound"]
    reason: str
    code: str | None = None  # a gateway.errors.DeliveryFailure for outbound letters
    platform_code: str | None = None  # the platform's own code for it, if it gave one
    attempts: int = 0
    at: datetime = Field(default_factory=utcnow)
    channel: str | None = None
    tenant: str | None = None
    conversation: str | None = None
    partition: int
    message: dict[str, Any] | None = None  # the inbound/outbound message as stored
    # When the stored payload could not be parsed: a platform event's envelope, whole.
    raw: str | None = None


async def move_to_dead_letters(
    store: Store, keyspace: Keyspace, letter: DeadLetter, *, ack: tuple[str, str, str]
) -> None:
    """Append the letter and acknowledge the failed entry in one atomic step."""
    await store.commit(
        Commit(
            appends=[(keyspace.dead_letters(letter.partition), letter.model_dump_json().encode())],
            acks=[ack],
        )
    )


async def list_dead_letters(
    store: Store, keyspace: Keyspace, *, tenant: str | None = None, limit: int = 100
) -> list[tuple[str, DeadLetter]]:
    """The oldest ``limit`` letters (of ``tenant`` if given) as ``(handle, letter)`` pairs;
    the handle (``partition:entry``) names a letter for replay.

    A page is complete: with ``tenant``, each partition is read on past other tenants'
    letters until it gave ``limit`` of this tenant's or ran out.
    """
    out: list[tuple[str, DeadLetter]] = []
    for p in range(keyspace.partitions):
        out.extend(await _oldest_in_partition(store, keyspace, p, tenant, limit))
    out.sort(key=lambda pair: pair[1].at)
    return out[:limit]


async def _oldest_in_partition(
    store: Store, keyspace: Keyspace, partition: int, tenant: str | None, limit: int
) -> list[tuple[str, DeadLetter]]:
    stream = keyspace.dead_letters(partition)
    page_size = limit if tenant is None else max(limit, _SCAN_PAGE)
    found: list[tuple[str, DeadLetter]] = []
    after: str | None = None
    while len(found) < limit:
        page = await store.range(stream, after=after, count=page_size)
        for entry in page:
            letter = DeadLetter.model_validate_json(entry.payload)
            if tenant is None or letter.tenant == tenant:
                found.append((f"{partition}:{entry.id}", letter))
                if len(found) == limit:
                    break
        if len(page) < page_size:
            break
        after = page[-1].id
    return found


def _split(handle: str) -> tuple[int, str]:
    partition, _, entry_id = handle.partition(":")
    return int(partition), entry_id


async def get_dead_letter(store: Store, keyspace: Keyspace, handle: str) -> DeadLetter | None:
    partition, entry_id = _split(handle)
    entry = await store.get_entry(keyspace.dead_letters(partition), entry_id)
    return None if entry is None else DeadLetter.model_validate_json(entry.payload)


async def replay(store: Store, keyspace: Keyspace, handle: str) -> bool:
    """Put a letter back where it failed: an outbound message on its outbox, an inbound one
    (or a platform event its parser could not read) on its inbox. False if gone or not
    replayable."""
    partition, entry_id = _split(handle)
    stream = keyspace.dead_letters(partition)
    entry = await store.get_entry(stream, entry_id)
    if entry is None:
        return False
    letter = DeadLetter.model_validate_json(entry.payload)
    payload: bytes
    if letter.kind == "outbound" and letter.message is not None:
        replayed = {**letter.message, "replayed": True}  # see OutboundMessage.replayed
        target, payload = keyspace.outbox(partition), json.dumps(replayed).encode()
    elif letter.kind == "inbound" and letter.message is not None:
        target, payload = keyspace.inbox(partition), json.dumps(letter.message).encode()
    elif letter.kind == "inbound" and letter.raw is not None and is_raw_event(letter.raw.encode()):
        # A platform event its parser could not read: back on the inbox exactly as it came.
        target, payload = keyspace.inbox(partition), letter.raw.encode()
    else:
        return False
    # Only one replay of a letter may run, even when two operators click at once.
    if not await store.claim(keyspace.replayed(partition, entry_id), ttl=_REPLAY_CLAIM_TTL):
        return False
    deletes: list[str] = []
    key = None if letter.message is None else letter.message.get("idempotency_key")
    if letter.kind == "outbound" and isinstance(key, str):
        # A platform may report failure after the send was recorded as delivered (Twilio
        # status callbacks): the operator's replay must be allowed to send it again.
        deletes.append(keyspace.delivered(partition, key))
    await store.commit(Commit(appends=[(target, payload)], deletes=deletes))
    await store.delete_entries(stream, [entry_id])
    return True


async def discard(store: Store, keyspace: Keyspace, handle: str) -> bool:
    partition, entry_id = _split(handle)
    return await store.delete_entries(keyspace.dead_letters(partition), [entry_id]) > 0
