"""Choices in a mailed reply as signed links: ``{public url}/email/actions/{token}``.

A reply's buttons, options and quick replies become links in its HTML part. The token is a
Fernet token (AES-128-CBC, authenticated with HMAC-SHA256) sealing one :class:`ActionTicket`:
the tenant, the conversation (the thread's root Message-ID), the choice's value and label,
an expiry, and what answering needs (our address, the reply's Message-ID, the customer's
address, name and subject). Sealed rather than only signed: the customer's address and
the subject travel in the link and must not be readable by whatever logs or scans URLs.

Guarantees:

- a token opens only with a configured key (``actions.secrets``, newest first, any of them
  verifying during a rotation) or, without one, a key derived from the media link key, so
  every process opens what any process sealed; a forged, altered or truncated token is
  refused ``forged``, one past its expiry ``expired`` — each a 403 page and a count in
  ``flowbiz_email_action_links_total{outcome}``;
- ``GET`` only shows a confirmation page (mail scanners follow links): nothing is ingested;
- ``POST`` ingests one ACTION event into the ticket's conversation through the same
  envelope as inbound mail, its event id derived from the sealed ticket (the reply and the
  choice), so a second click is the core's duplicate and is answered once; the value is
  the ticket's, never the request's;
- every page is a fixed template (autoescaped), sent with ``no-store``, ``no-referrer`` (the
  token is the URL) and a Content-Security-Policy that allows no script.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jinja2
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from connectors.base import FORM, InboundRequest, InboundResponse, InboundResult, Route
from gateway.envelope import encode_raw_event
from gateway.models import Channel, conversation_key_of
from gateway.observability import get_logger

__all__ = [
    "ACTION_PATH",
    "ActionRefused",
    "ActionSeal",
    "ActionTicket",
    "action_pages",
    "derive_action_keys",
]

log = get_logger(__name__)

ACTION_PATH = "/email/actions/{token}"
_MAX_TOKEN = 4096
_LABEL = b"flowbiz email action links v1"
_TEMPLATES = Path(__file__).with_name("templates")
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}


class ActionRefused(Exception):
    """A token that does not open: ``reason`` is ``forged`` or ``expired``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ActionTicket:
    """What one choice link stands for (sealed in its token)."""

    tenant: str
    root: str  # the conversation: the thread's root Message-ID
    value: str  # what comes back as the ACTION's text
    label: str
    expires: int  # unix seconds
    address: str  # our address that sent the reply (the mailbox answering the click)
    parent: str  # the reply's own Message-ID: the answer threads under it
    customer: str  # who the reply went to
    name: str | None
    subject: str

    def event_id(self) -> str:
        """The dedupe id of a click: one per choice of one reply, whichever copy of its
        token (a resent reply seals the same choice again) is clicked, however often."""
        key = "\n".join((self.tenant, self.parent, self.value))
        return "action:" + hashlib.sha256(key.encode()).hexdigest()[:40]


def derive_action_keys(keys: Sequence[bytes]) -> list[bytes]:
    """One Fernet key per base key: HMAC-SHA256 under a label of its own, so a link key
    and an action key are never the same bytes."""
    return [base64.urlsafe_b64encode(hmac.digest(k, _LABEL, "sha256")) for k in keys]


class ActionSeal:
    """Seals and opens :class:`ActionTicket` tokens with the given Fernet keys."""

    def __init__(self, fernet_keys: Sequence[bytes]) -> None:
        if not fernet_keys:
            raise ValueError("action links need at least one key")
        self._fernet = MultiFernet([Fernet(k) for k in fernet_keys])

    def seal(self, ticket: ActionTicket) -> str:
        body = json.dumps(asdict(ticket), separators=(",", ":")).encode()
        return self._fernet.encrypt(body).decode("ascii")

    def open(self, token: str, *, now: float | None = None) -> ActionTicket:
        if not token or len(token) > _MAX_TOKEN or not token.isascii():
            raise ActionRefused("forged")
        try:
            data = json.loads(self._fernet.decrypt(token.encode("ascii")))
            ticket = ActionTicket(**data)
            if not isinstance(ticket.expires, int):
                raise TypeError("expires")
        except (InvalidToken, ValueError, TypeError):
            raise ActionRefused("forged") from None
        if ticket.expires < (time.time() if now is None else now):
            raise ActionRefused("expired")
        return ticket


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _page(status: int, **values: Any) -> InboundResponse:
    body = _env.get_template("action.html").render(**values).encode()
    return InboundResponse(
        status=status,
        body=body,
        content_type="text/html; charset=utf-8",
        headers=_PAGE_HEADERS,
    )


# The connector opens a token with the keys of each of its channels in turn and answers the
# ticket and the name of the channel block whose key opened it and whose tenant owns its
# address, or raises ActionRefused.
OpenTicket = Callable[[str], Awaitable[tuple[ActionTicket, str]]]


def action_pages(open_ticket: OpenTicket, count: Callable[[str], None]) -> list[Route]:
    """The GET (confirm) and POST (act) routes of the choice links."""

    async def opened(request: InboundRequest) -> tuple[ActionTicket, str] | InboundResponse:
        token = request.match_info.get("token", "")
        try:
            if not token or len(token) > _MAX_TOKEN or not token.isascii():
                raise ActionRefused("forged")
            ticket, source = await open_ticket(token)
        except ActionRefused as refused:
            count(refused.reason)
            log.warning("email.action_refused", reason=refused.reason)
            return _page(403, state=refused.reason, label="")
        return ticket, source

    async def confirm(request: InboundRequest) -> InboundResult:
        found = await opened(request)
        if isinstance(found, InboundResponse):
            return InboundResult(response=found)
        ticket, _ = found
        count("shown")
        return InboundResult(response=_page(200, state="confirm", label=ticket.label))

    async def act(request: InboundRequest) -> InboundResult:
        # The body is never read: what is chosen is sealed in the token.
        found = await opened(request)
        if isinstance(found, InboundResponse):
            return InboundResult(response=found)
        ticket, source = found
        envelope = encode_raw_event(
            event_id=ticket.event_id(),
            tenant=ticket.tenant,
            channel=Channel.EMAIL,
            source=source,
            conversation_key=conversation_key_of(ticket.tenant, "email", ticket.root, None),
            event={"action": {"value": ticket.value, "label": ticket.label}},
            context={
                "source": "action_link",
                "to": ticket.address,
                "thread_root": ticket.root,
                "reply": {
                    "parent": ticket.parent,
                    "customer": ticket.customer,
                    "name": ticket.name,
                    "subject": ticket.subject,
                },
            },
        )

        def respond(flags: Sequence[bool]) -> InboundResponse:
            new = bool(flags and flags[0])
            count("received" if new else "duplicate")
            return _page(200, state="received" if new else "duplicate", label=ticket.label)

        return InboundResult(encoded=[envelope], respond=respond)

    return [
        Route("GET", ACTION_PATH, confirm, name="email-action-confirm"),
        Route("POST", ACTION_PATH, act, name="email-action", content_types=FORM),
    ]
