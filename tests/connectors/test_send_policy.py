"""The transport-error mapper against real sockets, real servers and the SDKs' own
exceptions; the UTF-16 helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import aiosmtplib
import pytest
from aiohttp import web
from linebot.v3.messaging.exceptions import ApiException
from slack_sdk.web.async_client import AsyncWebClient
from twilio.base.exceptions import TwilioRestException

from connectors.send_policy import (
    DeliveryFailure,
    PlatformAnswer,
    answer_error,
    map_delivery_errors,
    utf16_fit,
    utf16_len,
)
from connectors.send_policy.line import read_line
from connectors.send_policy.slack import SLACK_CODES, read_slack
from connectors.send_policy.smtp import read_smtp
from connectors.send_policy.twilio import read_twilio
from gateway.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from gateway.netguard import guarded_session
from tests.conftest import free_port


@asynccontextmanager
async def serving(handler: Callable[[web.Request], object]) -> AsyncIterator[str]:
    """A real loopback HTTP server answering every request with ``handler``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_server(*, answer_nothing: bool) -> AsyncIterator[str]:
    """A server that reads the request, then hangs up without an answer, or keeps the
    connection open without one until the client gives up."""

    handled: list[asyncio.Future[None]] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done = asyncio.get_running_loop().create_future()
        handled.append(done)
        try:
            await reader.readuntil(b"\r\n\r\n")
            if answer_nothing:
                await reader.read()  # until the client closes
            writer.close()
            await writer.wait_closed()
        finally:
            done.set_result(None)

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/"
        await asyncio.wait_for(asyncio.gather(*handled), timeout=5)


async def _post(url: str, *, raise_for_status: bool = False) -> None:
    async with (
        aiohttp.ClientSession(raise_for_status=raise_for_status) as session,
        session.post(url, data=b"{}") as response,
    ):
        await response.read()


def _mapped(caught: pytest.ExceptionInfo[DeliveryError]) -> tuple[type, DeliveryFailure]:
    return type(caught.value), caught.value.code


# -- the transport -------------------------------------------------------------------------
@pytest.mark.parametrize("idempotent", [False, True])
async def test_a_connection_that_never_opened_is_retried(idempotent: bool) -> None:
    """Nothing was written, so even a request the platform cannot dedupe is safe to repeat."""
    with pytest.raises(DeliveryError) as caught:
        async with map_delivery_errors("the API", idempotent=idempotent):
            await _post(f"http://127.0.0.1:{free_port()}/")
    assert _mapped(caught) == (TransientDeliveryError, DeliveryFailure.NETWORK)
    assert str(caught.value) == "cannot reach the API: ClientConnectorError"
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


@pytest.mark.parametrize(
    ("idempotent", "expected"),
    [
        (False, (PermanentDeliveryError, DeliveryFailure.OUTCOME_UNKNOWN)),
        (True, (TransientDeliveryError, DeliveryFailure.NETWORK)),
    ],
)
async def test_a_request_that_broke_off_is_retried_only_when_idempotent(
    idempotent: bool, expected: tuple[type, DeliveryFailure]
) -> None:
    async with raw_server(answer_nothing=False) as url:
        with pytest.raises(DeliveryError) as caught:
            async with map_delivery_errors("the API", idempotent=idempotent):
                await _post(url)
    assert _mapped(caught) == expected
    assert isinstance(caught.value.__cause__, aiohttp.ServerDisconnectedError)


@pytest.mark.parametrize(
    ("idempotent", "expected"),
    [
        (False, (PermanentDeliveryError, DeliveryFailure.OUTCOME_UNKNOWN)),
        (True, (TransientDeliveryError, DeliveryFailure.NETWORK)),
    ],
)
async def test_a_timeout_after_the_request_went_out(
    idempotent: bool, expected: tuple[type, DeliveryFailure]
) -> None:
    async with raw_server(answer_nothing=True) as url:
        with pytest.raises(DeliveryError) as caught:
            async with (
                map_delivery_errors("the API", idempotent=idempotent),
                asyncio.timeout(0.2),
            ):
                await _post(url)
    assert _mapped(caught) == expected


async def test_the_ssrf_guard_refusal_is_permanent() -> None:
    with pytest.raises(DeliveryError) as caught:
        async with (
            map_delivery_errors("callback", idempotent=True),
            guarded_session() as session,
            session.post(f"http://127.0.0.1:{free_port()}/") as response,
        ):
            await response.read()
    assert _mapped(caught) == (PermanentDeliveryError, DeliveryFailure.SSRF)


def test_the_mapper_works_in_a_plain_with_too() -> None:
    original = TimeoutError()
    with (
        pytest.raises(PermanentDeliveryError) as caught,
        map_delivery_errors("the API", idempotent=False),
    ):
        raise original
    assert caught.value.code is DeliveryFailure.OUTCOME_UNKNOWN
    assert caught.value.__cause__ is original


@pytest.mark.parametrize(
    "raised",
    [
        PermanentDeliveryError("decided already", code=DeliveryFailure.EMPTY),
        ValueError("a bug is not a delivery failure"),
        asyncio.CancelledError(),
    ],
)
async def test_what_it_does_not_own_passes_unchanged(raised: BaseException) -> None:
    with pytest.raises(type(raised)) as caught:
        async with map_delivery_errors("the API", idempotent=True):
            raise raised
    assert caught.value is raised


# -- answers -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, (TransientDeliveryError, DeliveryFailure.RATE_LIMITED)),
        (503, (TransientDeliveryError, DeliveryFailure.PLATFORM_UNAVAILABLE)),
        (408, (TransientDeliveryError, DeliveryFailure.PLATFORM_UNAVAILABLE)),
        (401, (PermanentDeliveryError, DeliveryFailure.UNAUTHORIZED)),
        (403, (PermanentDeliveryError, DeliveryFailure.UNAUTHORIZED)),
        (404, (PermanentDeliveryError, DeliveryFailure.REJECTED)),
        (400, (PermanentDeliveryError, DeliveryFailure.REJECTED)),
    ],
)
async def test_an_http_answer_is_classified_by_status(
    status: int, expected: tuple[type, DeliveryFailure]
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Retry-After": "3"})

    async with serving(answer) as url:
        with pytest.raises(DeliveryError) as caught:
            async with map_delivery_errors("callback", idempotent=True):
                await _post(url, raise_for_status=True)
    assert _mapped(caught) == expected
    assert caught.value.platform_code == str(status)
    assert str(caught.value) == f"callback answered {status}"
    if isinstance(caught.value, TransientDeliveryError):
        assert caught.value.retry_after == 3.0


def test_an_answer_with_an_http_date_retry_after() -> None:
    error = answer_error(
        "callback",
        PlatformAnswer(503, "503", headers={"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}),
    )
    assert isinstance(error, TransientDeliveryError)
    assert error.retry_after == 0.0  # a date in the past: now


async def test_slack_refusals_through_the_sdk() -> None:
    """Slack's own error names the failure; HTTP 429 carries Retry-After."""
    answers = {
        "ratelimited": (429, {"Retry-After": "4"}),
        "invalid_auth": (200, {}),
        "channel_not_found": (200, {}),
        "internal_error": (200, {}),
    }

    async def slack(request: web.Request) -> web.Response:
        error = request.headers["X-Error"]
        status, headers = answers[error]
        return web.json_response({"ok": False, "error": error}, status=status, headers=headers)

    found: dict[str, tuple[type, DeliveryFailure, str | None, float | None]] = {}
    async with serving(slack) as url:
        for error in answers:
            client = AsyncWebClient(
                token="xoxb-test",
                base_url=f"{url}/api/",
                headers={"X-Error": error},
                retry_handlers=[],
            )
            with pytest.raises(DeliveryError) as caught:
                async with map_delivery_errors(
                    "Slack", idempotent=False, read=[read_slack], codes=SLACK_CODES
                ):
                    await client.chat_postMessage(channel="C1", text="hi")
            retry_after = getattr(caught.value, "retry_after", None)
            found[error] = (*_mapped(caught), caught.value.platform_code, retry_after)
    assert found == {
        "ratelimited": (
            TransientDeliveryError,
            DeliveryFailure.RATE_LIMITED,
            "ratelimited",
            4.0,
        ),
        "invalid_auth": (
            PermanentDeliveryError,
            DeliveryFailure.UNAUTHORIZED,
            "invalid_auth",
            None,
        ),
        "channel_not_found": (
            PermanentDeliveryError,
            DeliveryFailure.REJECTED,
            "channel_not_found",
            None,
        ),
        "internal_error": (
            TransientDeliveryError,
            DeliveryFailure.PLATFORM_UNAVAILABLE,
            "internal_error",
            None,
        ),
    }


def test_line_api_exception() -> None:
    refused = ApiException(status=429, reason="Too Many Requests")
    refused.headers = {"Retry-After": "2"}
    refused.body = b'{"message": "The API rate limit has been exceeded."}'
    with (
        pytest.raises(TransientDeliveryError) as caught,
        map_delivery_errors("LINE push", idempotent=True, read=[read_line]),
    ):
        raise refused
    assert (caught.value.code, caught.value.platform_code) == (DeliveryFailure.RATE_LIMITED, "429")
    assert caught.value.retry_after == 2.0
    assert str(caught.value) == "LINE push answered 429: The API rate limit has been exceeded."


def test_twilio_codes_and_headers_from_the_response() -> None:
    """Twilio's exceptions carry no headers: the caller hands over the response's."""
    codes = {"63016": DeliveryFailure.WINDOW_CLOSED, "20429": DeliveryFailure.RATE_LIMITED}

    def mapped(exc: TwilioRestException) -> DeliveryError:
        with (
            pytest.raises(DeliveryError) as caught,
            map_delivery_errors(
                "Messages API",
                idempotent=False,
                read=[read_twilio],
                codes=codes,
                response_headers=lambda: {"Retry-After": "5"},
            ),
        ):
            raise exc
        return caught.value

    limited = mapped(TwilioRestException(429, "/Messages.json", "Too many", code=20429))
    assert isinstance(limited, TransientDeliveryError)
    assert (limited.code, limited.platform_code, limited.retry_after) == (
        DeliveryFailure.RATE_LIMITED,
        "20429",
        5.0,
    )
    window = mapped(TwilioRestException(400, "/Messages.json", "Outside window", code=63016))
    assert isinstance(window, PermanentDeliveryError)
    assert (window.code, window.platform_code) == (DeliveryFailure.WINDOW_CLOSED, "63016")
    invalid = mapped(
        TwilioRestException(400, "/Messages.json", "The 'To' number +15550100 is not valid")
    )
    assert (invalid.code, invalid.platform_code) == (DeliveryFailure.REJECTED, "400")
    assert "+15550100" not in str(invalid)  # Twilio's text can quote the customer's number


@pytest.mark.parametrize(
    ("raised", "idempotent", "expected"),
    [
        (
            aiosmtplib.SMTPResponseException(451, "4.7.1 Greylisted"),
            True,
            (TransientDeliveryError, DeliveryFailure.PLATFORM_UNAVAILABLE),
        ),
        (
            aiosmtplib.SMTPResponseException(550, "5.1.1 mailbox unavailable"),
            True,
            (PermanentDeliveryError, DeliveryFailure.REJECTED),
        ),
        (
            aiosmtplib.SMTPResponseException(535, "5.7.8 bad credentials"),
            True,
            (PermanentDeliveryError, DeliveryFailure.UNAUTHORIZED),
        ),
        (
            aiosmtplib.SMTPServerDisconnected("lost"),
            False,
            (PermanentDeliveryError, DeliveryFailure.OUTCOME_UNKNOWN),
        ),
        (
            aiosmtplib.SMTPServerDisconnected("lost"),
            True,
            (TransientDeliveryError, DeliveryFailure.NETWORK),
        ),
    ],
)
def test_smtp_replies_and_disconnects(
    raised: Exception, idempotent: bool, expected: tuple[type, DeliveryFailure]
) -> None:
    with (
        pytest.raises(DeliveryError) as caught,
        map_delivery_errors("smarthost", idempotent=idempotent, read=[read_smtp]),
    ):
        raise raised
    assert _mapped(caught) == expected


async def test_an_smtp_server_that_is_not_there() -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=free_port(), timeout=2)
    with pytest.raises(DeliveryError) as caught:
        async with map_delivery_errors("smarthost", idempotent=False, read=[read_smtp]), client:
            pass
    assert _mapped(caught) == (TransientDeliveryError, DeliveryFailure.NETWORK)


# -- UTF-16 --------------------------------------------------------------------------------
def test_utf16_counts_code_units() -> None:
    assert utf16_len("") == 0
    assert utf16_len("héllo") == 5
    assert utf16_len("a\N{GRINNING FACE}") == 3  # outside the BMP: a surrogate pair


@pytest.mark.parametrize(
    ("text", "limit", "fits"),
    [
        ("abc", 5, 3),
        ("abc", 2, 2),
        ("a\N{GRINNING FACE}b", 2, 1),  # never half of the pair
        ("a\N{GRINNING FACE}b", 3, 2),
        ("\N{GRINNING FACE}", 1, 0),
    ],
)
def test_utf16_fit(text: str, limit: int, fits: int) -> None:
    assert utf16_fit(text, limit) == fits
    assert utf16_len(text[:fits]) <= limit
