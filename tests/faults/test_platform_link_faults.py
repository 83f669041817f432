"""The network between the gateway and each platform misbehaving: refused connections,
replies cut mid-way, a black-holed peer, added latency.

One gateway carries the HTTP channel, Slack, LINE and WhatsApp; each channel's API (the
callback receiver, the Slack, LINE and Twilio emulators) sits behind its own
:class:`~tests.faults.tcp_proxy.TcpFaultProxy`. Every fault is switched on for all four at
once, one message per channel is sent into it, and the send policy decides what follows:

- refused (nothing was sent): ``network``, retried; delivered once when the link heals.
- the reply cut mid-way (the platform has the message): the HTTP callback, which receivers
  dedupe by idempotency key, is retried and counted once; a Slack post, a LINE reply and a
  Twilio send are never resent blindly: dead-lettered ``outcome_unknown``, on the platform
  exactly once.
- black-holed (the request is swallowed): the send's timeout fires; the HTTP callback is
  retried and delivered once the link heals, the others are dead-lettered
  ``outcome_unknown`` for an operator to check, and none is sent twice.
- latency below the timeouts: everything delivered once, in order, no dead letters.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from connectors.line.emulator import LineEmulator, LineWebhookSender
from connectors.slack.emulator import (
    EmulatedWorkspace,
    SlackEmulator,
    SlackSender,
    event_callback,
    message_event,
)
from connectors.whatsapp.emulator import TwilioEmulator, TwilioWebhookSender
from tests.faults.conftest import SECRETS, dead_letters
from tests.faults.tcp_proxy import TcpFaultProxy
from tests.harness import base_config, eventually, http_tenant, running_gateway

CHANNELS = ("http", "slack", "line", "whatsapp")
SEND_TIMEOUT = 1.0  # each connector's own request timeout here
SLACK = EmulatedWorkspace()
SLACK_SECRET = "link-slack-signing-secret"
LINE_DEST, LINE_SECRET, LINE_TOKEN = "U" + "f5" * 16, "link-line-secret", "link-line-token"
LINE_USER = "U" + "0d" * 16
WA_ACCOUNT, WA_TOKEN, WA_SENDER = "AC" + "d6" * 16, "link-wa-token", "whatsapp:+14155238886"
WA_CUSTOMER = "whatsapp:+14155550177"


@dataclass
class Platforms:
    receiver: CallbackReceiver
    slack: SlackEmulator
    line: LineEmulator
    twilio: TwilioEmulator
    proxies: dict[str, TcpFaultProxy]

    def delivered(self) -> dict[str, list[str]]:
        """What each platform shows, retries of one HTTP callback folded as a receiver does."""
        return {
            "http": [cb.payload["text"] for cb in self.receiver.unique()],
            "slack": [post.text for post in self.slack.posted],
            "line": [text for d in self.line.deliveries for text in d.texts],
            "whatsapp": [m.body or "" for m in self.twilio.messages],
        }

    async def each(self, fault: str, *args: Any, **kwargs: Any) -> None:
        for proxy in self.proxies.values():
            result = getattr(proxy, fault)(*args, **kwargs)
            if asyncio.iscoroutine(result):
                await result


def _behind(proxy: TcpFaultProxy, url: str) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=proxy.address))


@pytest.fixture
async def platforms(receiver: CallbackReceiver) -> AsyncIterator[Platforms]:
    slack = await SlackEmulator(workspaces=(SLACK,)).start()
    line = await LineEmulator().start()
    line.add_channel(destination=LINE_DEST, access_token=LINE_TOKEN, channel_secret=LINE_SECRET)
    twilio = await TwilioEmulator(accounts={WA_ACCOUNT: WA_TOKEN}).start()
    proxies = {
        "http": await TcpFaultProxy(receiver.port).start(),
        "slack": await TcpFaultProxy(slack.port).start(),
        "line": await TcpFaultProxy(line.port).start(),
        "whatsapp": await TcpFaultProxy(twilio.port).start(),
    }
    yield Platforms(receiver, slack, line, twilio, proxies)
    for proxy in proxies.values():
        await proxy.stop()
    await twilio.stop()
    await line.stop()
    await slack.stop()


def _config(p: Platforms, personas: Path, store_url: str) -> dict[str, Any]:
    tenant = http_tenant(_behind(p.proxies["http"], p.receiver.url))
    tenant["channels"][0]["callback_timeout_seconds"] = SEND_TIMEOUT
    tenant["channels"] += [
        {
            "kind": "slack",
            "fetch_user_names": False,  # the faults are for the sends, not the look-ups
            "team_id": SLACK.team_id,
            "signing_secret": "env:L_SLACK_SECRET",
            "bot_token": "env:L_SLACK_BOT",
            "bot_user_id": SLACK.bot_user_id,
            "api_base_url": _behind(p.proxies["slack"], p.slack.api_url),
            "request_timeout_seconds": SEND_TIMEOUT,
        },
        {
            "kind": "line",
            "destination": LINE_DEST,
            "channel_secret": "env:L_LINE_SECRET",
            "channel_access_token": "env:L_LINE_TOKEN",
            "api_base_url": _behind(p.proxies["line"], p.line.url),
            "fetch_profiles": False,
            "loading_indicator": False,
            "request_timeout_seconds": SEND_TIMEOUT,
        },
        {
            "kind": "whatsapp",
            "account_sid": WA_ACCOUNT,
            "auth_token": "env:L_WA_TOKEN",
            "from_number": WA_SENDER,
            "api_base_url": _behind(p.proxies["whatsapp"], p.twilio.url),
            "status_callback": False,
        },
    ]
    data = base_config(store_url, tenants=[tenant])
    data["personas_dir"] = str(personas)
    data["routing"] = {"default_persona": "core"}
    # Twilio's SDK call has no timeout of its own: the dispatcher's bounds it.
    data["pipeline"].update(
        {"delivery_timeout_seconds": SEND_TIMEOUT * 3, "max_delivery_attempts": 30}
    )
    return data


@pytest.fixture(autouse=True)
def _platform_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "L_SLACK_SECRET": SLACK_SECRET,
        "L_SLACK_BOT": SLACK.bot_token,
        "L_LINE_SECRET": LINE_SECRET,
        "L_LINE_TOKEN": LINE_TOKEN,
        "L_WA_TOKEN": WA_TOKEN,
    }.items():
        monkeypatch.setenv(name, value)


async def _send_one_each(session: aiohttp.ClientSession, url: str, p: Platforms, text: str) -> None:
    """One inbound message on each channel, ``{channel}:{text}``; each must be stored."""
    http = HttpChannelClient(
        session=session, base_url=url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
    )
    status, _ = await http.send(conversation_id="h1", text=f"http:{text}", event_id=text)
    assert status == 202
    slack = SlackSender(session=session, gateway_url=url, signing_secret=SLACK_SECRET)
    status, _ = await slack.event(event_callback(message_event(text=f"slack:{text}")))
    assert status == 200
    line = LineWebhookSender(
        session=session,
        gateway_url=url,
        destination=LINE_DEST,
        channel_secret=LINE_SECRET,
        emulator=p.line,
    )
    assert await line.post([line.text(f"line:{text}", user_id=LINE_USER)]) == 200
    wa = TwilioWebhookSender(
        session=session, gateway_url=url, account_sid=WA_ACCOUNT, auth_token=WA_TOKEN
    )
    status, _ = await wa.send(from_=WA_CUSTOMER, to=WA_SENDER, body=f"whatsapp:{text}")
    assert status == 200


def _expected(text: str) -> dict[str, list[str]]:
    return {channel: [f"{channel}:{text}"] for channel in CHANNELS}


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["refuse", "latency"])
async def test_refused_or_slow_platform_links_deliver_each_message_once(
    fault: str, platforms: Platforms, echo_personas: Path, tmp_path: Path
) -> None:
    """Refused: retried as ``network`` until the link heals. Slow (below the timeouts): on
    time. Either way each message arrives once, in order, nothing dead-lettered."""
    data = _config(platforms, echo_personas, f"sqlite:///{tmp_path}/gw.db")
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        if fault == "refuse":
            await platforms.each("refuse")
        else:
            await platforms.each("latency", up=0.1, down=0.1)
        await _send_one_each(session, gw.url, platforms, "one")
        await _send_one_each(session, gw.url, platforms, "two")
        if fault == "refuse":
            retries = gw.runtime.metrics.registry.get_sample_value
            await eventually(
                lambda: all(
                    (retries("flowbiz_delivery_retries_total", {"channel": c}) or 0) >= 2
                    for c in CHANNELS
                ),
                timeout=20,
            )
            assert platforms.delivered() == {c: [] for c in CHANNELS}
            await platforms.each("heal")
        expected = {c: [f"{c}:one", f"{c}:two"] for c in CHANNELS}
        await eventually(lambda: platforms.delivered() == expected, timeout=30)
        await asyncio.sleep(0.5)  # a second delivery of anything would arrive in this time
        assert platforms.delivered() == expected
        assert await dead_letters(gw) == []


@pytest.mark.slow
async def test_reply_cut_mid_way_is_retried_only_where_the_platform_dedupes(
    platforms: Platforms, echo_personas: Path, tmp_path: Path
) -> None:
    """The platform has the message, the gateway only part of its answer: the HTTP callback
    is retried (the receiver folds it), the others are dead-lettered ``outcome_unknown``;
    every platform shows the message exactly once."""
    data = _config(platforms, echo_personas, f"sqlite:///{tmp_path}/gw.db")
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        await platforms.each("drop_reply_after", 12)  # inside the status line
        await _send_one_each(session, gw.url, platforms, "cut")
        letters = await eventually(lambda: _at_least(dead_letters(gw), 3), timeout=30)
        await eventually(lambda: platforms.delivered() == _expected("cut"), timeout=30)
        await asyncio.sleep(0.5)
        assert platforms.delivered() == _expected("cut")
        letters = await dead_letters(gw)
    assert all(proxy.cut_replies == 1 for proxy in platforms.proxies.values())
    assert sorted((d.channel, d.code) for d in letters) == [
        ("line", "outcome_unknown"),
        ("slack", "outcome_unknown"),
        ("whatsapp", "outcome_unknown"),
    ]
    # The callback went out twice with one idempotency key; the receiver counts it once.
    assert len(platforms.receiver.received) == 2
    assert len(Counter(cb.idempotency_key for cb in platforms.receiver.received)) == 1


@pytest.mark.slow
async def test_black_holed_platform_times_out_and_is_never_sent_twice(
    platforms: Platforms, echo_personas: Path, tmp_path: Path
) -> None:
    """The send's timeout fires; the HTTP callback is retried until the link heals and then
    delivered once; the other three are dead-lettered ``outcome_unknown`` and not resent."""
    data = _config(platforms, echo_personas, f"sqlite:///{tmp_path}/gw.db")
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        await platforms.each("blackhole")
        await _send_one_each(session, gw.url, platforms, "hole")
        letters = await eventually(lambda: _at_least(dead_letters(gw), 3), timeout=30)
        retries = gw.runtime.metrics.registry.get_sample_value
        await eventually(
            lambda: (retries("flowbiz_delivery_retries_total", {"channel": "http"}) or 0) >= 1,
            timeout=20,
        )
        await platforms.each("heal")
        expected = {"http": ["http:hole"], "slack": [], "line": [], "whatsapp": []}
        await eventually(lambda: platforms.delivered() == expected, timeout=30)
        await asyncio.sleep(SEND_TIMEOUT * 2)  # a blind resend would reach a platform by now
        assert platforms.delivered() == expected
        letters = await dead_letters(gw)
    assert sorted((d.channel, d.code) for d in letters) == [
        ("line", "outcome_unknown"),
        ("slack", "outcome_unknown"),
        ("whatsapp", "outcome_unknown"),
    ]


async def _at_least(letters: Any, count: int) -> Any:
    found = await letters
    return found if len(found) >= count else None
