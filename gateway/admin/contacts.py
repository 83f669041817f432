"""The tenant's contacts through the admin API: list, read, define, delete, link, unlink.

``/v1/tenants/{tenant}/contacts[/{contact}[/identities[/{channel}/{identity}]]]``. An
operator links a person's identities on the tenant's channels into one contact
(:mod:`gateway.contacts.book`): the link the gateway makes by itself only on a verified
email address. Guarantees:

- a tenant-scoped key reaches only its own tenant's contacts (the router's scope check);
  a contact id of another tenant is simply not found in this one's book;
- an identity is on one contact at most: linking one that another contact holds is a 409
  naming that contact, and nothing changes;
- the audit event (written by the router) names the contact and the channel; an identity
  (a phone number, an address) appears in it only as a digest.
"""

from __future__ import annotations

from aiohttp import web

from gateway.admin.operation import ApiError, Call, json_response
from gateway.admin.schemas import (
    ContactDefinition,
    ContactIdentityBody,
    ContactIdentityView,
    ContactList,
    ContactQuery,
    ContactView,
)
from gateway.audit import digest
from gateway.contacts import (
    Contact,
    ContactBook,
    ContactConflict,
    ContactIdentity,
    IdentityTaken,
    UnknownContact,
)
from gateway.models import Channel

__all__ = [
    "delete_contact",
    "get_contact",
    "link_identity",
    "list_contacts",
    "put_contact",
    "unlink_identity",
]


def contact_view(contact: Contact) -> ContactView:
    return ContactView(
        id=contact.id,
        tenant=contact.tenant,
        name=contact.name,
        identities=[
            ContactIdentityView(channel=i.channel.value, id=i.id) for i in contact.identities
        ],
        emails=list(contact.emails),
        created_at=contact.created_at,
        updated_at=contact.updated_at,
    )


def _book(call: Call) -> tuple[str, ContactBook]:
    tenant = call.tenant()
    return tenant.id, ContactBook(call.store, call.runtime.keyspace)


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "no such contact")


def _conflict(exc: ContactConflict) -> ApiError:
    return ApiError(409, "conflict", str(exc))


async def list_contacts(call: Call) -> web.StreamResponse:
    tenant, book = _book(call)
    query: ContactQuery = call.query
    # One more than asked: whether a next page exists.
    found = await book.page(tenant, limit=query.limit + 1, after=query.after)
    page = found[: query.limit]
    more = len(found) > query.limit
    return json_response(
        ContactList(
            contacts=[contact_view(c) for c in page], next=page[-1].id if more and page else None
        )
    )


async def get_contact(call: Call) -> web.StreamResponse:
    tenant, book = _book(call)
    contact = await book.get(tenant, call.params["contact"])
    if contact is None:
        raise _not_found()
    return json_response(contact_view(contact))


async def put_contact(call: Call) -> web.StreamResponse:
    tenant, book = _book(call)
    body: ContactDefinition = call.body
    try:
        contact, created = await book.put(
            tenant, call.params["contact"], name=body.name, emails=body.emails
        )
    except IdentityTaken as exc:
        raise ApiError(
            409, "email_taken", f"an address is on contact {exc.contact_id} already"
        ) from exc
    except ContactConflict as exc:
        raise _conflict(exc) from exc
    call.audit_detail = {"change": "created" if created else "replaced"}
    return json_response(contact_view(contact))


async def delete_contact(call: Call) -> web.StreamResponse:
    tenant, book = _book(call)
    try:
        contact = await book.delete(tenant, call.params["contact"])
    except UnknownContact as exc:
        raise _not_found() from exc
    except ContactConflict as exc:
        raise _conflict(exc) from exc
    call.audit_detail = {"identities": len(contact.identities)}
    return web.Response(status=204)


async def link_identity(call: Call) -> web.StreamResponse:
    tenant, book = _book(call)
    body: ContactIdentityBody = call.body
    identity = ContactIdentity(channel=body.channel, id=body.identity)
    call.audit_detail = {"channel": body.channel.value, "identity": digest(body.identity)}
    try:
        contact = await book.link(tenant, call.params["contact"], identity)
    except UnknownContact as exc:
        raise _not_found() from exc
    except IdentityTaken as exc:
        raise ApiError(
            409, "identity_taken", f"the identity is linked to contact {exc.contact_id}"
        ) from exc
    except ContactConflict as exc:
        raise _conflict(exc) from exc
    return json_response(contact_view(contact))


async def unlink_identity(call: Call) -> web.StreamResponse:
    tenant, book = _book(call)
    identity = ContactIdentity(channel=Channel(call.params["channel"]), id=call.params["identity"])
    call.audit_detail = {"channel": identity.channel.value}
    try:
        contact = await book.unlink(tenant, call.params["contact"], identity)
    except UnknownContact as exc:
        raise ApiError(404, "not_found", "no such contact, or the identity is not on it") from exc
    except ContactConflict as exc:
        raise _conflict(exc) from exc
    return json_response(contact_view(contact))
