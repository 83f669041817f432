"""What an inbound source (the SMTP listener, an IMAP mailbox) hands the connector, and
what it gets back.

Every source ends in the edge's ``accept`` (:class:`connectors.email.edge.MailEdge`), which
makes the message durable before the source acknowledges it (SMTP 250, the IMAP flag). The
IMAP poller (:mod:`connectors.email.imap`) sees the edge only through :class:`MailIntake`,
so it does not import the connector that starts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from connectors.base import ConnectorContext

__all__ = ["InboundOutcome", "MailIntake"]


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    outcome: Literal["ingested", "duplicate", "suppressed", "quarantined"]
    reason: str = ""


class MailIntake(Protocol):
    """The connector's edge as an inbound source sees it (``MailEdge``)."""

    context: ConnectorContext

    async def accept(
        self,
        raw: bytes,
        *,
        recipients: Sequence[str],
        mail_from: str | None,
        source: Literal["smtp", "imap"],
    ) -> InboundOutcome: ...

    # The edge's own metric and quarantine steps, which the poller reuses so that a
    # message screened by IMAP is counted and kept exactly like one screened over SMTP.
    def event(self, event: str) -> None: ...

    async def quarantine_unfetched(
        self, tenant: str, address: str, *, size: int, reason: str, source: str
    ) -> None: ...
