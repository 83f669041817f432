"""The webhook edge: one aiohttp handler per connector route, shared by every connector.

What it guarantees, in this order, for each request:

1. **Cheap checks before the body.** A route that takes a body needs a ``Content-Length``
   (411), no larger than ``http.max_body_bytes`` (413), and one of the route's content types
   (415) — all refused from the head alone, without reading a byte of the body. (A wrong
   method is the router's 405.)
2. **A bounded read.** The body must arrive within ``http.body_timeout_seconds`` (408). A
   client that hangs up mid-upload is a DEBUG line and a metric, never an ERROR.
3. **Bounded nesting.** JSON — a body, or a form field the route declares as JSON
   (``Route.json_fields``) — nested deeper than ``http.max_json_depth`` is refused 400
   ``too_deep`` before any connector parses it.
4. The connector's handler gets a neutral :class:`~connectors.base.InboundRequest`; what it
   returns is made durable (``Ingestor.submit``) before its response is sent.

Every refusal answers ``{"error": reason, "message": …}`` and counts in
``flowbiz_inbound_total{channel,outcome=reason}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from email.errors import MessageError
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from connectors.base import InboundRequest, Route
from gateway.errors import (
    InboundError,
    IngestUnavailableError,
    PayloadError,
    StoreError,
    UnknownTenantError,
)
from gateway.nesting import form_too_deep, json_too_deep
from gateway.observability import get_logger

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = ["edge_handler"]

log = get_logger(__name__)

_FORM = "application/x-www-form-urlencoded"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def edge_handler(route: Route, channel: str, rt: Runtime) -> Handler:
    """Adapt a connector route: neutral request in, ingest, then the connector's response.

    The route's handler is looked up per request in ``rt.routes`` (the current connector's),
    never bound here: a connector rebuilt because tenants changed serves the next request,
    and a kind no tenant uses (any more) answers 404 ``unknown_tenant``.
    """
    key = (channel, route.method, route.path)

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        current = rt.routes.get(key)
        if current is None:
            missing = UnknownTenantError(f"no tenant has a {channel} channel")
            return _refused(rt, channel, route, missing, close=request.body_exists)
        limits = rt.config.http
        try:
            if request.method in ("POST", "PUT", "PATCH"):
                _check_head(request, route, limits.max_body_bytes)
                body = await _read_body(request, limits.body_timeout_seconds, limits.max_body_bytes)
                _check_nesting(request, route, body, limits.max_json_depth)
            else:
                body = b""
        except _Aborted:
            rt.metrics.inbound.labels(channel, "aborted").inc()
            log.debug("inbound.aborted", channel=channel, route=route.name)
            return web.Response(status=400)  # nobody is left to read it
        except InboundError as exc:
            return _refused(rt, channel, route, exc, close=True)
        neutral = InboundRequest(
            method=request.method,
            path=request.path,
            # Computed only if the connector reads them (see InboundRequest).
            url=lambda: str(request.url),
            # aiohttp's own read-only, case-insensitive view: nothing copied per request.
            headers=request.headers,
            query=lambda: dict(request.query),
            body=body,
            remote=request.remote,
            match_info=request.match_info,  # a frozen mapping already
        )
        try:
            result = await current.handler(neutral)
            flags: list[bool] = []
            admit = result.to_admit()
            if admit:
                assert rt.ingestor is not None  # exists while the app runs
                flags = await rt.ingestor.submit(admit, started=started)
        except InboundError as exc:
            return _refused(rt, channel, route, exc)
        except StoreError as exc:
            # A route that reads the store (long-poll, thread lookups) during an outage: the
            # platform or client must retry, exactly as when the append itself fails.
            unavailable = IngestUnavailableError("the store is unavailable; retry later")
            unavailable.__cause__ = exc
            return _refused(rt, channel, route, unavailable)
        response = result.respond(flags) if result.respond is not None else result.response
        return web.Response(
            status=response.status,
            body=response.body,
            headers={"Content-Type": response.content_type, **response.headers},
        )

    return handle


class _Aborted(Exception):
    """The client went away before its body arrived."""


def _check_head(request: web.Request, route: Route, max_body: int) -> None:
    length = request.content_length
    if length is None:
        raise PayloadError(
            "send the body with a Content-Length", reason="length_required", status=411
        )
    if length > max_body:
        raise PayloadError(
            f"request body too large (at most {max_body} bytes)", reason="too_large", status=413
        )
    # A body without any Content-Type is left to the connector's parser; a declared one must fit.
    declared = hdrs.CONTENT_TYPE in request.headers
    if declared:
        try:
            request.content_type  # noqa: B018 - parsed once here, cached for later reads
        except (LookupError, ValueError, MessageError) as exc:
            # The stdlib's header parser behind aiohttp fails on some malformed parameters
            # (``;0*`` raises IndexError): a bad request, not a server error.
            raise PayloadError(
                "the Content-Type header cannot be parsed",
                reason="unsupported_media_type",
                status=415,
            ) from exc
    if route.content_types and declared and request.content_type not in route.content_types:
        raise PayloadError(
            f"Content-Type must be {' or '.join(route.content_types)}",
            reason="unsupported_media_type",
            status=415,
        )


async def _read_body(request: web.Request, timeout: float, max_body: int) -> bytes:
    content = request.content
    try:
        if content.is_eof():
            # The whole body came with the head (a webhook's usual few KiB): it is all in the
            # buffer, so take it as it is (no copy, and no deadline timer to arm and cancel).
            body = content.read_nowait()
        else:
            async with asyncio.timeout(timeout):
                body = await request.read()
    except TimeoutError as exc:
        raise PayloadError(
            f"the body did not arrive within {timeout:g} s", reason="body_timeout", status=408
        ) from exc
    except web.HTTPRequestEntityTooLarge as exc:  # Content-Length lied: more bytes came
        raise PayloadError("request body too large", reason="too_large", status=413) from exc
    except HttpProcessingError as exc:  # a broken chunked encoding, say
        raise PayloadError("the body could not be read", reason="bad_body") from exc
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        raise _Aborted from exc
    # The head's Content-Length was checked, but a compressed body counts inflated.
    if len(body) > max_body:
        raise PayloadError("request body too large", reason="too_large", status=413)
    return body


def _check_nesting(request: web.Request, route: Route, body: bytes, limit: int) -> None:
    if request.content_type == _FORM:
        too_deep = form_too_deep(body, limit, route.json_fields)
    else:
        too_deep = json_too_deep(body, limit)
    if too_deep:
        raise PayloadError(f"JSON nested deeper than {limit} levels", reason="too_deep")


def _refused(
    rt: Runtime, channel: str, route: Route, exc: InboundError, *, close: bool = False
) -> web.Response:
    rt.metrics.inbound.labels(channel, exc.reason).inc()
    log.warning(
        "inbound.rejected",
        channel=channel,
        route=route.name,
        reason=exc.reason,
        status=exc.status,
        detail=str(exc),
    )
    response = web.json_response({"error": exc.reason, "message": str(exc)}, status=exc.status)
    if close:
        # The body was not read (or not all of it): the connection cannot carry another request.
        response.force_close()
    return response
