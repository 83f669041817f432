"""A tenant's contacts in the store: read, change, link, unlink, and forget.

Every change of a tenant's contacts is one compare-and-set on
:meth:`~gateway.store.Keyspace.contacts_version` committed with the records it writes (the
contact and its indexes: identity → contact, verified email → contact), all under the
tenant's hash tag, so:

- an identity is linked to one contact at most, even when two operators (or an operator
  and the worker) link it at the same moment: the second change is computed again on what
  the first stored, and refused if the identity is taken (:class:`IdentityTaken`);
- the indexes never disagree with the contacts they point to.

Linking without an operator happens only on a verified email address
(:meth:`ContactBook.link_verified`): the address a platform vouched for (a Slack profile's
email) and that a contact already holds. Email senders are not verified by the gateway
(the email connector keeps no DKIM/SPF/DMARC verdict of inbound mail), so a mail's From
address is never linked automatically: an operator links it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import ValidationError

from gateway.contacts.model import Contact, ContactIdentity, clean_email
from gateway.models import Channel, InboundMessage, new_id, utcnow
from gateway.observability import get_logger
from gateway.store import Commit, Keyspace, StateWrite, Store

__all__ = [
    "ContactBook",
    "ContactConflict",
    "IdentityTaken",
    "UnknownContact",
    "sender_contact",
]

log = get_logger(__name__)

_ATTEMPTS = 20
T = TypeVar("T")
_SCAN_LIMIT = 100_000


class UnknownContact(LookupError):
    pass


class ContactConflict(RuntimeError):
    """The tenant's contacts kept changing under this change: it gave up, stored nothing."""


class IdentityTaken(ValueError):
    def __init__(self, contact_id: str) -> None:
        super().__init__("the identity is linked to another contact")
        self.contact_id = contact_id


@dataclass(slots=True)
class _Change:
    """What one change writes: contacts to store (or delete) and index records."""

    put: dict[str, Contact] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    index: dict[str, bytes] = field(default_factory=dict)
    unindex: set[str] = field(default_factory=set)


class ContactBook:
    def __init__(self, store: Store, keyspace: Keyspace) -> None:
        self.store = store
        self.keyspace = keyspace

    # -- reading ---------------------------------------------------------------------------------
    async def get(self, tenant: str, contact_id: str) -> Contact | None:
        raw = await self.store.get_record(self.keyspace.contact(tenant, contact_id))
        return None if raw is None else Contact.model_validate_json(raw)

    async def page(
        self, tenant: str, *, limit: int = 100, after: str | None = None
    ) -> list[Contact]:
        """The tenant's contacts by id, ``limit`` of them after the id ``after``."""
        prefix = self.keyspace.contact_prefix(tenant)
        ids = sorted(k[len(prefix) :] for k in await self.store.scan(prefix, limit=_SCAN_LIMIT))
        found: list[Contact] = []
        for contact_id in ids:
            if after is not None and contact_id <= after:
                continue
            contact = await self.get(tenant, contact_id)
            if contact is not None:
                found.append(contact)
            if len(found) >= limit:
                break
        return found

    async def of_identity(self, tenant: str, channel: Channel, user: str) -> Contact | None:
        raw = await self.store.get_record(self.keyspace.contact_identity(tenant, channel, user))
        return None if raw is None else await self.get(tenant, raw.decode())

    async def _id_of_identity(self, tenant: str, identity: ContactIdentity) -> str | None:
        key = self.keyspace.contact_identity(tenant, identity.channel.value, identity.id)
        raw = await self.store.get_record(key)
        return None if raw is None else raw.decode()

    async def _id_of_email(self, tenant: str, email: str) -> str | None:
        raw = await self.store.get_record(self.keyspace.contact_email(tenant, email))
        return None if raw is None else raw.decode()

    # -- changing --------------------------------------------------------------------------------
    async def put(
        self, tenant: str, contact_id: str, *, name: str | None, emails: Iterable[str]
    ) -> tuple[Contact, bool]:
        """Create the contact or replace its name and emails; (contact, created)."""
        wanted = tuple(dict.fromkeys(e for e in (clean_email(x) for x in emails) if e))
        created = False

        async def change(book: _Change) -> Contact:
            nonlocal created
            current = await self.get(tenant, contact_id)
            created = current is None
            for email in wanted:
                holder = await self._id_of_email(tenant, email)
                if holder is not None and holder != contact_id:
                    raise IdentityTaken(holder)
            now = utcnow()
            contact = (
                Contact(id=contact_id, tenant=tenant, name=name, emails=wanted)
                if current is None
                else current.model_copy(update={"name": name, "emails": wanted, "updated_at": now})
            )
            self._stage(book, tenant, current, contact)
            return contact

        return await self._commit(tenant, change), created

    async def delete(self, tenant: str, contact_id: str) -> Contact:
        async def change(book: _Change) -> Contact:
            current = await self.get(tenant, contact_id)
            if current is None:
                raise UnknownContact(contact_id)
            self._stage(book, tenant, current, None)
            return current

        return await self._commit(tenant, change)

    async def link(self, tenant: str, contact_id: str, identity: ContactIdentity) -> Contact:
        """Link ``identity`` to the contact (no change if it is linked there already)."""

        async def change(book: _Change) -> Contact:
            current = await self.get(tenant, contact_id)
            if current is None:
                raise UnknownContact(contact_id)
            holder = await self._id_of_identity(tenant, identity)
            if holder is not None and holder != contact_id:
                raise IdentityTaken(holder)
            if current.has(identity):
                return current
            contact = current.model_copy(
                update={"identities": (*current.identities, identity), "updated_at": utcnow()}
            )
            self._stage(book, tenant, current, contact)
            return contact

        return await self._commit(tenant, change)

    async def unlink(self, tenant: str, contact_id: str, identity: ContactIdentity) -> Contact:
        async def change(book: _Change) -> Contact:
            current = await self.get(tenant, contact_id)
            if current is None or not current.has(identity):
                raise UnknownContact(contact_id)
            contact = current.model_copy(
                update={
                    "identities": tuple(i for i in current.identities if i != identity),
                    "updated_at": utcnow(),
                }
            )
            self._stage(book, tenant, current, contact)
            return contact

        return await self._commit(tenant, change)

    async def link_verified(
        self, tenant: str, identity: ContactIdentity, email: str, *, name: str | None
    ) -> Contact | None:
        """Link ``identity`` on the strength of an email address its platform verified.

        The identity joins the contact holding that address (one is made for it when none
        does). An identity an operator already linked elsewhere stays where it is: a
        verified address does not undo an operator's decision.
        """
        address = clean_email(email)
        if address is None:
            return None
        holder = await self._id_of_identity(tenant, identity)
        if holder is not None:
            return None  # linked already (here, or by an operator elsewhere)

        async def change(book: _Change) -> Contact | None:
            if await self._id_of_identity(tenant, identity) is not None:
                return None
            contact_id = await self._id_of_email(tenant, address)
            current = None if contact_id is None else await self.get(tenant, contact_id)
            if current is None:
                contact = Contact(
                    id=new_id(), tenant=tenant, name=name, identities=(identity,), emails=(address,)
                )
            else:
                contact = current.model_copy(
                    update={"identities": (*current.identities, identity), "updated_at": utcnow()}
                )
            self._stage(book, tenant, current, contact)
            return contact

        return await self._commit(tenant, change)

    async def forget(self, tenant: str, identities: Iterable[ContactIdentity]) -> int:
        """Take ``identities`` out of the contacts that hold them (GDPR erase); a contact
        left with no identity is deleted, its emails with it. Returns the contacts changed."""
        wanted = list(dict.fromkeys(identities))
        if not wanted:
            return 0
        changed = 0

        async def change(book: _Change) -> None:
            nonlocal changed
            contacts: dict[str, Contact | None] = {}
            for identity in wanted:
                holder = await self._id_of_identity(tenant, identity)
                if holder is not None and holder not in contacts:
                    contacts[holder] = await self.get(tenant, holder)
                if holder is not None:
                    # The index goes even if the contact vanished: nothing may point at it.
                    book.unindex.add(self._identity_key(tenant, identity))
            changed = 0
            for current in contacts.values():
                if current is None:
                    continue
                left = tuple(i for i in current.identities if i not in wanted)
                after = (
                    None
                    if not left
                    else current.model_copy(update={"identities": left, "updated_at": utcnow()})
                )
                self._stage(book, tenant, current, after)
                changed += 1

        await self._commit(tenant, change)
        return changed

    # -- the one write path ----------------------------------------------------------------------
    def _identity_key(self, tenant: str, identity: ContactIdentity) -> str:
        return self.keyspace.contact_identity(tenant, identity.channel.value, identity.id)

    def _stage(
        self, book: _Change, tenant: str, before: Contact | None, after: Contact | None
    ) -> None:
        """Stage ``before`` → ``after`` (None: absent) with the index changes it implies."""
        old_ids = set() if before is None else set(before.identities)
        old_emails = set() if before is None else set(before.emails)
        new_ids = set() if after is None else set(after.identities)
        new_emails = set() if after is None else set(after.emails)
        either = after if after is not None else before
        assert either is not None  # a change has a contact on one side at least
        contact_id = either.id
        for identity in old_ids - new_ids:
            book.unindex.add(self._identity_key(tenant, identity))
        for email in old_emails - new_emails:
            book.unindex.add(self.keyspace.contact_email(tenant, email))
        for identity in new_ids:
            book.index[self._identity_key(tenant, identity)] = contact_id.encode()
        for email in new_emails:
            book.index[self.keyspace.contact_email(tenant, email)] = contact_id.encode()
        if after is None:
            book.gone.add(contact_id)
            book.put.pop(contact_id, None)
        else:
            book.put[contact_id] = after
            book.gone.discard(contact_id)

    async def _commit(self, tenant: str, change: Callable[[_Change], Awaitable[T]]) -> T:
        """Compute ``change`` on what is stored and commit it with the version it read; on a
        lost race compute it again. Raises what ``change`` raises, or ContactConflict."""
        version_key = self.keyspace.contacts_version(tenant)
        for _ in range(_ATTEMPTS):
            current = await self.store.get_state(version_key)
            version = 0 if current is None else current.version
            book = _Change()
            result = await change(book)
            if not (book.put or book.gone or book.index or book.unindex):
                return result
            records = [
                (self.keyspace.contact(tenant, cid), c.model_dump_json().encode(), None)
                for cid, c in book.put.items()
            ]
            records += [(key, value, None) for key, value in book.index.items()]
            deletes = [self.keyspace.contact(tenant, cid) for cid in book.gone]
            deletes += [key for key in book.unindex if key not in book.index]
            committed = await self.store.commit(
                Commit(
                    state=StateWrite(
                        key=version_key, value=str(version + 1).encode(), expected_version=version
                    ),
                    records=records,
                    deletes=sorted(deletes),
                )
            )
            if committed is not None:
                return result
            # Another writer won: read again, after a pause that keeps racers apart.
            await asyncio.sleep(random.uniform(0, 0.05))  # noqa: S311 - jitter, not a secret
        raise ContactConflict("the tenant's contacts kept changing; nothing was stored")


async def sender_contact(book: ContactBook, message: InboundMessage) -> Contact | None:
    """The contact of ``message``'s sender, for the worker's turn; linked first when their
    platform vouched for their email (the one link made without an operator)."""
    conv, sender = message.conversation, message.sender
    try:
        identity = ContactIdentity(channel=conv.channel, id=sender.id)
    except ValidationError:
        return None  # an id no contact can hold (an HTTP client's, with spaces)
    if sender.verified_email is not None:
        try:
            linked = await book.link_verified(
                conv.tenant, identity, sender.verified_email, name=sender.display_name
            )
        except ContactConflict:
            linked = None  # linked by a later message; this one goes on without
        if linked is not None:
            log.info("contacts.linked", contact=linked.id, how="verified_email")
            return linked
    return await book.of_identity(conv.tenant, conv.channel, sender.id)
