"""One handoff state, two desks, in a real browser: a WhatsApp customer (signed Twilio
webhooks to the gateway, replies at the Twilio emulator) answered from the console, and the
same handed-off conversation seen and answered from a Slack desk (the Slack emulator) and
from the console, each showing who holds it and who gave it back.

The gateway carries the tenant's WhatsApp number and a Slack workspace whose channel
``C0DESK`` is the tenant's operators' desk, as in ``tests/e2e/test_slack_desk.py``; the
persona echoes the customer, so "the bot answers again" is the customer's own words.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors.line.emulator import LineEmulator
from connectors.slack.emulator import PostedMessage, SlackEmulator, SlackSender, message_event
from connectors.slack.emulator import event_callback as slack_event
from connectors.whatsapp.emulator import TwilioEmulator, TwilioWebhookSender
from gateway.admin.keys import Role
from tests.console.conftest import shot
from tests.e2e.test_slack_desk import (
    DESK,
    LINE_SECRET,
    LINE_TOKEN,
    NOTICE,
    OPERATOR,
    OPERATOR_NAME,
    RELEASED,
    SLACK,
    SLACK_SECRET,
    WA_ACCOUNT,
    WA_CUSTOMER,
    WA_SENDER,
    WA_TOKEN,
    _config,
)
from tests.harness import RunningGateway, eventually, running_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")

CUSTOMER = "Alice"  # the WhatsApp profile name the Twilio webhook carries


@pytest.fixture
def echo_personas(tmp_path: Path) -> Path:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "core.yaml").write_text(
        "name: core\ndisplay_name: Echo\nagent: {kind: echo, options: {prefix: ''}}\n"
    )
    return folder


@pytest.fixture(autouse=True)
def desk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "D_SLACK_SECRET": SLACK_SECRET,
        "D_SLACK_BOT": SLACK.bot_token,
        "D_LINE_SECRET": LINE_SECRET,
        "D_LINE_TOKEN": LINE_TOKEN,
        "D_WA_TOKEN": WA_TOKEN,
    }.items():
        monkeypatch.setenv(name, value)


@dataclass(slots=True)
class TwoDesks:
    gw: RunningGateway
    slack: SlackEmulator
    twilio: TwilioEmulator
    slack_sender: SlackSender
    wa_sender: TwilioWebhookSender

    @property
    def url(self) -> str:
        return self.gw.ops_url + "/console/"

    async def key(self, name: str, role: Role) -> str:
        from gateway.admin import keys as apikeys

        store = self.gw.runtime.store
        assert store is not None
        _, token = await apikeys.create_key(
            store, self.gw.runtime.keyspace, name=name, role=role, tenant="acme"
        )
        return token

    async def from_whatsapp(self, text: str) -> None:
        status, _ = await self.wa_sender.send(from_=WA_CUSTOMER, to=WA_SENDER, body=text)
        assert status == 200  # Twilio's webhook was signed and taken

    def wa_texts(self) -> list[str]:
        return [m.body or "" for m in self.twilio.messages if m.to == WA_CUSTOMER]

    async def slack_operator_says(self, text: str, thread_ts: str) -> None:
        envelope = slack_event(
            message_event(
                text=text,
                user=OPERATOR,
                channel=DESK,
                channel_type="channel",
                thread_ts=thread_ts,
            )
        )
        status, _ = await self.slack_sender.event(envelope)
        assert status == 200

    async def announcement(self) -> PostedMessage:
        def found() -> PostedMessage | None:
            return next(
                (
                    p
                    for p in self.slack.posted
                    if p.channel == DESK
                    and p.thread_ts is None
                    and p.text.startswith(f"Handoff: {CUSTOMER} on whatsapp")
                ),
                None,
            )

        post: PostedMessage = await eventually(found)
        return post

    def thread_texts(self, thread_ts: str) -> list[str]:
        return [p.text for p in self.slack.posted if p.channel == DESK and p.thread_ts == thread_ts]


@asynccontextmanager
async def two_desks(tmp_path: Path, personas: Path) -> AsyncIterator[TwoDesks]:
    slack = await SlackEmulator(workspaces=(SLACK,)).start()
    slack.add_user(OPERATOR, display_name=OPERATOR_NAME)
    line = await LineEmulator().start()  # the tenant's LINE channel; unused here
    twilio = await TwilioEmulator(accounts={WA_ACCOUNT: WA_TOKEN}).start()
    data = _config(f"sqlite:///{tmp_path}/gw.db", personas, slack, line, twilio)
    try:
        async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
            slack_sender = SlackSender(
                session=session, gateway_url=gw.url, signing_secret=SLACK_SECRET
            )
            slack.echo_to(slack_sender)  # the bot's own posts come back, as Slack sends them
            yield TwoDesks(
                gw=gw,
                slack=slack,
                twilio=twilio,
                slack_sender=slack_sender,
                wa_sender=TwilioWebhookSender(
                    session=session, gateway_url=gw.url, account_sid=WA_ACCOUNT, auth_token=WA_TOKEN
                ),
            )
    finally:
        await twilio.stop()
        await line.stop()
        await slack.stop()


async def sign_in(browser: Any, desks: TwoDesks, token: str) -> Any:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(5000)
    page = await context.new_page()
    await page.goto(desks.url)
    await page.fill("input[name=key]", token)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/inbox", timeout=5000)
    return page


# The reply form as the page drew it (its CSRF token and reply id), and sending it again.
SAVE_REPLY_FORM = """() => {
  const form = document.querySelector('form[action$="/reply"]');
  return {action: form.action, body: new URLSearchParams(new FormData(form)).toString()};
}"""
RESEND_REPLY_FORM = """async (form) => {
  const response = await fetch(form.action, {
    method: "POST", body: form.body,
    headers: {"Content-Type": "application/x-www-form-urlencoded"},
  });
  return response.status;
}"""


async def reply_in_console(page: Any, text: str) -> None:
    await page.fill("textarea[name=text] >> nth=0", text)
    await page.click("#send-reply")
    await page.wait_for_selector(".flash")


async def test_whatsapp_customer_answered_from_the_console(
    browser: Any, tmp_path: Path, echo_personas: Path
) -> None:
    """/human on WhatsApp → the handoff queue, live; take over; the reply reaches the Twilio
    emulator once, signed with the operator's name; release; the bot answers again."""
    async with two_desks(tmp_path, echo_personas) as desks:
        page = await sign_in(browser, desks, await desks.key("Dana", Role.OPERATOR))
        await desks.from_whatsapp("hello from whatsapp")
        await eventually(lambda: desks.wa_texts() == ["hello from whatsapp"])

        await page.goto(desks.url + "queue")
        await page.locator("#queue-rows", has_text="Nobody is waiting").wait_for()
        await page.evaluate("window.notReloaded = true")
        await page.wait_for_timeout(300)  # the event stream is open
        await desks.from_whatsapp("/human")
        row = page.locator("#queue-rows tr", has_text=CUSTOMER)
        await row.wait_for(timeout=3000)  # live, without a reload
        assert await page.evaluate("window.notReloaded") is True
        assert "whatsapp" in await row.inner_text()
        await eventually(lambda: desks.wa_texts()[-1:] == [NOTICE])
        await shot(page, "queue-whatsapp")

        await row.locator("a").click()
        await page.wait_for_selector("#history")
        assert await page.inner_text("#status") == "waiting for a person"
        await page.click("#take-over")
        await page.wait_for_selector("#holder")
        assert await page.inner_text("#holder") == "Dana"
        assert "with a person" in await page.inner_text("#status")

        await page.fill("textarea[name=text] >> nth=0", "Hi Alice, Dana here. It ships today.")
        form = await page.evaluate(SAVE_REPLY_FORM)
        await page.click("#send-reply")
        signed = "Hi Alice, Dana here. It ships today.\n\n— Dana"
        await eventually(lambda: desks.wa_texts()[-1:] == [signed])
        await page.locator("#history li.person", has_text="Dana here").wait_for()
        # The same form sent again (a double click, a resent POST) is delivered once.
        assert await page.evaluate(RESEND_REPLY_FORM, form) == 200
        await page.reload()
        await page.wait_for_timeout(500)  # what the dispatcher would have sent by now
        assert desks.wa_texts().count(signed) == 1
        assert await page.locator("#history li.person", has_text="Dana here").count() == 1
        await shot(page, "conversation-whatsapp")

        # The customer's next message reaches the console (and the desk), not the bot.
        sent = len(desks.wa_texts())
        await desks.from_whatsapp("thanks, waiting")
        await page.locator("#history", has_text="thanks, waiting").wait_for(timeout=3000)
        assert len(desks.wa_texts()) == sent

        await page.click("#release")
        await page.locator("#status", has_text="bot").wait_for(timeout=3000)
        await eventually(lambda: desks.wa_texts()[-1:] == [RELEASED])
        await desks.from_whatsapp("back to the bot")
        await eventually(lambda: desks.wa_texts()[-1:] == ["back to the bot"])
        await page.goto(desks.url + "queue")
        await page.locator("#queue-rows", has_text="Nobody is waiting").wait_for()
        await page.context.close()


async def test_one_handoff_seen_and_answered_from_slack_and_the_console(
    browser: Any, tmp_path: Path, echo_personas: Path
) -> None:
    """The Slack operator answers first and holds it; the console shows it live and takes
    over only explicitly; a release from either desk gives it back, and both desks show it."""
    async with two_desks(tmp_path, echo_personas) as desks:
        page = await sign_in(browser, desks, await desks.key("Dana", Role.OPERATOR))
        await desks.from_whatsapp("/human")
        announcement = await desks.announcement()
        thread = announcement.ts
        assert "write !release to hand the conversation back" in announcement.text
        await eventually(lambda: desks.wa_texts()[-1:] == [NOTICE])

        await page.goto(desks.url + "queue")
        await page.locator("#queue-rows tr", has_text=CUSTOMER).locator("a").click()
        await page.wait_for_selector("#history")
        assert await page.inner_text("#status") == "waiting for a person"
        assert await page.inner_text("#take-over") == "Take over"
        await page.evaluate("window.notReloaded = true")
        await page.wait_for_timeout(300)  # the event stream is open

        # Bob answers first, in the Slack thread: he holds it, and the console shows it live,
        # the actions too: taking over now names him.
        await desks.slack_operator_says("Bob here, checking your order.", thread)
        bob_says = "Bob here, checking your order.\n\n— Bob"
        await eventually(lambda: desks.wa_texts()[-1:] == [bob_says])
        await page.locator("#holder", has_text=OPERATOR_NAME).wait_for(timeout=3000)
        meta = await page.locator(".meta").inner_text()
        assert f"held by {OPERATOR_NAME} (slack)" in meta
        assert "with a person" in meta
        await page.locator("#take-over", has_text=f"Take over from {OPERATOR_NAME}").wait_for(
            timeout=3000
        )
        assert await page.evaluate("window.notReloaded") is True
        await shot(page, "held-from-slack")

        # The console does not answer over Bob's head: a reply is refused, nothing is sent.
        sent = len(desks.wa_texts())
        await reply_in_console(page, "Dana jumping in.")
        assert await page.inner_text(".flash") == f"held by {OPERATOR_NAME}"
        # Taking over is an explicit action that names the holder.
        take_over = page.locator("#take-over")
        assert await take_over.inner_text() == f"Take over from {OPERATOR_NAME}"
        await take_over.click()
        await page.locator("#holder", has_text="Dana").wait_for()
        assert "(console)" in await page.locator(".meta").inner_text()
        await eventually(
            lambda: any("Dana holds it now (console)" in t for t in desks.thread_texts(thread))
        )
        await reply_in_console(page, "Dana here, it ships today.")
        dana_says = "Dana here, it ships today.\n\n— Dana"
        await eventually(lambda: desks.wa_texts()[-1:] == [dana_says])
        assert desks.wa_texts()[sent:] == [dana_says]  # the refused reply never left
        await eventually(
            lambda: "Dana (console): Dana here, it ships today." in desks.thread_texts(thread)
        )

        # Released from Slack: the customer hears it, the console shows the bot live.
        await desks.slack_operator_says("!release", thread)
        await eventually(lambda: desks.wa_texts()[-1:] == [RELEASED])
        await page.locator("#status", has_text="bot").wait_for(timeout=3000)
        assert await page.locator("#holder").count() == 0
        await eventually(lambda: any(t.startswith("Released:") for t in desks.thread_texts(thread)))
        await desks.from_whatsapp("bot, are you back?")
        await eventually(lambda: desks.wa_texts()[-1:] == ["bot, are you back?"])

        # Handed off again, into the same thread; Bob holds it; released from the console.
        await desks.from_whatsapp("/human")
        await eventually(
            lambda: sum(t.startswith("Handoff:") for t in desks.thread_texts(thread)) == 1
        )
        # The notice goes out from the customer's partition, the announcement from the
        # desk's: either may arrive first.
        await eventually(lambda: desks.wa_texts()[-1:] == [NOTICE])
        await desks.slack_operator_says("Bob again.", thread)
        await eventually(lambda: desks.wa_texts()[-1:] == ["Bob again.\n\n— Bob"])
        # No reload: the release button came back with the handoff, live.
        await page.evaluate("window.notReloaded = true")
        await page.locator("#holder", has_text=OPERATOR_NAME).wait_for(timeout=3000)
        await page.locator("#release").wait_for(timeout=3000)
        assert await page.evaluate("window.notReloaded") is True
        await page.click("#release")
        await page.locator("#status", has_text="bot").wait_for(timeout=3000)
        await eventually(lambda: desks.wa_texts()[-1:] == [RELEASED])
        await eventually(
            lambda: any(
                t.startswith("Released by Dana (console)") for t in desks.thread_texts(thread)
            )
        )
        await desks.from_whatsapp("and the bot once more")
        await eventually(lambda: desks.wa_texts()[-1:] == ["and the bot once more"])
        # Bob's next line in the thread finds nothing handed off, and says so there.
        await desks.slack_operator_says("Still there?", thread)
        await eventually(lambda: any("not handed off" in t for t in desks.thread_texts(thread)))
        assert "Still there?" not in " ".join(desks.wa_texts())
        await page.context.close()
