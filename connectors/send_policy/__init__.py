"""The connectors' shared send policy: one mapping from what went wrong on the wire to the
gateway's delivery errors, and the UTF-16 lengths platforms count in.

Guarantees:

- :class:`map_delivery_errors` (a context manager, ``with`` or ``async with``, in the style
  of httpx's ``map_exceptions``) turns every transport failure and platform refusal raised
  inside it into a :class:`~gateway.errors.TransientDeliveryError` or
  :class:`~gateway.errors.PermanentDeliveryError` with a
  :class:`~gateway.errors.DeliveryFailure` code, the platform's own code and its
  ``Retry-After``, so one failure is the same code on every channel:

  ==========================================  ==============================================
  what happened                               delivery error
  ==========================================  ==============================================
  the SSRF guard refused the address          permanent ``ssrf``
  the connection never opened (refused, DNS,  transient ``network``: nothing was written
  connect timeout)
  broke off after the request went out        transient ``network`` if the request is
  (timeout, reset, server disconnected)       ``idempotent`` (the platform dedupes a
                                              retry), else permanent ``outcome_unknown``:
                                              never resent blindly
  the platform answered with a refusal        by the platform's code (``codes``), else by
                                              status: 429 ``rate_limited``; 408, 425, 5xx
                                              ``platform_unavailable``; 401, 403
                                              ``unauthorized``; others ``rejected``
  ==========================================  ==============================================

  Errors it does not recognise (a bug, a cancellation) and delivery errors raised inside it
  pass through unchanged. The SDKs' exceptions are read by the readers beside this module
  (:mod:`.slack`, :mod:`.line`, :mod:`.twilio`, :mod:`.smtp`), each importing only its own
  SDK; aiohttp's and asyncio's are read here.
- :func:`utf16_len` and :func:`utf16_fit` count as LINE, Slack and Twilio count: UTF-16
  code units, so a character outside the BMP (most emoji) counts 2.

The pieces the pipeline and the agents use too (``Retry-After`` parsing, the failure codes,
:func:`record_until_stored`) live in the kernel, :mod:`gateway.send_policy`, and are
re-exported here.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import aiohttp

from gateway.errors import (
    DeliveryError,
    DeliveryFailure,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from gateway.netguard import refused_by_guard
from gateway.send_policy import record_until_stored, retry_after_seconds

__all__ = [
    "DeliveryFailure",
    "PlatformAnswer",
    "Reader",
    "Transport",
    "answer_error",
    "failure_for_status",
    "map_delivery_errors",
    "record_until_stored",
    "retry_after_seconds",
    "utf16_fit",
    "utf16_len",
]


class Transport(enum.Enum):
    """How far a request got when the connection failed."""

    NOT_SENT = "not_sent"  # the connection never opened: the platform has nothing
    MAYBE_SENT = "maybe_sent"  # it broke off after the request may have been written


@dataclass(frozen=True, slots=True)
class PlatformAnswer:
    """A platform's refusal, read from its SDK's exception or its HTTP response."""

    status: int | None  # the HTTP status; None where the protocol has none (SMTP)
    platform_code: str | None = None  # the platform's own code: Slack's error, Twilio's, SMTP
    headers: Mapping[str, str] | None = None  # for Retry-After
    detail: str = ""  # a short explanation for the dead letter's reason
    failure: DeliveryFailure | None = None  # decided by the reader (SMTP); else by status


Reader = Callable[[BaseException], PlatformAnswer | Transport | None]
"""Reads one SDK's exceptions: an answer, how far a broken request got, or None if not its."""


def failure_for_status(status: int) -> DeliveryFailure:
    """The failure an HTTP error status means, whoever answered it."""
    if status == 429:
        return DeliveryFailure.RATE_LIMITED
    if status in (408, 425) or status >= 500:
        return DeliveryFailure.PLATFORM_UNAVAILABLE
    if status in (401, 403):
        return DeliveryFailure.UNAUTHORIZED
    return DeliveryFailure.REJECTED


def answer_error(
    what: str,
    answer: PlatformAnswer,
    *,
    codes: Mapping[str, DeliveryFailure] | None = None,
    headers: Mapping[str, str] | None = None,
) -> DeliveryError:
    """The delivery error for ``answer``; ``what`` names who answered (``"LINE push"``).

    ``codes`` maps platform codes with a meaning of their own (Twilio's 63016, Slack's
    ``ratelimited``) to their failure; ``headers`` are used when the answer carries none.
    """
    failure = None
    if codes is not None and answer.platform_code is not None:
        failure = codes.get(answer.platform_code)
    if failure is None:
        failure = answer.failure or failure_for_status(answer.status or 0)
    said = [str(answer.status)] if answer.status is not None else []
    if answer.platform_code is not None and answer.platform_code not in said:
        said.append(answer.platform_code)
    message = f"{what} answered {' '.join(said) or 'with an error'}"
    if answer.detail:
        message += f": {answer.detail}"
    if not failure.retryable:
        return PermanentDeliveryError(message, code=failure, platform_code=answer.platform_code)
    found = answer.headers if answer.headers is not None else headers
    return TransientDeliveryError(
        message,
        code=failure,
        platform_code=answer.platform_code,
        retry_after=retry_after_seconds(found.get("Retry-After") if found is not None else None),
    )


def _read_aiohttp(exc: BaseException) -> PlatformAnswer | Transport | None:
    """aiohttp's, asyncio's and the socket layer's exceptions."""
    if isinstance(exc, aiohttp.ClientResponseError):  # raise_for_status(): an answer
        return PlatformAnswer(
            exc.status, str(exc.status), headers=exc.headers if exc.headers else None
        )
    if isinstance(
        exc,
        aiohttp.ClientConnectorError
        | aiohttp.ConnectionTimeoutError
        | ConnectionRefusedError
        | socket.gaierror,
    ):
        return Transport.NOT_SENT
    if isinstance(exc, TimeoutError | aiohttp.ClientError | OSError):
        return Transport.MAYBE_SENT
    return None


class map_delivery_errors:  # lower case: used like a function, as contextlib's are
    """Map what a send raises to a delivery error (see the module docstring).

    ``what`` names the call in messages (``"Slack"``, ``"LINE push"``); ``idempotent``
    says whether the platform drops a repeat of this request (a retry key, an idempotency
    header), which makes a request that broke off safe to try again. ``read`` are the SDK
    readers to try before aiohttp's; ``response_headers`` supplies a ``Retry-After`` for
    SDKs whose exceptions carry no headers.
    """

    __slots__ = ("_codes", "_headers", "_idempotent", "_readers", "_what")

    def __init__(
        self,
        what: str,
        *,
        idempotent: bool,
        read: Sequence[Reader] = (),
        codes: Mapping[str, DeliveryFailure] | None = None,
        response_headers: Callable[[], Mapping[str, str] | None] | None = None,
    ) -> None:
        self._what = what
        self._idempotent = idempotent
        self._readers = (*read, _read_aiohttp)
        self._codes = codes
        self._headers = response_headers

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        mapped = self.error_for(exc)
        if mapped is not None:
            raise mapped from exc

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)

    def error_for(self, exc: BaseException) -> DeliveryError | None:
        """The delivery error ``exc`` maps to, or None to let it pass unchanged."""
        if isinstance(exc, DeliveryError) or not isinstance(exc, Exception):
            return None  # already decided, or a cancellation / exit: not ours to map
        refused = refused_by_guard(exc)
        if refused is not None:  # the URL's DNS answer names an address we may not reach
            return PermanentDeliveryError(
                f"{self._what} refused: {refused}", code=DeliveryFailure.SSRF
            )
        for read in self._readers:
            reading = read(exc)
            if reading is None:
                continue
            if isinstance(reading, PlatformAnswer):
                headers = self._headers() if self._headers is not None else None
                return answer_error(self._what, reading, codes=self._codes, headers=headers)
            return self._transport_error(exc, reading)
        return None

    def _transport_error(self, exc: BaseException, how_far: Transport) -> DeliveryError:
        name = type(exc).__name__
        if how_far is Transport.NOT_SENT:
            return TransientDeliveryError(
                f"cannot reach {self._what}: {name}", code=DeliveryFailure.NETWORK
            )
        if self._idempotent:  # the platform drops a repeat of this request: retry
            return TransientDeliveryError(
                f"{self._what} broke off: {name}", code=DeliveryFailure.NETWORK
            )
        # The request may have been written and acted on; sending again could deliver it
        # twice, so the dispatcher dead-letters it for an operator to check.
        return PermanentDeliveryError(
            f"{self._what} did not answer ({name}); it may have the message",
            code=DeliveryFailure.OUTCOME_UNKNOWN,
        )


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, as LINE, Slack and Twilio count message limits."""
    return len(text.encode("utf-16-le")) // 2


def utf16_fit(text: str, limit: int) -> int:
    """How many characters of ``text`` fit in ``limit`` UTF-16 code units (never half a
    surrogate pair)."""
    if utf16_len(text) <= limit:
        return len(text)
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)
