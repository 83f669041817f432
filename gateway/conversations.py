"""The tenant's conversations as the operator sees them: index, history, export, erase.

The worker keeps, in the same atomic commit as each turn:

- an **index entry** per conversation (``Keyspace.conversation_index``), in the
  conversation's partition, so listing a tenant's conversations is one prefix scan per
  partition and the entry moves with the conversation's other keys; it also keeps the last
  reply context, which a proactive message needs;
- a **participant record** per person who wrote in it (``Keyspace.conversation_participant``),
  so erase and export find their cached names and contacts;
- an **inbound marker** per handled message (``Keyspace.inbound_marker``, expiring with
  the dedupe claims) naming the platform event id and the sender, so erase can find the dedupe
  claim, the delivery records and the sender's rate-limit bucket of that conversation.

:func:`erase_conversation` removes everything the store holds about one conversation: its
state and history, replies, receipts, notes, markers, notices and reply bucket, its index
entry, the cached display names of the people who wrote in it and their identities on the
tenant's contacts (a contact left with no identity is deleted), the dedupe claims of its
events, the delivery records of its replies, what the connectors keep per message (sent
parts, Message-ID threading, WhatsApp send records and status claims), and its entries in
the inbox, outbox and dead-letter streams of its partition; given the blob store, the files
kept from it too, first: a blob store that fails fails the erase before anything else is
gone, so it can be run again (after the store's records went, the conversation would no
longer be found). :func:`export_conversation` lists those files, each with a signed link to
its bytes, and the participants' cached names and contacts.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.contacts import ContactBook, ContactIdentity
from gateway.handoff_config import Desk, desk_threads
from gateway.media.service import MediaService
from gateway.models import (
    Channel,
    ConversationKey,
    DeliveryReceipt,
    HttpReplyContext,
    InboundMessage,
    ReplyContext,
    stored_json,
    utcnow,
)
from gateway.state import ConversationState
from gateway.store import Keyspace, Store, StreamEntry

__all__ = [
    "ConversationIndexEntry",
    "EraseReport",
    "conversation_handle",
    "conversation_participants",
    "erase_conversation",
    "export_conversation",
    "index_records",
    "kept_files",
    "list_conversations",
    "parse_handle",
    "read_index_entry",
]

_SCAN_LIMIT = 10_000
_PAGE = 500


def conversation_handle(key: str) -> str:
    """An opaque, URL-safe name for a conversation key (it may contain ``/`` and ``%``)."""
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def parse_handle(handle: str) -> str | None:
    """The conversation key behind a handle, or None when it is not a valid handle."""
    if not handle or len(handle) > 2048:
        return None
    try:
        key = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if conversation_handle(key) != handle or key.count("/") not in (2, 3):
        return None
    return key


class ConversationIndexEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    conversation: ConversationKey
    persona: str | None = None
    customer: str | None = None  # the sender's display name on their platform, when given
    route: str | None = None  # why the persona was chosen for the last turn (routing step)
    trace_id: str | None = None  # the last inbound message's trace id, as in the logs
    last_inbound_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    reply_context: ReplyContext = Field(default_factory=HttpReplyContext)

    @property
    def handle(self) -> str:
        return conversation_handle(self.key)


class _InboundMarker(BaseModel):
    event_id: str
    sender: str


def index_records(
    keyspace: Keyspace,
    message: InboundMessage,
    *,
    persona: str | None,
    dedupe_ttl: float,
    route: str | None = None,
) -> list[tuple[str, bytes, float | None]]:
    """The records a turn commits next to its state: index entry and inbound marker."""
    conv = message.conversation
    entry = ConversationIndexEntry(
        key=conv.key,
        conversation=conv,
        persona=persona,
        customer=message.sender.display_name or None,
        route=route,
        trace_id=message.trace_id,
        last_inbound_at=message.received_at,
        reply_context=message.reply_context,
    )
    marker = _InboundMarker(event_id=message.event_id, sender=message.sender.id)
    return [
        # Who wrote here, so erase finds their cached name and contact identity (no expiry:
        # it lives as long as the conversation).
        (keyspace.conversation_participant(conv.key, message.sender.id), b"1", None),
        (
            keyspace.conversation_index(conv.tenant, conv.key),
            stored_json(entry),
            None,
        ),
        (
            keyspace.inbound_marker(conv.key, message.id),
            marker.model_dump_json().encode(),
            dedupe_ttl,
        ),
    ]


async def read_index_entry(
    store: Store, keyspace: Keyspace, tenant: str, key: str
) -> ConversationIndexEntry | None:
    raw = await store.get_record(keyspace.conversation_index(tenant, key))
    return None if raw is None else ConversationIndexEntry.model_validate_json(raw)


async def list_conversations(
    store: Store, keyspace: Keyspace, tenant: str, *, limit: int = 100
) -> list[ConversationIndexEntry]:
    """The tenant's conversations, most recently active first."""
    found: list[ConversationIndexEntry] = []
    for partition in range(keyspace.partitions):
        for key in await store.scan(
            keyspace.conversation_index_prefix(tenant, partition), limit=_SCAN_LIMIT
        ):
            raw = await store.get_record(key)
            if raw is not None:
                found.append(ConversationIndexEntry.model_validate_json(raw))
    found.sort(key=lambda e: e.updated_at, reverse=True)
    return found[:limit]


async def read_state(store: Store, keyspace: Keyspace, key: str) -> ConversationState | None:
    current = await store.get_state(keyspace.state(key))
    return None if current is None else ConversationState.model_validate_json(current.value)


async def _all_entries(store: Store, stream: str, *, log: bool = False) -> list[StreamEntry]:
    """Every entry of a stream, or of a log with ``log``, page by page."""
    read = store.read_log if log else store.range
    out: list[StreamEntry] = []
    after: str | None = None
    while True:
        page = await read(stream, after=after, count=_PAGE)
        out.extend(page)
        if len(page) < _PAGE:
            return out
        after = page[-1].id


async def read_receipts(store: Store, keyspace: Keyspace, key: str) -> list[DeliveryReceipt]:
    return [
        DeliveryReceipt.model_validate_json(e.payload)
        for e in await _all_entries(store, keyspace.receipts(key), log=True)
    ]


async def kept_files(media: MediaService, tenant: str, key: str) -> list[dict[str, Any]]:
    """The files kept from one conversation, oldest first, each with a signed link."""
    return [
        {
            "id": info.id,
            "content_type": info.content_type,
            "size": info.size,
            "sha256": info.sha256,
            "name": info.name,
            "created_at": info.created_at.isoformat(),
            "url": media.links.url(info.id),
        }
        for info in await media.blobs.list_conversation(tenant, key)
    ]


async def export_conversation(
    store: Store,
    keyspace: Keyspace,
    tenant: str,
    key: str,
    *,
    media: MediaService | None = None,
) -> dict[str, Any] | None:
    """Everything kept about one conversation, as JSON-ready data (None if unknown); with
    ``media``, its kept files too (links valid for ``media.link_ttl_seconds``)."""
    entry = await read_index_entry(store, keyspace, tenant, key)
    state = await read_state(store, keyspace, key)
    if entry is None and state is None:
        return None
    replies = [
        json.loads(e.payload) for e in await _all_entries(store, keyspace.replies(key), log=True)
    ]
    participants = await conversation_participants(store, keyspace, key)
    names: list[dict[str, Any]] = []
    for identity in participants:
        raw = await store.get_record(
            keyspace.contact_name(tenant, identity.channel.value, identity.id)
        )
        if raw is not None:
            names.append({"channel": identity.channel.value, "id": identity.id, **json.loads(raw)})
    book = ContactBook(store, keyspace)
    contacts: dict[str, dict[str, Any]] = {}
    for identity in participants:
        contact = await book.of_identity(tenant, identity.channel, identity.id)
        if contact is not None:
            contacts[contact.id] = contact.model_dump(mode="json")
    return {
        "conversation": None if entry is None else entry.model_dump(mode="json"),
        # The people who wrote here: the names their platforms gave, and their contacts.
        "names": names,
        "contacts": list(contacts.values()),
        "state": None if state is None else state.model_dump(mode="json"),
        "replies": replies,
        "receipts": [r.model_dump(mode="json") for r in await read_receipts(store, keyspace, key)],
        # Operators' private notes are kept about the customer, so they are theirs to see.
        "notes": [
            json.loads(e.payload) for e in await _all_entries(store, keyspace.notes(key), log=True)
        ],
        "files": [] if media is None else await kept_files(media, tenant, key),
        "exported_at": utcnow().isoformat(),
    }


class EraseReport(BaseModel):
    keys_deleted: int = 0
    stream_entries_deleted: int = 0
    files_deleted: int = 0
    contacts_changed: int = 0  # contacts the conversation's participants were taken out of


async def conversation_participants(
    store: Store, keyspace: Keyspace, key: str
) -> list[ContactIdentity]:
    """The people who wrote in conversation ``key``, as channel identities."""
    channel, _ = _channel_of(key)
    if channel is None:
        return []
    prefix = keyspace.conversation_participant_prefix(key)
    found: list[ContactIdentity] = []
    for record in sorted(await store.scan(prefix, limit=_SCAN_LIMIT)):
        try:
            found.append(ContactIdentity(channel=Channel(channel), id=record[len(prefix) :]))
        except ValidationError:
            continue  # an id no contact can hold has no contact either
    return found


def _entry_conversation(payload: bytes) -> str | None:
    """The conversation key an inbox/outbox/dead-letter entry belongs to, if readable."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    conv = data.get("conversation")
    if isinstance(conv, str):  # dead letters carry the key itself
        return conv
    if isinstance(data.get("message"), dict):
        conv = data["message"].get("conversation")
    if isinstance(conv, dict):
        try:
            return ConversationKey.model_validate(conv).key
        except ValidationError:
            return None
    return None


async def erase_conversation(
    store: Store,
    keyspace: Keyspace,
    tenant: str,
    key: str,
    *,
    extra_keys: Sequence[str] = (),
    desks: Sequence[Desk] = (),
    media: MediaService | None = None,
) -> EraseReport:
    """Remove every trace of conversation ``key`` from the store (GDPR erasure).

    ``extra_keys`` are further keys to delete that only the caller can name. Every key is
    named by the same :class:`~gateway.store.Keyspace` method that writes it. With ``desks``
    (the configured handoff desks), the thread each desk serving ``tenant`` keeps for this
    customer is erased too: it holds the announcement, the relayed messages and the link
    back to the customer. With ``media``, the files kept from the conversation (and from
    those threads) are deleted first; a blob store that fails raises ``OSError``
    (:class:`~gateway.media.blobs.BlobStoreError`) before the store is touched.
    """
    report = EraseReport()
    for thread in desk_threads(desks, tenant, key):
        found = await erase_conversation(store, keyspace, thread.tenant, thread.key, media=media)
        report.keys_deleted += found.keys_deleted
        report.stream_entries_deleted += found.stream_entries_deleted
        report.contacts_changed += found.contacts_changed
        report.files_deleted += found.files_deleted
    if media is not None:
        report.files_deleted += await media.blobs.delete_conversation(tenant, key)
    partition = keyspace.partition(key)
    conv_keys = set(await store.scan(keyspace.conversation_prefix(key), limit=_SCAN_LIMIT))
    to_delete: set[str] = conv_keys | set(extra_keys)
    to_delete.update(keyspace.conversation_keys(tenant, key))
    channel, key_tenant = _channel_of(key)
    # The people who wrote here: their cached names go, and their identities leave the
    # contacts that hold them (a contact left with none goes too).
    participants = await conversation_participants(store, keyspace, key)
    for identity in participants:
        to_delete.add(keyspace.contact_name(tenant, identity.channel.value, identity.id))
    marker_prefix = keyspace.inbound_marker_prefix(key)
    for record_key in sorted(k for k in conv_keys if k.startswith(marker_prefix)):
        inbound_id = record_key[len(marker_prefix) :]
        raw = await store.get_record(record_key)
        marker = None
        if raw is not None:
            try:
                marker = _InboundMarker.model_validate_json(raw)
            except ValidationError:
                marker = None
        if marker is not None and channel is not None and key_tenant is not None:
            to_delete.update(
                keyspace.inbound_keys(
                    partition, channel, key_tenant, marker.event_id, marker.sender
                )
            )
        to_delete.update(
            await store.scan(
                keyspace.delivered_prefix_of_inbound(partition, inbound_id), limit=_SCAN_LIMIT
            )
        )
    for receipt in await read_receipts(store, keyspace, key):
        keys, prefixes = keyspace.delivery_keys(
            partition,
            tenant,
            outbound_id=receipt.outbound_id,
            idempotency_key=receipt.idempotency_key,
            platform_message_ids=_platform_ids(receipt),
        )
        to_delete.update(keys)
        for prefix in prefixes:
            to_delete.update(await store.scan(prefix, limit=_SCAN_LIMIT))
    for stream in (
        keyspace.inbox(partition),
        keyspace.outbox(partition),
        keyspace.dead_letters(partition),
    ):
        ids = [
            e.id for e in await _all_entries(store, stream) if _entry_conversation(e.payload) == key
        ]
        if ids:
            report.stream_entries_deleted += await store.delete_entries(stream, ids)
    report.keys_deleted += await store.delete(sorted(to_delete))
    report.contacts_changed += await ContactBook(store, keyspace).forget(tenant, participants)
    return report


def _platform_ids(receipt: DeliveryReceipt) -> set[str]:
    """Every platform message id a receipt names: the first, and those of further parts
    (lists of ids in its detail)."""
    found = {receipt.platform_message_id} if receipt.platform_message_id else set()
    for value in receipt.detail.values():
        if isinstance(value, list):
            found.update(v for v in value if isinstance(v, str) and v)
    return found


def _channel_of(key: str) -> tuple[str | None, str | None]:
    """(channel, tenant) of a conversation key ``tenant/channel/id[/thread]``."""
    parts = key.split("/")
    if len(parts) < 3:
        return None, None
    try:
        channel = Channel(parts[1]).value
    except ValueError:
        return None, None
    # Tenant ids never need quoting (config pattern), so the key's first part is the id.
    return channel, parts[0]
