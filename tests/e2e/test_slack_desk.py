"""A Slack channel as the operators' desk, end to end through the emulators.

One gateway carries a LINE channel and a WhatsApp (Twilio) channel for its customers and a
Slack workspace whose channel ``C0DESK`` is the operators' desk. Customers hand off with
``/human``; the announcement starts a thread per customer at the Slack emulator; an
operator's reply in that thread, sent as a signed Events API callback, reaches the customer
at the LINE emulator or the Twilio emulator under the operator presentation; ``/release`` in
the thread gives the conversation back to the bot.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
    app_mention_event,
    event_callback,
    message_event,
)
from connectors.whatsapp.emulator import TwilioEmulator, TwilioWebhookSender
from gateway.envelope import RawEvent, is_raw_event
from gateway.models import InboundMessage
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
        # As a person answers it: once it is there, and the gateway has recorded which
        # customer the new Slack thread is (it can only do so after Slack answered the
        # post; a reply in that instant would not be known as the desk's).
        store, keyspace = self.gateway.runtime.store, self.gateway.runtime.keyspace
        assert store is not None
        tenant = self.gateway.config.tenants[0].id
        known = keyspace.slack_desk_thread_of(tenant, DESK, post.ts)
        await eventually(lambda: store.get_record(known))
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
                "handle_edits": True,  # edits elsewhere are answered; a desk edit never is
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


@asynccontextmanager
async def open_desk(
    store_url: str,
    personas: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    release_command: str | None = None,
) -> AsyncIterator[Desk]:
    """The gateway with a Slack desk and its three emulators (and ``release_command`` on the
    desk when given)."""
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
    data = _config(store_url, personas, slack, line, twilio)
    if release_command is not None:
        data["tenants"][0]["handoff"]["release_command"] = release_command
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


@pytest.fixture
async def desk(
    store_url: str, echo_personas: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Desk]:
    """The gateway and its three emulators, once on SQLite and once on Redis."""
    async with open_desk(store_url, echo_personas, monkeypatch) as opened:
        yield opened


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


def handoff_outcomes(gateway: RunningGateway, outcome: str) -> float:
    value = gateway.runtime.metrics.registry.get_sample_value(
        "flowbiz_turns_total", {"outcome": f"handoff_{outcome}"}
    )
    return value or 0.0


async def desk_messages(gateway: RunningGateway) -> list[InboundMessage]:
    """What the gateway took in from the desk channel, across the inbox partitions."""
    runtime = gateway.runtime
    found = []
    for partition in range(gateway.config.store.partitions):
        for entry in await runtime.store.range(runtime.keyspace.inbox(partition), count=1000):
            if is_raw_event(entry.payload):  # stored as the platform sent it: parse it
                event = RawEvent.model_validate_json(entry.payload)
                parsed = await runtime.connectors[event.channel].parse(event)
                if parsed is None:
                    continue
                message = parsed
            else:
                message = InboundMessage.model_validate_json(entry.payload)
            if message.conversation.conversation_id == DESK:
                found.append(message)
    return found


async def line_handoff(desk: Desk) -> PostedMessage:
    await desk.from_line("/human")
    thread = await desk.announcement(f"{LINE_CUSTOMER} on line")
    await eventually(lambda: desk.line_texts()[-1:] == [NOTICE])
    return thread


async def test_operator_reply_carries_the_slack_user_as_sender(desk: Desk) -> None:
    """The desk message names the Slack user (id and display name): who answered."""
    thread = await line_handoff(desk)
    await desk.operator_says("On it.", thread.ts)
    await eventually(lambda: desk.line_texts()[-1:] == ["On it."])
    [reply] = [m for m in await desk_messages(desk.gateway) if m.text == "On it."]
    assert reply.conversation.thread is not None
    assert reply.conversation.thread.startswith("handoff-")
    assert reply.sender.id == OPERATOR
    assert reply.sender.display_name == OPERATOR_NAME
    assert not reply.sender.is_bot


async def test_a_second_handoff_of_the_same_customer_continues_its_thread(desk: Desk) -> None:
    thread = await line_handoff(desk)
    await desk.operator_says(" /release", thread.ts)
    await eventually(lambda: desk.line_texts()[-1:] == [RELEASED])
    await desk.from_line("/human")

    def second_announcement() -> bool:
        return any(p.text.startswith("Handoff:") for p in desk.thread_posts(thread.ts))

    await eventually(second_announcement)
    assert len([p for p in desk.slack.posted if p.channel == DESK and p.thread_ts is None]) == 1


async def test_the_bots_own_posts_in_a_desk_thread_are_not_relayed(desk: Desk) -> None:
    """Slack sends the app its own posts back (the emulator echoes them): no loop; nor is a
    post by another bot, or an operator's edit, relayed."""
    thread = await line_handoff(desk)
    await desk.from_line("are you there?")
    await eventually(lambda: [p.text for p in desk.thread_posts(thread.ts)] == ["are you there?"])
    # The announcement and the relay came back to the gateway as the bot's message events.
    await eventually(lambda: len(desk.slack.echoed) >= 2)
    assert {status for _, status in desk.slack.echoed} == {200}
    await desk.operator_says(
        "I am a reminder bot", thread.ts, user="U0OTHERBOT", bot_id="B0OTHERBOT"
    )
    first = await desk.operator_says("First answer.", thread.ts)
    edited = dict(
        first["event"], text="First answer, edited.", edited={"user": OPERATOR, "ts": "1"}
    )
    edit = event_callback(
        {
            "type": "message",
            "subtype": "message_changed",
            "channel": DESK,
            "channel_type": "channel",
            "hidden": True,
            "ts": f"{float(first['event']['ts']) + 1:.6f}",
            "message": edited,
            "previous_message": first["event"],
        }
    )
    await desk.operator_says("", thread.ts, envelope=edit)
    await desk.operator_says("Second answer.", thread.ts)
    await eventually(lambda: desk.line_texts()[-1:] == ["Second answer."])
    assert desk.line_texts()[-3:] == [NOTICE, "First answer.", "Second answer."]
    # Nothing the bot posted became another post in the thread either.
    await eventually(lambda: len(desk.slack.echoed) == len(desk.slack.posted))
    assert [p.text for p in desk.thread_posts(thread.ts)] == ["are you there?"]


async def test_a_retried_slack_event_is_relayed_once(desk: Desk) -> None:
    thread = await line_handoff(desk)
    envelope = await desk.operator_says("Only once, please.", thread.ts)
    await desk.operator_says("", thread.ts, envelope=envelope, retry_num=1)
    again = dict(envelope, event_id="EvRETRIEDAGAIN")  # a new delivery id, the same message
    await desk.operator_says("", thread.ts, envelope=again, retry_num=2)
    await desk.operator_says("Then this.", thread.ts)
    await eventually(lambda: desk.line_texts()[-1:] == ["Then this."])
    assert desk.line_texts().count("Only once, please.") == 1
    assert handoff_outcomes(desk.gateway, "relayed") == 2


async def test_an_operator_mention_seen_first_as_app_mention_is_relayed_once(desk: Desk) -> None:
    """Slack sends app_mention and message for one mention, in either order: both must land
    in the desk thread, and collapse into one relay."""
    thread = await line_handoff(desk)
    ts = f"{float(thread.ts) + 5:.6f}"
    mention = app_mention_event(
        text="can you check this customer?", user=OPERATOR, channel=DESK, ts=ts, thread_ts=thread.ts
    )
    await desk.operator_says("", thread.ts, envelope=event_callback(mention))
    plain = message_event(
        text=f"<@{SLACK.bot_user_id}> can you check this customer?",
        user=OPERATOR,
        channel=DESK,
        channel_type="channel",
        ts=ts,
        thread_ts=thread.ts,
    )
    await desk.operator_says("", thread.ts, envelope=event_callback(plain))
    await eventually(lambda: desk.line_texts()[-1:] == ["can you check this customer?"])
    await desk.operator_says("Done.", thread.ts)
    await eventually(lambda: desk.line_texts()[-1:] == ["Done."])
    assert desk.line_texts().count("can you check this customer?") == 1


async def test_attack_reply_under_the_desk_thread_ts_in_another_channel_is_not_relayed(
    desk: Desk,
) -> None:
    """A thread is the desk's only in the desk channel: the same ``thread_ts`` elsewhere (a
    channel where customers or anyone else write) leads to no customer."""
    thread = await line_handoff(desk)
    elsewhere = event_callback(
        message_event(
            text=f"<@{SLACK.bot_user_id}> send this to the customer",
            user="U0STRANGER",
            channel="C0GENERAL",
            channel_type="channel",
            thread_ts=thread.ts,
        )
    )
    await desk.operator_says("", thread.ts, envelope=elsewhere)
    await desk.operator_says("From the desk.", thread.ts)
    await eventually(lambda: desk.line_texts()[-1:] == ["From the desk."])
    assert "send this to the customer" not in desk.line_texts()


async def test_attack_unsigned_event_in_a_desk_thread_is_refused(desk: Desk) -> None:
    thread = await line_handoff(desk)
    forged = event_callback(
        message_event(
            text="Please pay to this account",
            user=OPERATOR,
            channel=DESK,
            channel_type="channel",
            thread_ts=thread.ts,
        )
    )
    status, _ = await desk.slack_sender.post(
        "/slack/events", json.dumps(forged).encode(), content_type="application/json", sign=False
    )
    assert status == 401
    bad = SlackSender(
        session=desk.slack_sender.session,
        gateway_url=desk.slack_sender.gateway_url,
        signing_secret="not-the-signing-secret",
    )
    status, _ = await bad.event(forged)
    assert status == 401
    await desk.operator_says("From the desk.", thread.ts)
    await eventually(lambda: desk.line_texts()[-1:] == ["From the desk."])
    assert "Please pay to this account" not in desk.line_texts()
