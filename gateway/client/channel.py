"""``ChannelClient``: the HTTP API channel as a website's backend uses it, and
``verify_callback`` for the receiver of its reply webhooks.

Guarantees: a request is authenticated exactly as the edge checks it — a bearer channel API
key, or a v2 ``X-FlowBiz-Signature`` made by :func:`gateway.signing.sign_request` over the
URL actually sent (query included) — and its answer is parsed with the models the edge
writes (:mod:`connectors.http_api.schemas`). :func:`verify_callback` accepts a callback only
if :func:`gateway.signing.verify_request` verifies its v2 signature over ``POST``, the
callback URL's path and query, and the body, with one of the secrets, inside the tolerance,
and its body is an :class:`~connectors.http_api.schemas.HttpReply`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from pydantic import BaseModel, ValidationError

from connectors.http_api.schemas import (
    HttpAccepted,
    HttpMessage,
    HttpReplies,
    HttpReply,
    HttpUser,
)
from gateway.client.errors import ClientError, InvalidRequest, SignatureError
from gateway.client.transport import Route, Transport, error_of, parse
from gateway.errors import VerificationError
from gateway.signing import SIGNATURE_HEADER, sign_request, verify_request

__all__ = [
    "CHANNEL_ROUTES",
    "IDEMPOTENCY_HEADER",
    "ChannelClient",
    "VerifiedCallback",
    "verify_callback",
]

IDEMPOTENCY_HEADER = "X-FlowBiz-Idempotency-Key"
M = TypeVar("M", bound=BaseModel)


_SEND = Route("POST", "/v1/channels/http/{tenant}/messages", HttpAccepted, 202, HttpMessage)
_REPLIES = Route(
    "GET", "/v1/channels/http/{tenant}/conversations/{conversation_id}/replies", HttpReplies
)
# Keyed by the ChannelClient method that calls each route.
CHANNEL_ROUTES: Mapping[str, Route[Any]] = {"send_message": _SEND, "replies": _REPLIES}


class ChannelClient(Transport):
    """One tenant's HTTP channel on the public listener (``base_url``).

    Authenticate with ``api_key`` (one of the channel's ``api_keys``) or ``signing_secrets``
    (the channel's ``signing_secrets``; during a rotation pass both, newest first, and each
    request carries one v2 entry per secret) — exactly one of the two.
    """

    def __init__(
        self,
        base_url: str,
        tenant: str,
        *,
        api_key: str | None = None,
        signing_secrets: Sequence[str] = (),
        session: aiohttp.ClientSession | None = None,
        timeout: float = 60.0,
    ) -> None:
        if isinstance(signing_secrets, str):
            raise TypeError("signing_secrets is a sequence of secrets, not one string")
        if (api_key is None) == (not signing_secrets):
            raise ValueError("give exactly one of api_key and signing_secrets")
        super().__init__(base_url, session=session, timeout=timeout)
        self.tenant = tenant
        self._api_key = api_key
        self._secrets = list(signing_secrets)

    def _url(self, route: Route[Any], **params: str) -> str:
        quoted = {name: quote(value, safe="") for name, value in params.items()}
        return self.base_url + route.path.format(tenant=quote(self.tenant, safe=""), **quoted)

    async def _call(
        self, route: Route[M], url: str, body: bytes | None = None, *, wait: float = 0
    ) -> M:
        if self._api_key is not None:
            headers = {"Authorization": f"Bearer {self._api_key}"}
        else:
            # Signed over the URL as sent, query included: what is signed is what arrives.
            headers = {
                SIGNATURE_HEADER: sign_request(self._secrets, route.method, url, body or b"")
            }
        if body is not None:
            headers["Content-Type"] = "application/json"
        # A long poll holds the answer for up to ``wait`` seconds: the limit is on top of it.
        timeout = self.timeout + wait
        answer = await self.request(route.method, url, headers=headers, body=body, timeout=timeout)
        if answer.status != route.status:
            raise error_of(answer)
        return parse(route, answer)

    async def send_message(self, message: HttpMessage) -> HttpAccepted:
        """Post one customer message. The answer's ``duplicate`` is true when its
        ``event_id`` (or, signed without one, this very request) was seen before."""
        body = message.model_dump_json(exclude_none=True).encode()
        return await self._call(_SEND, self._url(_SEND), body)

    async def send(
        self,
        conversation_id: str,
        text: str = "",
        *,
        user_id: str,
        user_name: str | None = None,
        event_id: str | None = None,
        thread: str | None = None,
        action: str | None = None,
    ) -> HttpAccepted:
        """:meth:`send_message` from its fields; arguments the edge would refuse raise
        InvalidRequest (422, ``invalid_body``) before anything is sent."""
        try:
            message = HttpMessage(
                conversation_id=conversation_id,
                event_id=event_id,
                thread=thread,
                user=HttpUser(id=user_id, name=user_name),
                text=text,
                action=action,
            )
        except ValidationError as exc:
            raise InvalidRequest(422, "invalid_body", str(exc)) from exc
        return await self.send_message(message)

    async def replies(
        self,
        conversation_id: str,
        *,
        after: str | None = None,
        wait: float = 0,
        thread: str | None = None,
    ) -> HttpReplies:
        """The conversation's retained replies after the cursor ``after`` (the ``next`` of
        the previous answer), waiting up to ``wait`` seconds (at most 30) for one."""
        query = {"wait": f"{wait:g}"}
        if after is not None:
            query["after"] = after
        if thread is not None:
            query["thread"] = thread
        url = self._url(_REPLIES, conversation_id=conversation_id) + "?" + urlencode(query)
        return await self._call(_REPLIES, url, wait=wait)


@dataclass(frozen=True, slots=True)
class VerifiedCallback:
    """A reply callback whose signature verified."""

    reply: HttpReply
    idempotency_key: str  # the same on every retry of this reply: dedupe on it
    timestamp: int  # when it was signed (unix seconds)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Any mapping: aiohttp's headers are case-insensitive, a plain dict is not.
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def verify_callback(
    headers: Mapping[str, str],
    body: bytes,
    url: str,
    secrets: Sequence[str],
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> VerifiedCallback:
    """Check a reply callback as received: its headers, its raw body, and ``url`` — the
    callback URL it was sent to (a full URL, or the request's raw ``/path?query``).

    ``secrets`` are the channel's ``callback_secrets`` (both during a rotation). Raises
    :class:`~gateway.client.errors.SignatureError` (with the gateway's reason code) unless
    the v2 signature verifies, and :class:`~gateway.client.errors.ClientError` when a
    verified body is not a reply.
    """
    target = urlsplit(url)
    try:
        signed = verify_request(
            _header(headers, SIGNATURE_HEADER),
            "POST",
            target.path or "/",
            target.query,
            body,
            secrets,
            tolerance=tolerance,
            now=now,
        )
    except VerificationError as exc:
        raise SignatureError(str(exc), reason=exc.reason) from exc
    try:
        reply = HttpReply.model_validate_json(body)
    except ValidationError as exc:
        raise ClientError(f"a signed callback that is not a reply: {exc}") from exc
    return VerifiedCallback(
        reply=reply,
        idempotency_key=_header(headers, IDEMPOTENCY_HEADER) or reply.idempotency_key,
        timestamp=signed.timestamp,
    )
