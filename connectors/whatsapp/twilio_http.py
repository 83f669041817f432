"""The twilio SDK's HTTP client as the connector uses it, and one way to call Twilio.

Guarantees: every Twilio call the connector makes goes through the SDK and through
:class:`TwilioHttpClient` — the SDK's aiohttp client with three fixes: the Authorization
header set directly (aiohttp 3.14 deprecates the ``BasicAuth`` object the SDK builds), a
JSON body sent as JSON (the SDK's async client hands a dict to aiohttp, which would
form-encode it under an ``application/json`` header: the Content API's create needs JSON,
as the SDK's synchronous client sends it), and the raw response kept for the calling task
(the SDK's exceptions carry no headers; ``Retry-After`` is only in the response).
:func:`twilio_call` classifies what a call raises with the shared mapper.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response as TwilioResponse

from connectors.send_policy import DeliveryFailure, PlatformAnswer, map_delivery_errors
from connectors.send_policy.twilio import read_twilio

__all__ = ["TwilioHttpClient", "twilio_call"]

_last_response: contextvars.ContextVar[list[TwilioResponse] | None] = contextvars.ContextVar(
    "whatsapp_last_response", default=None
)


class TwilioHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio is untyped
    """The SDK's aiohttp client; see the module docstring for what it changes."""

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(*auth)
        body: object = data
        if headers.get("Content-Type") == "application/json" and data is not None:
            body = json.dumps(data)
        response: TwilioResponse = await super().request(
            method,
            url,
            params=params,
            data=body,
            headers=headers,
            auth=None,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
        holder = _last_response.get()
        if holder is not None:
            holder.append(response)
        return response


def _read_page(exc: BaseException) -> PlatformAnswer | None:
    """A list page Twilio refused: the SDK raises a bare TwilioException with the response."""
    if type(exc) is not TwilioException or len(exc.args) < 2:
        return None
    status = getattr(exc.args[1], "status_code", None)
    return PlatformAnswer(int(status)) if isinstance(status, int) else None


@asynccontextmanager
async def twilio_call(
    what: str, *, idempotent: bool, codes: Mapping[str, DeliveryFailure] | None = None
) -> AsyncIterator[None]:
    """Run one SDK call: its refusal becomes a Transient/PermanentDeliveryError with
    Twilio's code and the response's Retry-After."""
    responses: list[TwilioResponse] = []
    token = _last_response.set(responses)
    try:
        async with map_delivery_errors(
            what,
            idempotent=idempotent,
            read=[read_twilio, _read_page],
            codes=codes,
            response_headers=lambda: responses[-1].headers if responses else None,
        ):
            yield
    finally:
        _last_response.reset(token)
