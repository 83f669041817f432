"""The operator's day in a real browser: sign in, a LINE customer's message appears live,
her name and linked contact shown, take over, reply (delivered on LINE), release, and the
bot answers again."""

from __future__ import annotations

import pytest

from gateway.admin.keys import Role
from gateway.contacts import ContactBook, ContactIdentity
from gateway.models import Channel
from tests.console.conftest import ALICE, console_gateway, shot, sign_in
from tests.harness import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_live_inbox_take_over_reply_release(browser, tmp_path, personas_dir):
    async with console_gateway(tmp_path, personas_dir) as console:
        token = await console.key("Dana", Role.OPERATOR)
        page = await sign_in(browser, console, token)
        await page.evaluate("window.notReloaded = true")
        await page.wait_for_timeout(300)  # the event stream is open

        # The operator linked Alice's LINE id to her contact before she wrote.
        store = console.gw.runtime.store
        assert store is not None
        book = ContactBook(store, console.gw.runtime.keyspace)
        await book.put("acme", "alice", name="Alice Example", emails=["alice@example.com"])
        await book.link("acme", "alice", ContactIdentity(channel=Channel.LINE, id=ALICE))

        line = console.line
        assert await line.post([line.text("hello, I need help", user_id=ALICE)]) == 200
        row = page.locator("#inbox-rows tr", has_text="Alice")
        await row.wait_for(timeout=3000)  # live, without a reload
        assert await page.evaluate("window.notReloaded") is True
        assert "Hello Alice!" in await row.inner_text()  # the bot's answer is the last message
        await shot(page, "inbox")

        await row.locator("a").click()
        await page.wait_for_selector("#history")
        # Who wrote: the name LINE's profile gave, the raw id beside it, the linked contact.
        person = page.locator("#people .person")
        assert await person.locator(".name").inner_text() == "Alice"
        assert ALICE in await person.inner_text()
        assert await person.locator(".contact").inner_text() == "Alice Example"
        assert "on line" in await person.inner_text()
        await page.click("#take-over")
        await page.wait_for_selector("#holder")
        assert await page.inner_text("#holder") == "Dana"
        assert "with a person" in await page.inner_text("#status")

        await page.fill("textarea[name=text] >> nth=0", "Hi Alice, Dana here. Let me check.")
        await page.click("#send-reply")
        deliveries = await eventually(
            lambda: [
                d
                for d in console.emulator.deliveries_to(ALICE)
                if any("Dana here" in t for t in d.texts)
            ],
            timeout=5,
        )
        assert len(deliveries) == 1
        await page.wait_for_selector("#history li.person")
        await shot(page, "conversation")

        # The customer's next message reaches the console, not the bot.
        before = len(console.emulator.deliveries_to(ALICE))
        assert await line.post([line.text("thanks, waiting", user_id=ALICE)]) == 200
        await page.locator("#history", has_text="thanks, waiting").wait_for(timeout=3000)
        assert len(console.emulator.deliveries_to(ALICE)) == before

        await page.click("#release")
        await page.locator("#status", has_text="bot").wait_for(timeout=3000)
        assert await line.post([line.text("pricing?", user_id=ALICE)]) == 200
        await eventually(
            lambda: any(
                "Pro costs 29 a month." in t
                for d in console.emulator.deliveries_to(ALICE)
                for t in d.texts
            ),
            timeout=5,
        )
        await page.context.close()
