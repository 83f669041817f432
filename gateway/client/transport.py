"""What both clients share: one aiohttp session (theirs or one they were given), requests
that end in an answer or a :class:`~gateway.client.errors.TransportError`, and error answers
turned into the :mod:`gateway.client.errors` tree.

A client that opened its own session closes it in :meth:`Transport.close` (or ``async
with``); a session passed in is the caller's to close.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Self, TypeVar

import aiohttp
from multidict import CIMultiDictProxy
from pydantic import BaseModel

from gateway.client.errors import ApiError, ClientError, TransportError, api_error

__all__ = ["Answer", "Route", "Transport", "error_of", "parse"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Route(Generic[M]):
    """One operation as a client calls it; held to the OpenAPI document by the tests."""

    method: str
    path: str  # a template: {tenant}, {conversation}, … filled in percent-encoded
    response: type[M] | None  # None: no body (204)
    status: int = 200
    body: type[BaseModel] | None = None  # the request body's model, when there is one
    # Other statuses whose body is the response model too (health's 503: degraded).
    also: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: not sent by the gateway, and not worth guessing at


def error_of(answer: Answer) -> ApiError:
    """The exception for an error answer; its JSON body's ``error`` and ``message`` if any."""
    error, message = f"http_{answer.status}", ""
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = str(body.get("error", error))
        message = str(body.get("message", ""))
    return api_error(answer.status, error, message, retry_after=_retry_after(answer.headers))


def parse(route: Route[M], answer: Answer) -> M:
    """The answer's body as the route's response model."""
    assert route.response is not None  # routes without a body are not parsed
    try:
        return route.response.model_validate_json(answer.body)
    except ValueError as exc:
        raise ClientError(f"{route.method} {route.path}: unexpected body: {exc}") from exc


class Transport:
    """A base URL and a session; subclasses add the typed operations."""

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self.timeout = timeout

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """One request; any answer, including an error status, comes back as an Answer."""
        session = self._open()
        limit = aiohttp.ClientTimeout(total=self.timeout if timeout is None else timeout)
        try:
            async with session.request(
                method, url, data=body, headers=dict(headers), timeout=limit
            ) as response:
                return Answer(response.status, response.headers, await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"{method} {url}: {exc!r}") from exc
