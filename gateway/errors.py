"""Every exception the gateway raises on purpose, in one tree.

::

    GatewayError
    ├── ConfigError                  the configuration file is invalid (carries every problem)
    ├── InboundError                 an inbound request cannot be accepted
    │   ├── VerificationError        missing, wrong or stale signature / credential  -> 401/403
    │   ├── UnknownTenantError       nothing in the configuration owns this request   -> 404
    │   ├── PayloadError             malformed, unsupported or oversized body         -> 400/413
    │   │   └── CursorError          a paging cursor that is not a well-formed entry id -> 400
    │   ├── IngestUnavailableError   the store could not make the message durable     -> 503
    │   └── EventParseError          a verified, stored event the worker cannot parse -> dead letter
    ├── DeliveryError                an outbound message could not be delivered; carries a
    │   │                            DeliveryFailure code (dead-letter code, metric label)
    │   │                            and the platform's own code, if it gave one
    │   ├── TransientDeliveryError   try again later (carries an optional Retry-After)
    │   └── PermanentDeliveryError   never retry; goes to the dead-letter list
    ├── StoreError                   the store failed or is unreachable
    └── AgentError                   an agent failed or timed out while answering

Callers catch the narrowest class they can act on; nothing catches ``Exception`` merely to
log it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AgentError",
    "ConfigError",
    "CursorError",
    "DeliveryError",
    "DeliveryFailure",
    "EventParseError",
    "GatewayError",
    "InboundError",
    "IngestUnavailableError",
    "PayloadError",
    "PermanentDeliveryError",
    "StoreError",
    "TransientDeliveryError",
    "UnknownTenantError",
    "VerificationError",
]


class GatewayError(Exception):
    """Base of every error the gateway raises deliberately."""


class ConfigError(GatewayError):
    """The configuration is invalid; ``problems`` holds one ``(path, message)`` per fault."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {message}" for path, message in problems))


class InboundError(GatewayError):
    """An inbound request was refused. ``reason`` is a short, stable label for metrics."""

    status: int = 400
    reason: str = "bad_request"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class VerificationError(InboundError):
    """The request's signature or credential is missing, wrong or stale."""

    status = 401
    reason = "bad_signature"

    def __init__(self, message: str, *, reason: str | None = None, status: int = 401) -> None:
        super().__init__(message, reason=reason)
        self.status = status


class UnknownTenantError(InboundError):
    """No configured tenant or channel owns this request."""

    status = 404
    reason = "unknown_tenant"


class PayloadError(InboundError):
    """The body is malformed, unsupported or too large."""

    status = 400
    reason = "bad_payload"

    def __init__(self, message: str, *, reason: str | None = None, status: int = 400) -> None:
        super().__init__(message, reason=reason)
        self.status = status


class EventParseError(InboundError):
    """A verified event, already acknowledged and stored, that its connector cannot turn into
    a message. Raised by ``Connector.parse`` in the worker; the event goes to the dead-letter
    list with ``reason`` and its envelope, to be replayed once the parser can read it."""

    reason = "unparsable_event"


class CursorError(PayloadError):
    """A caller's paging cursor (``after=``) is not an entry id this store could ever issue.

    Raised by every store's ``range`` and ``read_log`` alike (see
    :mod:`gateway.store.cursors`), before the store is asked anything: retrying cannot help,
    so it is a 400, never a 503 that a client would retry forever.
    """

    reason = "bad_cursor"

    def __init__(self, message: str = "after= is not a cursor this API returned") -> None:
        super().__init__(message, reason=self.reason, status=400)


class IngestUnavailableError(InboundError):
    """The store could not make the message durable, so it must not be acknowledged."""

    status = 503
    reason = "store_unavailable"


class DeliveryFailure(StrEnum):
    """Why a delivery failed, the same word on every channel: the dead letter's ``code`` and
    the ``reason`` label of ``flowbiz_dead_letters_total``.

    A closed set, so a metric label cannot grow with what a platform answers; the platform's
    own error (Slack's ``channel_not_found``, Twilio's ``21211``, an SMTP ``550``) travels
    beside it as ``platform_code``.
    """

    # The transport
    NETWORK = "network"  # never reached the platform, or an idempotent request broke off
    OUTCOME_UNKNOWN = "outcome_unknown"  # broke off after the request went out: maybe sent
    SSRF = "ssrf"  # the URL resolves to an address the SSRF guard refuses
    # What the platform answered
    RATE_LIMITED = "rate_limited"  # 429 and the platforms' own "slow down" codes
    PLATFORM_UNAVAILABLE = "platform_unavailable"  # 5xx, 408, SMTP 4xx: try again later
    UNAUTHORIZED = "unauthorized"  # our credentials were refused (401/403, invalid_auth)
    REJECTED = "rejected"  # any other refusal of this message
    WINDOW_CLOSED = "window_closed"  # WhatsApp: outside the 24-hour window, no template
    # Decided by the gateway before sending
    NO_CHANNEL = "no_channel"  # no configured channel may send this reply
    BAD_REPLY_CONTEXT = "bad_reply_context"  # the reply context is not this channel's
    BAD_ADDRESS = "bad_address"  # the recipient is not an address we may write to
    HEADER_BLOCK = "header_block"  # email: the reply's header block failed its check
    LOOP = "loop"  # email: the reply would go to one of our own addresses
    EMPTY = "empty"  # nothing to send
    QUOTA_EXCEEDED = "quota_exceeded"  # the tenant's paid-message quota is used up
    REPLY_RATE_CAPPED = "reply_rate_capped"  # email: a thread's reply rate cap was reached
    STOPPING = "stopping"  # the connector is shutting down; another process will send it

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (a transient failure)."""
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {
        DeliveryFailure.NETWORK,
        DeliveryFailure.RATE_LIMITED,
        DeliveryFailure.PLATFORM_UNAVAILABLE,
        DeliveryFailure.STOPPING,
    }
)


class DeliveryError(GatewayError):
    """Delivery of an outbound message failed, for the reason ``code`` names.

    ``platform_code`` is the platform's own word for it when it gave one (an HTTP status,
    Slack's ``error``, Twilio's error code, an SMTP reply code), kept for operators.
    """

    def __init__(
        self, message: str, *, code: DeliveryFailure, platform_code: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.platform_code = platform_code


class TransientDeliveryError(DeliveryError):
    """A failure worth retrying; ``retry_after`` is the platform's requested wait, if any."""

    def __init__(
        self,
        message: str,
        *,
        code: DeliveryFailure,
        platform_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, platform_code=platform_code)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """A failure that no retry can fix; the message is dead-lettered with this reason."""


class StoreError(GatewayError):
    """The store failed or could not be reached."""


class AgentError(GatewayError):
    """An agent failed, returned something unusable, or ran past its timeout."""
