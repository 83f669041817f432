"""A platform API that takes the connection and then stalls.

Three shapes of stall, one per platform: Slack's API accepts the TCP connection and never
answers; Twilio answers the status line and headers and then stalls the body; LINE takes the
reply (it is shown) and answers only after the client gave up. In each case the message ends
up in the dead-letter list as ``outcome_unknown`` and is never posted a second time, while
other conversations (on the HTTP channel) keep flowing during the stall.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from connectors.line.emulator import LineEmulator, LineWebhookSender
from connectors.slack.emulator import SlackSender, event_callback, message_event
from connectors.whatsapp.emulator import TwilioWebhookSender
from tests.faults.conftest import SECRETS, dead_letters
from tests.harness import base_config, eventually, http_tenant, running_gateway

STALL_SECONDS = 1.5  # the connectors' and dispatcher's timeouts in this test
FLOWING = 5  # HTTP conversations answered while the stalled send hangs
WA_ACCOUNT, WA_TOKEN, WA_SENDER = "AC" + "d5" * 16, "stall-wa-token", "whatsapp:+14155238886"
LINE_DEST, LINE_SECRET, LINE_TOKEN = "U" + "f4" * 16, "stall-line-secret", "stall-line-token"


class StallServer:
    """Accepts connections and reads each request; then says nothing, or only headers."""

    def __init__(self, mode: Literal["silent", "headers"]) -> None:
        self.mode = mode
        self.requests: list[bytes] = []  # the request line and headers of each
        self._release = asyncio.Event()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> StallServer:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        self._release.set()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                self.requests.append(await reader.readuntil(b"\r\n\r\n"))
                if self.mode == "headers":
                    writer.write(
                        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                        b'Content-Length: 4096\r\n\r\n{"sid": '
                    )
                    await writer.drain()
                await self._release.wait()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def stall(request: pytest.FixtureRequest) -> AsyncIterator[StallServer]:
    server = await StallServer(request.param).start()
    yield server
    await server.stop()


@pytest.fixture
async def line() -> AsyncIterator[LineEmulator]:
    emulator = await LineEmulator().start()
    emulator.add_channel(destination=LINE_DEST, access_token=LINE_TOKEN, channel_secret=LINE_SECRET)
    yield emulator
    await emulator.stop()


def _stalled_channel(platform: str, stall: StallServer, line: LineEmulator) -> dict[str, Any]:
    if platform == "slack":
        return {
            "kind": "slack",
            "fetch_user_names": False,  # the faults are for the sends, not the look-ups
            "team_id": "T0FLOWBIZ",
            "signing_secret": "env:S_SLACK_SECRET",
            "bot_token": "env:S_SLACK_BOT",
            "bot_user_id": "U0FLOWBOT",
            "api_base_url": f"{stall.url}/api/",
            "request_timeout_seconds": STALL_SECONDS,
        }
    if platform == "whatsapp":
        return {
            "kind": "whatsapp",
            "account_sid": WA_ACCOUNT,
            "auth_token": "env:S_WA_TOKEN",
            "from_number": WA_SENDER,
            "api_base_url": stall.url,
            "status_callback": False,
        }
    return {
        "kind": "line",
        "destination": LINE_DEST,
        "channel_secret": "env:S_LINE_SECRET",
        "channel_access_token": "env:S_LINE_TOKEN",
        "api_base_url": line.url,
        "fetch_profiles": False,
        "loading_indicator": False,
        "request_timeout_seconds": STALL_SECONDS,
    }


async def _post_stalled(platform: str, session: aiohttp.ClientSession, url: str, line: Any) -> int:
    """One inbound message on the stalled platform; returns the gateway's status."""
    if platform == "slack":
        sender = SlackSender(session=session, gateway_url=url, signing_secret="stall-slack")
        status, _ = await sender.event(event_callback(message_event(text="stalled")))
        return status
    if platform == "whatsapp":
        wa = TwilioWebhookSender(
            session=session, gateway_url=url, account_sid=WA_ACCOUNT, auth_token=WA_TOKEN
        )
        status, _ = await wa.send(from_="whatsapp:+14155550123", to=WA_SENDER, body="stalled")
        return status
    sender = LineWebhookSender(
        session=session,
        gateway_url=url,
        destination=LINE_DEST,
        channel_secret=LINE_SECRET,
        emulator=line,
    )
    return await sender.post([sender.text("stalled", user_id="U" + "0c" * 16)])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("platform", "stall"),
    [
        pytest.param("slack", "silent", id="slack-no-answer"),
        pytest.param("whatsapp", "headers", id="twilio-headers-then-stall"),
        pytest.param("line", "silent", id="line-answer-after-timeout"),  # the LINE emulator stalls
    ],
    indirect=["stall"],
)
async def test_stalled_send_is_dead_lettered_once_while_others_flow(
    platform: str,
    stall: StallServer,
    line: LineEmulator,
    receiver: CallbackReceiver,
    echo_personas: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stalled message: one request, then DLQ outcome_unknown; other conversations flow."""
    for name, value in {
        "S_SLACK_SECRET": "stall-slack",
        "S_SLACK_BOT": "xoxb-stall",
        "S_WA_TOKEN": WA_TOKEN,
        "S_LINE_SECRET": LINE_SECRET,
        "S_LINE_TOKEN": LINE_TOKEN,
    }.items():
        monkeypatch.setenv(name, value)
    tenant = http_tenant(receiver.url)
    tenant["channels"].append(_stalled_channel(platform, stall, line))
    data = base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[tenant])
    data["personas_dir"] = str(echo_personas)
    data["routing"] = {"default_persona": "core"}
    data["pipeline"]["delivery_timeout_seconds"] = STALL_SECONDS + 1
    if platform == "line":
        line.delay_next("reply", STALL_SECONDS * 3)  # LINE shows it, answers too late

    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        assert await _post_stalled(platform, session, gw.url, line) == 200
        if platform == "line":
            await eventually(lambda: line.calls_to("reply"))
        else:
            await eventually(lambda: stall.requests)
        # The send hangs; meanwhile other conversations are answered, in full.
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )
        for n in range(FLOWING):
            status, _ = await client.send(conversation_id=f"flow{n}", text=f"flow {n}")
            assert status == 202
        await receiver.wait_for(FLOWING, timeout=STALL_SECONDS)
        assert await dead_letters(gw) == [], "dead-lettered before the stall timed out"

        [letter] = await eventually(lambda: dead_letters(gw), timeout=STALL_SECONDS * 4)
        await asyncio.sleep(STALL_SECONDS)  # a blind resend would reach the platform by now
        assert len(await dead_letters(gw)) == 1

    assert letter.code == "outcome_unknown"
    assert letter.channel == platform
    assert (letter.message or {})["text"] == "stalled"
    if platform == "line":
        assert [d.texts for d in line.deliveries] == [["stalled"]]  # shown once, never pushed
        assert line.calls_to("push") == []
    else:
        assert len(stall.requests) == 1, "the stalled message was sent again"
