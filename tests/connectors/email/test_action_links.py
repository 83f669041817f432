"""Choices as signed links: a click answered by mail, and every way a link is misused.

The gateway runs for real (SMTP listener, smarthost emulator, worker); the customer's
browser is an aiohttp client following the links in the HTML part of the reply.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from connectors.email.actions import ActionTicket
from connectors.email.emulator import Smarthost, dkim_verify
from gateway.observability import configure_logging
from tests.connectors.email.conftest import SUPPORT, EmailWorld
from tests.connectors.email.rich_world import JANE, choice_links, rich_world


@pytest.fixture
async def world(tmp_path: Path, smarthost: Smarthost, dkim_env: None) -> AsyncIterator[EmailWorld]:
    async with rich_world(tmp_path, smarthost) as w:
        yield w


def actions(world: EmailWorld, outcome: str) -> float:
    return world.metric("flowbiz_email_action_links_total", outcome=outcome)


async def hello(world: EmailWorld) -> dict[str, str]:
    await world.sender.send(
        world.sender.compose(
            from_addr=JANE, from_name="Jane", to=SUPPORT, subject="Question", text="hello"
        )
    )
    [reply] = await world.smarthost.wait_for(1)
    return choice_links(reply)


async def test_a_click_is_confirmed_then_answered_by_mail_once(
    world: EmailWorld, dkim_record: bytes
) -> None:
    """GET shows a confirmation and ingests nothing; the POST makes the persona answer the
    choice by mail, in the thread; a second POST (a double click) answers nothing more."""
    await world.sender.send(
        world.sender.compose(
            from_addr=JANE, from_name="Jane", to=SUPPORT, subject="Question", text="hello"
        )
    )
    [first] = await world.smarthost.wait_for(1)
    assert dkim_verify(first.data, dns_record=dkim_record)
    assert first.message.get_content_type() == "multipart/alternative"
    assert "1. Opening hours" in first.text()  # the text part keeps the numbered choices
    links = choice_links(first)
    assert set(links) == {"Opening hours", "Pricing"}
    assert all(link.startswith(world.gateway.url + "/email/actions/") for link in links.values())
    async with aiohttp.ClientSession() as browser:
        async with browser.get(links["Opening hours"]) as page:
            assert page.status == 200
            body = await page.text()
            assert "Opening hours" in body
            assert 'method="post"' in body
            assert page.headers["Referrer-Policy"] == "no-referrer"
            assert "no-store" in page.headers["Cache-Control"]
        await asyncio.sleep(0.5)
        assert len(world.smarthost.received) == 1, "a GET (a mail scanner) must not act"
        assert actions(world, "shown") == 1
        # The clicker tries to choose something else: the value is the token's.
        async with browser.post(links["Opening hours"], data={"value": "pricing"}) as done:
            assert done.status == 200
            assert "you can close this page" in await done.text()
        second = (await world.smarthost.wait_for(2))[1]
        assert "Monday to Friday" in second.text()
        assert "Our plans" not in second.text()
        assert str(second.message["Subject"]) == "Re: Question"
        assert str(second.message["In-Reply-To"]) == str(first.message["Message-ID"])
        assert second.rcpt_tos == (JANE,)
        assert dkim_verify(second.data, dns_record=dkim_record)
        async with browser.post(links["Opening hours"], data={"confirm": "1"}) as again:
            assert again.status == 200
            assert "already" in (await again.text()).lower()
    await asyncio.sleep(0.5)
    assert len(world.smarthost.received) == 2
    assert actions(world, "received") == 1
    assert actions(world, "duplicate") == 1


async def test_forged_altered_and_expired_links_are_refused(world: EmailWorld) -> None:
    """Each is a 403 page, counted; none is ingested, GET or POST."""
    link = (await hello(world))["Pricing"]
    base, token = link.rsplit("/", 1)
    middle = len(token) // 2
    altered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    seal = await world.connector._seal("acme", world.connector._channels[0][1])
    past = ActionTicket(
        tenant="acme",
        root="root@customer.example",
        value="pricing",
        label="Pricing",
        expires=int(time.time()) - 1,
        address=SUPPORT,
        parent="p@acme.example",
        customer=JANE,
        name=None,
        subject="x",
    )
    expired = seal.seal(past)
    # Sealed with a key that opens, but naming a tenant that does not own the address.
    other_tenant = seal.seal(replace(past, tenant="globex", expires=int(time.time()) + 60))
    async with aiohttp.ClientSession() as browser:
        for bad in (altered, token[:-4], "A" * 120, other_tenant):
            for method in ("GET", "POST"):
                async with browser.request(method, f"{base}/{bad}", data={"x": "1"}) as answer:
                    assert answer.status == 403, (method, bad[:20])
                    assert "not valid" in await answer.text()
        for method in ("GET", "POST"):
            async with browser.request(method, f"{base}/{expired}", data={"x": "1"}) as answer:
                assert answer.status == 403
                assert "expired" in await answer.text()
    assert actions(world, "forged") == 8
    assert actions(world, "expired") == 2
    await asyncio.sleep(0.5)
    assert len(world.smarthost.received) == 1
    assert actions(world, "received") == 0


async def test_without_a_public_url_choices_stay_numbered_text(
    tmp_path: Path, smarthost: Smarthost, dkim_env: None
) -> None:
    """No URL a browser could reach: no links; answering the number still chooses."""
    async with rich_world(tmp_path, smarthost, actions={}) as world:
        await world.sender.send(
            world.sender.compose(
                from_addr=JANE, from_name="Jane", to=SUPPORT, subject="Q", text="hello"
            )
        )
        [first] = await world.smarthost.wait_for(1)
        assert choice_links(first) == {}
        html = first.html()
        assert "1. Opening hours" in html
        assert "Reply with its number" in html
        answer = world.sender.reply_to(first.message, from_addr=JANE, from_name="Jane", text="2")
        await world.sender.send(answer)
        second = (await world.smarthost.wait_for(2))[1]
        assert "Our plans" in second.text()


@pytest.fixture
def info_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    quieted = logging.getLogger("mail.log")
    quieted_level = quieted.level
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)
    quieted.setLevel(quieted_level)


async def test_a_click_leaves_no_address_or_token_in_the_logs(
    tmp_path: Path, smarthost: Smarthost, dkim_env: None, info_logs: io.StringIO
) -> None:
    async with rich_world(tmp_path, smarthost) as world:
        link = (await hello(world))["Pricing"]
        token = link.rsplit("/", 1)[1]
        async with aiohttp.ClientSession() as browser:
            async with browser.post(link, data={"confirm": "1"}) as done:
                assert done.status == 200
            async with browser.get(link[:-3] + "AAA") as forged:
                assert forged.status == 403
        await world.smarthost.wait_for(2)
    text = info_logs.getvalue()
    assert "email.action_refused" in text
    assert JANE not in text
    assert token[:40] not in text
