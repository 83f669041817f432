"""Contacts: the people behind the tenant's conversations, across channels.

- :mod:`gateway.contacts.model` — :class:`Contact` (one person's identities and verified
  emails) and the cleaning of what platforms say of people;
- :mod:`gateway.contacts.names` — display names looked up in the parse step, cached in the
  store for every process, failures never failing a message;
- :mod:`gateway.contacts.book` — the tenant's contacts in the store, changed by
  compare-and-set; automatic links only on a verified email address.
"""

from gateway.contacts.book import (
    ContactBook,
    ContactConflict,
    IdentityTaken,
    UnknownContact,
    sender_contact,
)
from gateway.contacts.model import (
    CONTACT_ID_PATTERN,
    Contact,
    ContactIdentity,
    clean_email,
    clean_name,
    with_clean_sender,
)
from gateway.contacts.names import NameCache, Profile

__all__ = [
    "CONTACT_ID_PATTERN",
    "Contact",
    "ContactBook",
    "ContactConflict",
    "ContactIdentity",
    "IdentityTaken",
    "NameCache",
    "Profile",
    "UnknownContact",
    "clean_email",
    "clean_name",
    "sender_contact",
    "with_clean_sender",
]
