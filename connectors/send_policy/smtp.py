"""Reads aiosmtplib's errors for :class:`connectors.send_policy.map_delivery_errors`.

A reply from the server (:class:`SMTPResponseException`, also at the greeting) is an answer
whose ``platform_code`` is the reply code: 4xx means try again later
(``platform_unavailable``), 530/534/535/538 that our credentials or TLS were refused
(``unauthorized``), any other 5xx ``rejected``. A failed connect is ``NOT_SENT``; a dropped
or timed-out connection after that is ``MAYBE_SENT`` (during DATA the server may have taken
the message).
"""

from __future__ import annotations

import aiosmtplib

from connectors.send_policy import DeliveryFailure, PlatformAnswer, Transport

__all__ = ["read_smtp"]

_AUTH_CODES = frozenset({530, 534, 535, 538})


def read_smtp(exc: BaseException) -> PlatformAnswer | Transport | None:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if 400 <= exc.code < 500:
            failure = DeliveryFailure.PLATFORM_UNAVAILABLE
        elif exc.code in _AUTH_CODES:
            failure = DeliveryFailure.UNAUTHORIZED
        else:
            failure = DeliveryFailure.REJECTED
        return PlatformAnswer(None, str(exc.code), detail=exc.message, failure=failure)
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return Transport.NOT_SENT
    if isinstance(exc, aiosmtplib.SMTPException):
        return Transport.MAYBE_SENT
    return None
