"""Reads the Twilio SDK's refusals for :class:`connectors.send_policy.map_delivery_errors`.

:class:`TwilioRestException` and :class:`TwilioServiceException` carry the HTTP status and
Twilio's error code (the ``platform_code``, e.g. ``21211``) but no headers: the caller
passes the response's headers to the mapper (``response_headers``) for ``Retry-After``.
Twilio's message is left out of the detail: it can quote the recipient's number.
"""

from __future__ import annotations

from twilio.base.exceptions import TwilioRestException, TwilioServiceException

from connectors.send_policy import PlatformAnswer

__all__ = ["read_twilio"]


def read_twilio(exc: BaseException) -> PlatformAnswer | None:
    if not isinstance(exc, TwilioRestException | TwilioServiceException):
        return None
    status = int(exc.status)
    code = str(exc.code) if exc.code is not None else str(status)
    return PlatformAnswer(status, code)
