"""Every platform answering 500, 429 (with Retry-After) and slow responses for a while.

One gateway carries four channels at once — the HTTP channel's callback receiver, Slack,
LINE and WhatsApp (Twilio), each on its emulator — and each emulator starts by failing its
next calls. A few conversations can never be delivered (a callback URL that 404s, a Slack
channel that is gone, a LINE channel whose token LINE refuses, a WhatsApp customer outside
the 24-hour window): those, and only those, must end in the dead-letter list.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

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
from tests.faults.conftest import SECRETS, dead_letters, post_until_stored
from tests.harness import base_config, eventually, http_tenant, running_gateway

SLACK = EmulatedWorkspace()
SLACK_SECRET = "fault-slack-signing-secret"
LINE_DEST, LINE_SECRET, LINE_TOKEN = "U" + "f2" * 16, "fault-line-secret", "fault-line-token"
LINE_DEAD_DEST, LINE_DEAD_SECRET = "U" + "f3" * 16, "fault-line-secret-dead"
WA_ACCOUNT, WA_TOKEN, WA_SENDER = "AC" + "d4" * 16, "fault-wa-token", "whatsapp:+14155238886"
CONVERSATIONS = 3  # per channel, all deliverable
PER_CONVERSATION = 4
PERMANENT = 2  # messages in each channel's undeliverable conversation


@pytest.fixture
async def emulators() -> AsyncIterator[tuple[SlackEmulator, LineEmulator, TwilioEmulator]]:
    slack = await SlackEmulator(workspaces=(SLACK,), missing_channels=frozenset({"D0GONE"})).start()
    line = await LineEmulator().start()
    line.add_channel(destination=LINE_DEST, access_token=LINE_TOKEN, channel_secret=LINE_SECRET)
    twilio = await TwilioEmulator(accounts={WA_ACCOUNT: WA_TOKEN}).start()
    yield slack, line, twilio
    await twilio.stop()
    await line.stop()
    await slack.stop()


def _config(
    personas: Path, store_url: str, receiver: CallbackReceiver, slack: SlackEmulator, line: Any
) -> dict[str, Any]:
    acme = http_tenant(receiver.url)
    acme["channels"] += [
        {
            "kind": "slack",
            "fetch_user_names": False,  # the faults are for the sends, not the look-ups
            "team_id": SLACK.team_id,
            "signing_secret": "env:F_SLACK_SECRET",
            "bot_token": "env:F_SLACK_BOT",
            "bot_user_id": SLACK.bot_user_id,
            "api_base_url": slack.api_url,
            "request_timeout_seconds": 5,
            "messages_per_second": 100,
            "burst": 100,
        },
        {
            "kind": "line",
            "destination": LINE_DEST,
            "channel_secret": "env:F_LINE_SECRET",
            "channel_access_token": "env:F_LINE_TOKEN",
            "api_base_url": line.url,
            "fetch_profiles": False,
            "loading_indicator": False,
            "request_timeout_seconds": 0.5,
        },
        {
            "kind": "line",
            "id": "line-revoked",
            "destination": LINE_DEAD_DEST,
            "channel_secret": "env:F_LINE_DEAD_SECRET",
            "channel_access_token": "env:F_LINE_DEAD_TOKEN",
            "api_base_url": line.url,
            "fetch_profiles": False,
            "loading_indicator": False,
        },
        {
            "kind": "whatsapp",
            "account_sid": WA_ACCOUNT,
            "auth_token": "env:F_WA_TOKEN",
            "from_number": WA_SENDER,
            "api_base_url": "TWILIO",
            "status_callback": False,
        },
    ]
    # A second tenant whose website has moved: every callback answers 404.
    broken = http_tenant(receiver.url.replace("/callbacks", "/moved"), tenant="broken")
    data = base_config(store_url, tenants=[acme, broken])
    data["personas_dir"] = str(personas)
    data["routing"] = {"default_persona": "core"}
    data["pipeline"].update(
        {"max_delivery_attempts": 10, "retry_base_seconds": 0.05, "retry_max_seconds": 2}
    )
    return data


@pytest.mark.slow
async def test_platforms_failing_for_a_while_still_answer_each_message_once_in_order(
    tmp_path: Path,
    echo_personas: Path,
    receiver: CallbackReceiver,
    emulators: tuple[SlackEmulator, LineEmulator, TwilioEmulator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """500/429/slow answers are retried to one delivery in order; the DLQ is exactly the 4xx."""
    slack, line, twilio = emulators
    for name, value in {
        "F_SLACK_SECRET": SLACK_SECRET,
        "F_SLACK_BOT": SLACK.bot_token,
        "F_LINE_SECRET": LINE_SECRET,
        "F_LINE_TOKEN": LINE_TOKEN,
        "F_LINE_DEAD_SECRET": LINE_DEAD_SECRET,
        "F_LINE_DEAD_TOKEN": "a-token-line-revoked",
        "F_WA_TOKEN": WA_TOKEN,
    }.items():
        monkeypatch.setenv(name, value)
    data = _config(echo_personas, f"sqlite:///{tmp_path}/gw.db", receiver, slack, line)
    data["tenants"][0]["channels"][-1]["api_base_url"] = twilio.url

    # Each platform fails its next calls: server errors, then rate limits with Retry-After.
    receiver.fail_next(3, status=500)
    receiver.fail_next(2, status=429, retry_after=1)
    slack.fail_next("chat.postMessage", 3, status=500, error="internal_error")
    slack.fail_next("chat.postMessage", 2, status=429, retry_after=1)
    line.fail_next(3, status=500)
    line.fail_next(2, status=429, retry_after=1)
    line.delay_next("push", 2.0)  # accepted, but the answer comes after the client gave up
    twilio.fail_next(3, status=500, code=20500, message="Internal Server Error")
    twilio.fail_next(2, status=429, code=20429, retry_after=1)
    closed_customer = "whatsapp:+14155550199"
    twilio.close_window(closed_customer, at_api=True)

    sent: dict[tuple[str, str], list[str]] = defaultdict(list)
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        http_client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )
        broken_client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="broken", signing_secret=SECRETS["T_SIGN"]
        )
        slack_sender = SlackSender(session=session, gateway_url=gw.url, signing_secret=SLACK_SECRET)
        line_sender = LineWebhookSender(
            session=session,
            gateway_url=gw.url,
            destination=LINE_DEST,
            channel_secret=LINE_SECRET,
            emulator=line,
        )
        dead_line_sender = LineWebhookSender(
            session=session,
            gateway_url=gw.url,
            destination=LINE_DEAD_DEST,
            channel_secret=LINE_DEAD_SECRET,
            emulator=line,
        )
        wa_sender = TwilioWebhookSender(
            session=session, gateway_url=gw.url, account_sid=WA_ACCOUNT, auth_token=WA_TOKEN
        )

        def http_post(client: HttpChannelClient, conv: str) -> Post:
            async def post(text: str) -> int:
                status, _ = await client.send(conversation_id=conv, text=text, event_id=text)
                return status

            return post

        def slack_post(channel: str) -> Post:
            async def post(text: str) -> int:
                envelope = event_callback(message_event(text=text, channel=channel))
                status, _ = await slack_sender.event(envelope)
                return status

            return post

        def line_post(sender: LineWebhookSender, user: str) -> Post:
            async def post(text: str) -> int:
                return await sender.post([sender.text(text, user_id=user)])

            return post

        def wa_post(customer: str) -> Post:
            async def post(text: str) -> int:
                status, _ = await wa_sender.send(from_=customer, to=WA_SENDER, body=text)
                return status

            return post

        async def conversation(key: tuple[str, str], post: Post, count: int) -> None:
            for seq in range(count):
                text = f"{key[0]}-{key[1][-6:]}-{seq}"
                status = await post_until_stored(lambda text=text: post(text))
                assert status in (200, 202), f"{text}: {status}"
                sent[key].append(text)

        jobs: list[Awaitable[None]] = []
        for n in range(CONVERSATIONS):
            user = "U" + f"{0xA0 + n:02x}" * 16
            customer = f"whatsapp:+1415555010{n}"
            jobs += [
                conversation(("http", f"h{n}"), http_post(http_client, f"h{n}"), PER_CONVERSATION),
                conversation(("slack", f"D0OK{n}"), slack_post(f"D0OK{n}"), PER_CONVERSATION),
                conversation(("line", user), line_post(line_sender, user), PER_CONVERSATION),
                conversation(("whatsapp", customer), wa_post(customer), PER_CONVERSATION),
            ]
        dead_user = "U" + "ee" * 16
        permanent = {
            ("http", "gone"): http_post(broken_client, "gone"),
            ("slack", "D0GONE"): slack_post("D0GONE"),
            ("line", dead_user): line_post(dead_line_sender, dead_user),
            ("whatsapp", closed_customer): wa_post(closed_customer),
        }
        jobs += [conversation(key, post, PERMANENT) for key, post in permanent.items()]
        await asyncio.wait_for(asyncio.gather(*jobs), timeout=20)

        def answers() -> dict[tuple[str, str], list[str]]:
            found: dict[tuple[str, str], list[str]] = defaultdict(list)
            for cb in receiver.unique():
                found["http", cb.payload["conversation_id"]].append(cb.payload["text"])
            for post in slack.posted:
                found["slack", post.channel].append(post.text)
            for delivery in line.deliveries:
                found["line", delivery.to] += delivery.texts
            for message in twilio.messages:
                found["whatsapp", message.to].append(message.body or "")
            return found

        deliverable = {k: v for k, v in sent.items() if k not in permanent}
        expected = sum(len(v) for v in deliverable.values())
        await eventually(lambda: sum(len(v) for v in answers().values()) >= expected, timeout=30)
        letters = await eventually(
            lambda: _at_least(dead_letters(gw), PERMANENT * len(permanent)), timeout=30
        )
        await asyncio.sleep(0.5)  # a second delivery of anything would arrive in this time
        letters = await dead_letters(gw)
        delivered = answers()
        retries = gw.runtime.metrics.registry.get_sample_value

        for key, texts in deliverable.items():
            assert delivered[key] == texts, f"{key}: not each message once, in order"
        assert not any(delivered.get(key) for key in permanent)
        assert sorted(
            (d.channel, (d.code, d.platform_code), (d.message or {})["text"]) for d in letters
        ) == sorted((key[0], _CODES[key[0]], text) for key in permanent for text in sent[key])
        for channel in ("http", "slack", "line", "whatsapp"):
            assert (retries("flowbiz_delivery_retries_total", {"channel": channel}) or 0) >= 3
    # The injected failures were all used up: the platforms really did fail for a while.
    assert [c.status for c in slack.calls if c.status in (429, 500)].count(500) == 3
    assert sum(1 for c in line.calls if c.status in (429, 500)) == 5
    # The push that timed out had reached LINE: its retry was answered 409, not posted again.
    assert [c.status for c in line.calls_to("push")].count(409) == 1
    assert len([r for r in twilio.refused if r[0] in (429, 500)]) == 5


Post = Callable[[str], Awaitable[int]]
_CODES = {  # (the failure code, the platform's own) of each channel's permanent failure
    "http": ("rejected", "404"),
    "slack": ("rejected", "channel_not_found"),
    "line": ("unauthorized", "401"),
    "whatsapp": ("window_closed", "63016"),
}


async def _at_least(letters: Awaitable[list[Any]], count: int) -> list[Any] | None:
    found = await letters
    return found if len(found) >= count else None
