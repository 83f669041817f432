"""A typed Python client for the gateway: the admin API (:class:`AdminClient`), the HTTP
API channel (:class:`ChannelClient`) and the check a callback receiver makes
(:func:`verify_callback`), with one exception tree (:mod:`gateway.client.errors`).

Answers are parsed with the pydantic models the server writes them with, and the routes the
clients call are held to ``/v1/openapi.json`` by the tests (docs/admin-api.md, "The Python
client").
"""

from gateway.client.admin import ADMIN_ROUTES, AdminClient
from gateway.client.channel import CHANNEL_ROUTES, ChannelClient, VerifiedCallback, verify_callback
from gateway.client.errors import (
    ApiError,
    AuthenticationError,
    ClientError,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    SignatureError,
    TransportError,
    Unavailable,
)

__all__ = [
    "ADMIN_ROUTES",
    "CHANNEL_ROUTES",
    "AdminClient",
    "ApiError",
    "AuthenticationError",
    "ChannelClient",
    "ClientError",
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "SignatureError",
    "TransportError",
    "Unavailable",
    "VerifiedCallback",
    "verify_callback",
]
