"""Reads the LINE SDK's (``linebot.v3``) refusals for
:class:`connectors.send_policy.map_delivery_errors`.

An :class:`ApiException` carries the HTTP status (also the ``platform_code``: LINE's body
has a message but no code), the headers (``Retry-After``) and LINE's ``message``, kept as
the detail (200 characters at most).
"""

from __future__ import annotations

import json

from linebot.v3.messaging.exceptions import ApiException

from connectors.send_policy import PlatformAnswer

__all__ = ["line_body_text", "read_line"]

_MAX_DETAIL = 200


def line_body_text(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return str(body or "")


def read_line(exc: BaseException) -> PlatformAnswer | None:
    if not isinstance(exc, ApiException):
        return None
    status = int(exc.status or 0)
    try:
        detail = str(json.loads(line_body_text(exc)).get("message", ""))[:_MAX_DETAIL]
    except (ValueError, AttributeError):
        detail = ""
    headers = dict(exc.headers) if exc.headers else None
    return PlatformAnswer(status, str(status), headers=headers, detail=detail)
