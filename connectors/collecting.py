"""A connector that keeps what it is asked to send instead of calling a platform.

:class:`CollectingConnector` implements the :class:`~connectors.base.Connector` contract the
way a platform connector does (a receipt per send, or a
:class:`~gateway.errors.TransientDeliveryError` / :class:`~gateway.errors.PermanentDeliveryError`
the dispatcher acts on, an optional pacing bucket), and records every call. It is the output
channel for exercising the pipeline without a platform: the worker and dispatcher tests, a
local run, a playground. It has no routes and no listeners; it serves whatever channel kind
it is registered under (the receipt names the message's channel).

It guarantees: every call to :meth:`CollectingConnector.send` is in ``attempts`` in call
order, with its outcome; a message is in ``sent`` once per successful call; failures armed
with :meth:`CollectingConnector.fail_next` are spent one per call, in the order armed.

Its stored events (the worker's parse step, gateway/envelope.py) are messages in their JSON
form without the fields the edge fixes (id, trace id, arrival, event id): ``{"message":
{...}}``, or ``{"ignore": true}`` for an event that needs no turn. Anything else is an event
it cannot read; :meth:`CollectingConnector.break_parser` makes the next parse raise an
arbitrary exception, as a parser defect would.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import ValidationError

from connectors.base import ALL_MEDIA, ChannelCapabilities, Pacing, Route
from gateway.envelope import RawEvent
from gateway.errors import (
    DeliveryFailure,
    EventParseError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.models import Channel, DeliveryReceipt, InboundMessage, OutboundMessage

__all__ = ["CollectingConnector", "SendAttempt"]

Outcome = Literal["sent", "transient", "permanent"]


@dataclass(frozen=True, slots=True)
class SendAttempt:
    """One call to ``send``: the message, what came of it, and when (``time.monotonic``)."""

    message: OutboundMessage
    outcome: Outcome
    at: float


@dataclass(frozen=True, slots=True)
class _Failure:
    permanent: bool
    code: DeliveryFailure
    platform_code: str | None
    retry_after: float | None


class CollectingConnector:
    """Records sends; fails the next ones on request. See the module docstring."""

    channel: ClassVar[Channel] = Channel.HTTP
    capabilities: ClassVar[ChannelCapabilities] = ChannelCapabilities(
        buttons=True,
        threads=True,
        markdown=True,
        attachments=True,
        cards=True,
        quick_replies=True,
        options=True,
        media_out=ALL_MEDIA,
    )

    def __init__(self, *, pacing: Pacing | None = None) -> None:
        self._pacing = pacing
        self.sent: list[OutboundMessage] = []
        self.attempts: list[SendAttempt] = []
        self._failures: deque[_Failure] = deque()
        self._parser_defects: deque[Exception] = deque()
        self._changed = asyncio.Condition()

    # -- what the test or the operator sets up ------------------------------------------------
    def fail_next(
        self,
        count: int = 1,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
        code: DeliveryFailure | None = None,
        platform_code: str | None = None,
    ) -> None:
        """Make the next ``count`` sends fail: transiently (retried by the dispatcher, after
        ``retry_after`` seconds when given) or, with ``permanent``, for good."""
        failure = _Failure(
            permanent=permanent,
            code=code
            or (DeliveryFailure.REJECTED if permanent else DeliveryFailure.PLATFORM_UNAVAILABLE),
            platform_code=platform_code,
            retry_after=retry_after,
        )
        self._failures.extend([failure] * count)

    def break_parser(self, error: Exception) -> None:
        """Make the next ``parse`` raise ``error`` (a defect, not an EventParseError)."""
        self._parser_defects.append(error)

    @property
    def texts(self) -> list[str]:
        return [m.text for m in self.sent]

    async def wait_for(self, count: int, *, timeout: float = 5.0) -> list[OutboundMessage]:
        """The sent messages once there are at least ``count`` (TimeoutError otherwise)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.sent) >= count)
        return list(self.sent)

    async def wait_for_attempts(self, count: int, *, timeout: float = 5.0) -> list[SendAttempt]:
        """The attempts once there are at least ``count``, whatever their outcome."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.attempts) >= count)
        return list(self.attempts)

    # -- the Connector contract -----------------------------------------------------------------
    def routes(self) -> Sequence[Route]:
        return ()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def pacing(self, message: OutboundMessage) -> Pacing | None:
        return self._pacing

    async def parse(self, event: RawEvent) -> InboundMessage | None:
        if self._parser_defects:
            raise self._parser_defects.popleft()
        body = event.event
        if isinstance(body, dict) and body.get("ignore") is True:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
            raise EventParseError("not a collected message", reason="malformed_event")
        fixed = {
            "id": event.id,
            "trace_id": event.trace_id,
            "received_at": event.received_at,
            "event_id": event.event_id,
        }
        try:
            return InboundMessage.model_validate({**body["message"], **fixed})
        except ValidationError as exc:
            raise EventParseError(
                f"not a message: {exc.error_count()} errors", reason="malformed_event"
            ) from exc

    async def send(self, message: OutboundMessage) -> DeliveryReceipt:
        failure = self._failures.popleft() if self._failures else None
        outcome: Outcome = (
            "sent" if failure is None else "permanent" if failure.permanent else "transient"
        )
        async with self._changed:
            self.attempts.append(SendAttempt(message, outcome, time.monotonic()))
            if failure is None:
                self.sent.append(message)
            self._changed.notify_all()
        if failure is not None and failure.permanent:
            raise PermanentDeliveryError(
                "refused by the collecting connector",
                code=failure.code,
                platform_code=failure.platform_code,
            )
        if failure is not None:
            raise TransientDeliveryError(
                "collecting connector unavailable",
                code=failure.code,
                platform_code=failure.platform_code,
                retry_after=failure.retry_after,
            )
        return DeliveryReceipt(
            outbound_id=message.id,
            idempotency_key=message.idempotency_key,
            channel=message.conversation.channel,
            status="sent",
            platform_message_id=f"collected-{len(self.sent)}",
        )
