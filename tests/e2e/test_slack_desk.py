"""A Slack channel as the operators' desk, end to end through the emulators.

One gateway carries a LINE channel and a WhatsApp (Twilio) channel for its customers and a
Slack workspace whose channel ``C0DESK`` is the operators' desk. Customers hand off with
``/human``; the announcement starts a thread per customer at the Slack emulator; an
operator's reply in that thread, sent as a signed Events API callback, reaches the customer
at the LINE emulator or the Twilio emulator under the operator presentation; ``/release`` in
the thread gives the conversation back to the bot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.line.emulator import LineEmulator, LineWebhookSender
from connectors.slack.emulator import (
    EmulatedWorkspace,
    PostedMessage,
    SlackEmulator,
    SlackSender,
    event_callback,
    message_event,
)
from connectors.whatsapp.emulator import TwilioEmulator, TwilioWebhookSender
from tests.harness import RunningGateway, base_config, eventually, running_gateway

SLACK = EmulatedWorkspace()
DESK = "C0DESK"
OPERATOR, OPERATOR_NAME = "U0BOB", "Bob"
SLACK_SECRET = "desk-slack-signing-secret"
LINE_DEST, LINE_SECRET, LINE_TOKEN = "U" + "d5" * 16, "desk-line-secret", "desk-line-token"
LINE_CUSTOMER = "U" + "c1" * 16
WA_ACCOUNT, WA_TOKEN, WA_SENDER = "AC" + "e6" * 16, "desk-wa-token", "whatsapp:+14155238886"
WA_CUSTOMER = "whatsapp:+15551234567"
RELEASED = "You are back with the assistant."
NOTICE = "A person will answer you here."


@pytest.fixture
def echo_personas(tmp_path: Path) -> Path:
    """One persona, ``core``, whose reply is exactly the customer's text."""
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "core.yaml").write_text(
        "name: core\ndisplay_name: Echo\nagent: {kind: echo, options: {prefix: ''}}\n"
    )
    return folder


@dataclass(slots=True)
class Desk:
    gateway: RunningGateway
    slack: SlackEmulator
    line: LineEmulator
    twilio: TwilioEmulator
    slack_sender: SlackSender
    line_sender: LineWebhookSender
    wa_sender: TwilioWebhookSender

    async def from_line(self, text: str) -> None:
        assert await self.line_sender.post([self.line_sender.text(text, user_id=LINE_CUSTOMER)])
        # 200 is the only answer LINE takes as delivered

    async def from_whatsapp(self, text: str) -> None:
        status, _ = await self.wa_sender.send(from_=WA_CUSTOMER, to=WA_SENDER, body=text)
        assert status == 200

    async def operator_says(
        self,
        text: str,
        thread_ts: str,
        *,
        user: str = OPERATOR,
        retry_num: int | None = None,
        envelope: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """An operator's reply in a desk thread, as Slack delivers it (signed)."""
        envelope = envelope or event_callback(
            message_event(
                text=text,
                user=user,
                channel=DESK,
                channel_type="channel",
                thread_ts=thread_ts,
                **extra,
            )
        )
        status, _ = await self.slack_sender.event(envelope, retry_num=retry_num)
        assert status == 200
        return envelope

    def thread_posts(self, thread_ts: str) -> list[PostedMessage]:
        return [p for p in self.slack.posted if p.channel == DESK and p.thread_ts == thread_ts]

    async def announcement(self, mentioning: str) -> PostedMessage:
        """The top-level desk post that announced the customer ``mentioning`` names."""

        def found() -> PostedMessage | None:
            return next(
                (
                    p
                    for p in self.slack.posted
                    if p.channel == DESK and p.text.startswith("Handoff:") and mentioning in p.text
                ),
                None,
            )

        post: PostedMessage = await eventually(found)
        return post

    def line_texts(self) -> list[str]:
        return self.line.texts_to(LINE_CUSTOMER)

    def wa_texts(self) -> list[str]:
        return [m.body or "" for m in self.twilio.messages if m.to == WA_CUSTOMER]


def _config(
    store_url: str, personas: Path, slack: SlackEmulator, line: LineEmulator, twilio: TwilioEmulator
) -> dict[str, Any]:
    acme = {
        "id": "acme",
        "name": "Acme",
        "channels": [
            {
                "kind": "line",
                "destination": LINE_DEST,
                "channel_secret": "env:D_LINE_SECRET",
                "channel_access_token": "env:D_LINE_TOKEN",
                "api_base_url": line.url,
                "fetch_profiles": False,
                "loading_indicator": False,
            },
            {
                "kind": "whatsapp",
                "account_sid": WA_ACCOUNT,
                "auth_token": "env:D_WA_TOKEN",
                "from_number": WA_SENDER,
                "api_base_url": twilio.url,
                "status_callback": False,
            },
            {
                "kind": "slack",
                "team_id": SLACK.team_id,
                "signing_secret": "env:D_SLACK_SECRET",
                "bot_token": "env:D_SLACK_BOT",
                "api_base_url": slack.api_url,
                "messages_per_second": 100,
                "burst": 100,
            },
        ],
        "handoff": {
            "operators": {
                "channel": "slack",
                "conversation_id": DESK,
                "reply_context": {"kind": "slack", "team_id": SLACK.team_id, "channel_id": DESK},
            },
            "operator_display_name": "Acme support",
            "customer_notice": NOTICE,
            "released_notice": RELEASED,
        },
    }
    data = base_config(store_url, tenants=[acme])
    data["personas_dir"] = str(personas)
    data["routing"] = {"default_persona": "core"}
    return data


@pytest.fixture
async def desk(
    tmp_path: Path, echo_personas: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Desk]:
    for name, value in {
        "D_SLACK_SECRET": SLACK_SECRET,
        "D_SLACK_BOT": SLACK.bot_token,
        "D_LINE_SECRET": LINE_SECRET,
        "D_LINE_TOKEN": LINE_TOKEN,
        "D_WA_TOKEN": WA_TOKEN,
    }.items():
        monkeypatch.setenv(name, value)
    slack = await SlackEmulator(workspaces=(SLACK,)).start()
    slack.add_user(OPERATOR, display_name=OPERATOR_NAME)
    line = await LineEmulator().start()
    line.add_channel(destination=LINE_DEST, access_token=LINE_TOKEN, channel_secret=LINE_SECRET)
    twilio = await TwilioEmulator(accounts={WA_ACCOUNT: WA_TOKEN}).start()
    data = _config(f"sqlite:///{tmp_path}/gw.db", echo_personas, slack, line, twilio)
    try:
        async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
            slack_sender = SlackSender(
                session=session, gateway_url=gw.url, signing_secret=SLACK_SECRET
            )
            slack.echo_to(slack_sender)  # the bot's own posts come back, as Slack sends them
            yield Desk(
                gateway=gw,
                slack=slack,
                line=line,
                twilio=twilio,
                slack_sender=slack_sender,
                line_sender=LineWebhookSender(
                    session=session,
                    gateway_url=gw.url,
                    destination=LINE_DEST,
                    channel_secret=LINE_SECRET,
                    emulator=line,
                ),
                wa_sender=TwilioWebhookSender(
                    session=session, gateway_url=gw.url, account_sid=WA_ACCOUNT, auth_token=WA_TOKEN
                ),
            )
    finally:
        await twilio.stop()
        await line.stop()
        await slack.stop()


async def test_line_and_whatsapp_customers_are_answered_from_slack_threads(desk: Desk) -> None:
    """/human → a thread per customer at Slack; replies there reach LINE and WhatsApp;
    /release gives each conversation back to the bot."""
    await desk.from_line("hello from line")
    await desk.from_whatsapp("hello from whatsapp")
    await eventually(lambda: desk.line_texts() == ["hello from line"])
    await eventually(lambda: desk.wa_texts() == ["hello from whatsapp"])

    await desk.from_line("/human")
    line_thread = await desk.announcement(f"{LINE_CUSTOMER} on line")
    await desk.from_whatsapp("/human")
    wa_thread = await desk.announcement("Alice on whatsapp")
    # Each announcement opens its own thread at the desk's top level.
    assert line_thread.thread_ts is None
    assert wa_thread.thread_ts is None
    assert line_thread.ts != wa_thread.ts
    await eventually(lambda: desk.line_texts()[-1:] == [NOTICE])
    await eventually(lambda: desk.wa_texts()[-1:] == [NOTICE])

    # Later customer messages go into the customer's own thread.
    await desk.from_line("where is my parcel?")
    await desk.from_whatsapp("my invoice is wrong")
    await eventually(
        lambda: [p.text for p in desk.thread_posts(line_thread.ts)] == ["where is my parcel?"]
    )
    await eventually(
        lambda: [p.text for p in desk.thread_posts(wa_thread.ts)] == ["my invoice is wrong"]
    )
    assert len([p for p in desk.slack.posted if p.channel == DESK and p.thread_ts is None]) == 2

    # An operator answers each in its thread; the bot stays silent.
    await desk.operator_says("Hi, Bob here: it ships today.", line_thread.ts)
    await desk.operator_says("Hi, Bob here: I will fix the invoice.", wa_thread.ts)
    await eventually(lambda: desk.line_texts()[-1:] == ["Hi, Bob here: it ships today."])
    await eventually(
        lambda: desk.wa_texts()[-1:] == ["Hi, Bob here: I will fix the invoice.\n\n— Bob"]
    )
    line_reply = desk.line.deliveries[-1]
    assert "Acme support" in str(line_reply.messages)  # the operator presentation (sender name)

    # /release (typed with a leading space, as Slack needs for a text starting with "/").
    await desk.operator_says(" /release", line_thread.ts)
    await desk.operator_says(" /release", wa_thread.ts)
    await eventually(lambda: desk.line_texts()[-1:] == [RELEASED])
    await eventually(lambda: desk.wa_texts()[-1:] == [RELEASED])
    await eventually(
        lambda: any(p.text.startswith("Released") for p in desk.thread_posts(line_thread.ts))
    )

    # The bot answers again, and nothing more reaches the desk.
    await desk.from_line("back to the bot")
    await desk.from_whatsapp("back to the bot too")
    await eventually(lambda: desk.line_texts()[-1:] == ["back to the bot"])
    await eventually(lambda: desk.wa_texts()[-1:] == ["back to the bot too"])
    assert not any("back to the bot" in p.text for p in desk.slack.posted)
