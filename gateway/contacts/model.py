"""What a contact is: one person of a tenant, with their identities across channels.

A :class:`Contact` links the ids one person has on the tenant's channels (a Slack user id,
a LINE user id, a WhatsApp number, an email address) and the email addresses a platform
vouched for. It is never built from what a stranger merely claims: the gateway links
identities by itself only on a verified email address (see :mod:`gateway.contacts.book`);
every other link is an operator's, through the admin API.

Names that came from a platform are cleaned here (:func:`clean_name`): no control
character (CR, LF, tabs) and a bounded length, so a display name can be shown, stored and
put into a template but never becomes a second header line or a second log line.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from gateway.models import Channel, InboundMessage, utcnow

__all__ = [
    "CONTACT_ID_PATTERN",
    "IDENTITY_PATTERN",
    "MAX_NAME",
    "Contact",
    "ContactIdentity",
    "clean_email",
    "clean_name",
    "with_clean_sender",
]

CONTACT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# A platform's user id, a phone number or an email address: printable, no space, bounded.
IDENTITY_PATTERN = r"^[^\s\x00-\x1f\x7f]{1,256}$"
MAX_NAME = 80
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f<>]{1,64}@[A-Za-z0-9.-]{1,253}$")


class ContactIdentity(BaseModel):
    """One id of the person on one channel (the sender id messages carry there)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Channel
    id: str = Field(pattern=IDENTITY_PATTERN)


class Contact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=CONTACT_ID_PATTERN)
    tenant: str
    name: str | None = None
    identities: tuple[ContactIdentity, ...] = ()
    emails: tuple[str, ...] = ()
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def has(self, identity: ContactIdentity) -> bool:
        return identity in self.identities

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels the person is known on, each once, in the order linked."""
        return tuple(dict.fromkeys(i.channel.value for i in self.identities))


def clean_name(name: object) -> str | None:
    """A platform's display name made safe to show and store; None when nothing is left.

    Control and format characters (CR, LF, NUL, bidi overrides) become spaces, runs of space
    one, and the result is cut to :data:`MAX_NAME` characters.
    """
    if not isinstance(name, str):
        return None
    chars = (" " if unicodedata.category(c)[0] == "C" else c for c in name)
    cleaned = " ".join("".join(chars).split())[:MAX_NAME].strip()
    return cleaned or None


def with_clean_sender(message: InboundMessage) -> InboundMessage:
    """``message`` with its sender's display name cleaned (:func:`clean_name`), whichever
    channel gave it (a WhatsApp ProfileName, an email's From name, an HTTP client's)."""
    name = message.sender.display_name
    if name is None or name == clean_name(name):
        return message
    sender = message.sender.model_copy(update={"display_name": clean_name(name)})
    return message.model_copy(update={"sender": sender})


def clean_email(email: object) -> str | None:
    """An email address in the one form contacts index it by (lower case), or None."""
    if not isinstance(email, str):
        return None
    email = email.strip().lower()
    return email if _EMAIL.match(email) else None
