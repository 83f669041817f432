"""What every outbound path shares, below the pipeline: the platform's requested wait, the
delivery failure codes, and writing a record of a send that already happened.

Guarantees:

- :func:`retry_after_seconds` reads a ``Retry-After`` value in both of its forms (RFC 9110
  §10.2.3: delta-seconds, or an HTTP-date) and returns a wait between 0 and ``cap``
  seconds, or ``None`` for anything else; a date in the past is 0, a huge wait is ``cap``.
  Garbage never raises.
- :class:`DeliveryFailure` (defined with the exception tree in :mod:`gateway.errors`) is the
  one vocabulary of delivery failures: a dead letter's ``code`` and the ``reason`` label of
  ``flowbiz_dead_letters_total`` on every channel.
- :func:`record_until_stored` retries a store write until it lands, for records of sends
  that already reached the platform: letting the error out would make the next attempt send
  a second copy. Only :class:`~gateway.errors.StoreError` is retried; the caller's deadline
  (the dispatcher's delivery timeout) bounds the wait.

The connectors' half (transport-error mapping, UTF-16 lengths) is
:mod:`connectors.send_policy`, which re-exports these.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from gateway.errors import DeliveryFailure, StoreError
from gateway.observability import get_logger

__all__ = [
    "MAX_RETRY_AFTER_SECONDS",
    "DeliveryFailure",
    "record_until_stored",
    "retry_after_seconds",
]

log = get_logger(__name__)

MAX_RETRY_AFTER_SECONDS = 3600.0
"""No platform's wish holds a message longer than this (callers cap lower as they see fit)."""

# delta-seconds is 1*DIGIT; a fraction is not in the RFC, but some servers (and our
# emulators) send one and it means what it says.
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_FIRST_RECORD_RETRY_SECONDS = 0.1
_MAX_RECORD_RETRY_SECONDS = 2.0


def retry_after_seconds(
    value: str | None,
    *,
    cap: float = MAX_RETRY_AFTER_SECONDS,
    now: datetime | None = None,
) -> float | None:
    """The wait a ``Retry-After`` value asks for, in ``[0, cap]`` seconds; ``None`` if absent
    or unreadable (negative numbers included: delta-seconds has no sign)."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64:  # the longest HTTP-date is 29 characters
        return None
    seconds = float(text) if _DELTA_SECONDS.fullmatch(text) else _seconds_until(text, now)
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), max(cap, 0.0))


def _seconds_until(text: str, now: datetime | None) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": the zone is unknown; HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return (when - (now or datetime.now(UTC))).total_seconds()


async def record_until_stored(write: Callable[[], Awaitable[object]], *, event: str) -> None:
    """Run ``write`` until it succeeds, backing off 0.1 s doubling to 2 s while the store
    fails; each failure is logged as ``event`` (a dotted name such as ``line.record_retry``).

    Only for writes that are safe to repeat (records are overwritten, acks idempotent).
    """
    delay = _FIRST_RECORD_RETRY_SECONDS
    while True:
        try:
            await write()
            return
        except StoreError as exc:
            log.warning(event, error=str(exc))
        await asyncio.sleep(delay)
        delay = min(2 * delay, _MAX_RECORD_RETRY_SECONDS)
