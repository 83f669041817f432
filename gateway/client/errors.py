"""The client's exceptions: one tree under :class:`ClientError`.

An answer the gateway refused is an :class:`ApiError` (a subclass per kind of status, each
carrying the status, the ``error`` code and ``message`` of the JSON body, and ``Retry-After``
when sent); a request that got no answer is a :class:`TransportError`; a callback whose
signature does not verify is a :class:`SignatureError`. Catching ``ClientError`` catches all.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ApiError",
    "AuthenticationError",
    "ClientError",
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "SignatureError",
    "TransportError",
    "Unavailable",
    "api_error",
]


class ClientError(Exception):
    """Anything the client raises."""


class TransportError(ClientError):
    """No answer: the connection failed or timed out (the request may or may not have arrived)."""


class SignatureError(ClientError):
    """A callback's ``X-FlowBiz-Signature`` is missing, malformed, stale or does not match."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ApiError(ClientError):
    """The gateway answered with an error status."""

    def __init__(
        self, status: int, error: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {error}: {message}" if message else f"{status} {error}")
        self.status = status
        self.error = error
        self.message = message
        self.retry_after = retry_after


class InvalidRequest(ApiError):
    """400, 413 or 422: the request could not be read, was too large or broke the schema."""


class AuthenticationError(ApiError):
    """401: no credential, or an unknown, revoked or wrong one (or a bad signature)."""


class PermissionDenied(ApiError):
    """403: the key's role or tenant scope does not allow this."""


class NotFound(ApiError):
    """404: nothing by that name (or not visible to this key)."""


class Conflict(ApiError):
    """409: the resource is not in a state that allows this."""


class RateLimited(ApiError):
    """429: over quota or rate limit; ``retry_after`` says when to try again, if known."""


class Unavailable(ApiError):
    """503: the store (or another subsystem) is unreachable; retry after ``retry_after``."""


_BY_STATUS: Mapping[int, type[ApiError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}


def api_error(
    status: int, error: str, message: str, *, retry_after: float | None = None
) -> ApiError:
    """The exception for an error answer: the subclass of its status, else ``ApiError``."""
    kind = _BY_STATUS.get(status, ApiError)
    return kind(status, error, message, retry_after=retry_after)
