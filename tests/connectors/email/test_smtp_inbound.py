"""The SMTP listener end to end: real sender → real gateway → real smarthost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from connectors.email.emulator import Smarthost, dkim_verify
from tests.conftest import start_redis_server
from tests.connectors.email.conftest import (
    DOCS,
    DOMAIN,
    SELECTOR,
    SUPPORT,
    EmailWorld,
    email_world,
)
from tests.harness import eventually

JANE = "jane@customer.example"


async def test_mail_to_a_configured_address_is_answered_with_a_threaded_signed_reply(
    world: EmailWorld, dkim_record: bytes
) -> None:
    """A customer's mail is accepted with 250 and answered once, threaded and DKIM-signed."""
    msg = world.sender.compose(
        from_addr=JANE,
        from_name="Jane Doe",
        to=SUPPORT,
        subject="Re: RE: hello",
        text="hello there",
        html="<p>hello <b>there</b></p>",
        message_id="<first.1@customer.example>",
    )
    code, _ = await world.sender.send(msg)
    assert code == 250
    [relayed] = await world.smarthost.wait_for(1)
    reply = relayed.message
    assert relayed.rcpt_tos == (JANE,)
    assert relayed.mail_from == SUPPORT
    assert str(reply["From"]) == f"FlowBiz Assistant <{SUPPORT}>"
    assert str(reply["To"]) == f"Jane Doe <{JANE}>"
    assert str(reply["Subject"]) == "Re: hello"
    assert str(reply["In-Reply-To"]) == "<first.1@customer.example>"
    assert str(reply["References"]) == "<first.1@customer.example>"
    assert str(reply["Auto-Submitted"]) == "auto-replied"
    assert str(reply["Message-ID"]).endswith(f".flowbiz@{DOMAIN}>")
    text = relayed.text()
    assert "Hello Jane Doe" in text
    assert "1. Opening hours\n2. Pricing" in text  # buttons as numbered lines
    assert "\n-- \n— FlowBiz Assistant" in text
    html = reply.get_body(preferencelist=("html",))
    assert html is not None
    assert "FlowBiz Assistant" in html.get_content()
    assert f"s={SELECTOR};" in str(reply["DKIM-Signature"]).replace(" ", "")
    assert dkim_verify(relayed.data, dns_record=dkim_record)
    assert not dkim_verify(relayed.data.replace(b"Hello", b"Hellp", 1), dns_record=dkim_record)


async def test_dkim_signature_breaks_when_a_signed_header_is_changed(
    world: EmailWorld, dkim_record: bytes
) -> None:
    """The signature covers the headers a forger would change (here the Subject)."""
    await world.sender.send(
        world.sender.compose(
            from_addr=JANE,
            from_name="Jane",
            to=SUPPORT,
            subject="prices",
            text="what are your prices?",
        )
    )
    [relayed] = await world.smarthost.wait_for(1)
    assert dkim_verify(relayed.data, dns_record=dkim_record)
    forged = relayed.data.replace(b"Subject: Re: prices", b"Subject: Re: pay now", 1)
    assert forged != relayed.data
    assert not dkim_verify(forged, dns_record=dkim_record)


async def test_three_message_thread_stays_one_conversation(world: EmailWorld) -> None:
    """A reply to our reply (References chain) lands in the conversation of the first mail."""
    first = world.sender.compose(
        from_addr=JANE, from_name="Jane", to=SUPPORT, subject="Order question", text="hello"
    )
    await world.sender.send(first)
    [r1] = await world.smarthost.wait_for(1)
    second = world.sender.reply_to(
        r1.message, from_addr=JANE, from_name="Jane", text="what are your prices?"
    )
    await world.sender.send(second)
    r2 = (await world.smarthost.wait_for(2))[1]
    # Outlook-style: only In-Reply-To, no References, pointing at our second reply.
    third = world.sender.compose(
        from_addr=JANE,
        from_name="Jane",
        to=SUPPORT,
        subject="RE: Re: Order question",
        text="and your opening hours?",
        in_reply_to=str(r2.message["Message-ID"]),
    )
    await world.sender.send(third)
    r3 = (await world.smarthost.wait_for(3))[2]
    root = str(first["Message-ID"]).strip("<>")
    assert str(r2.message["Subject"]) == "Re: Order question"
    assert str(r3.message["Subject"]) == "Re: Order question"
    assert "Our plans" in r2.text()
    assert "Monday to Friday" in r3.text()
    assert str(r2.message["References"]).split()[0] == f"<{root}>"
    store, keyspace = world.gateway.runtime.store, world.gateway.runtime.keyspace
    assert store is not None
    keys = await store.scan(keyspace.prefix + ":", limit=10_000)
    states = [k for k in keys if k.endswith(":state") and "/email/" in k]
    assert len(states) == 1
    assert root.replace("@", "%40") in states[0]


async def test_a_reply_is_on_record_for_threading_before_it_leaves(world: EmailWorld) -> None:
    """The customer's answer to our reply may arrive the moment it is delivered: the reply's
    Message-ID is recorded before the relay ever sees it (here the relay defers the first
    try), so the answer always finds its thread and a store error can never follow a sent
    mail into a second send."""
    world.smarthost.fail_next(1, reply="451 4.3.0 Try again later")
    first = world.sender.compose(
        from_addr=JANE, from_name="Jane", to=SUPPORT, subject="Order question", text="hello"
    )
    await world.sender.send(first)
    store, keyspace = world.gateway.runtime.store, world.gateway.runtime.keyspace
    assert store is not None

    async def deferred() -> bool:
        return world.smarthost.attempts >= 1

    await eventually(deferred)
    assert world.smarthost.received == []
    threads = await store.scan(keyspace.email_thread("acme", ""), limit=100)
    root = str(first["Message-ID"]).strip("<>")
    recorded = [await store.get_record(key) for key in threads]
    assert len([r for r in recorded if r == root.encode()]) >= 2  # the mail, and our reply
    [relayed] = await world.smarthost.wait_for(1)  # the retry goes out
    reply_id = str(relayed.message["Message-ID"]).strip("<>")
    assert await store.get_record(keyspace.email_thread("acme", reply_id)) == root.encode()


async def test_new_subject_from_same_sender_starts_a_new_conversation(world: EmailWorld) -> None:
    """Two unrelated mails from one person are two conversations, each answered."""
    for subject in ("Pricing", "Opening hours"):
        await world.sender.send(
            world.sender.compose(
                from_addr=JANE, from_name="Jane", to=SUPPORT, subject=subject, text=subject.lower()
            )
        )
    replies = await world.smarthost.wait_for(2)
    assert {str(r.message["Subject"]) for r in replies} == {"Re: Pricing", "Re: Opening hours"}
    assert replies[0].message["References"] != replies[1].message["References"]
    store, keyspace = world.gateway.runtime.store, world.gateway.runtime.keyspace
    assert store is not None
    keys = await store.scan(keyspace.prefix + ":", limit=10_000)
    assert len([k for k in keys if k.endswith(":state") and "/email/" in k]) == 2


async def test_redelivered_message_is_answered_once(world: EmailWorld) -> None:
    """The same Message-ID delivered three times (MTA retries) yields exactly one reply."""
    msg = world.sender.compose(
        from_addr=JANE,
        from_name="Jane",
        to=SUPPORT,
        subject="hi",
        text="hello",
        message_id="<dup.7@customer.example>",
    )
    for _ in range(3):
        code, _ = await world.sender.send(msg)
        assert code == 250
    await world.smarthost.wait_for(1)
    await asyncio.sleep(0.5)
    assert len(world.smarthost.received) == 1
    assert world.inbound("duplicate") == 2


async def test_quoted_text_and_signature_are_not_seen_by_the_agent(world: EmailWorld) -> None:
    """Only the new text reaches the agent: the quoted "pricing" does not trigger pricing."""
    text = (
        "What are your opening hours?\n\nThanks,\nJane\n-- \nJane Doe | Customer Inc\n\n"
        "On Mon, 4 Mar 2024 at 10:00, Acme <support@acme.example> wrote:\n"
        "> Our plans: pricing pricing pricing\n> hello\n"
    )
    await world.sender.send(
        world.sender.compose(from_addr=JANE, from_name="Jane", to=SUPPORT, subject="q", text=text)
    )
    [reply] = await world.smarthost.wait_for(1)
    assert "Monday to Friday" in reply.text()


async def test_unknown_recipient_is_refused_at_rcpt_and_nothing_is_stored(
    world: EmailWorld,
) -> None:
    """RCPT to an address no tenant owns gets 550; no message is ingested or answered."""
    msg = world.sender.compose(
        from_addr=JANE, from_name="Jane", to="nobody@acme.example", subject="hi", text="hello"
    )
    code, text = await world.sender.send(msg)
    assert code == 550
    assert "5.1.1" in text
    await asyncio.sleep(0.3)
    assert world.inbound("accepted") == 0
    assert world.smarthost.received == []
    assert world.event("rcpt_unknown") == 1


async def test_message_over_the_size_limit_is_refused_with_552(world: EmailWorld) -> None:
    """A message larger than the listener's limit gets 552 and is not ingested."""
    big = "x" * 600_000
    msg = world.sender.compose(
        from_addr=JANE, from_name="Jane", to=SUPPORT, subject="big", text=big
    )
    code, _ = await world.sender.send(msg)
    assert code == 552
    assert world.inbound("accepted") == 0


async def test_address_with_a_persona_is_answered_by_that_persona(world: EmailWorld) -> None:
    """Mail to docs@ is answered by the Docs Assistant, from docs@."""
    await world.sender.send(
        world.sender.compose(
            from_addr=JANE, from_name="Jane", to=DOCS, subject="setup", text="how do I install it?"
        )
    )
    [reply] = await world.smarthost.wait_for(1)
    assert str(reply.message["From"]) == f"Docs Assistant <{DOCS}>"
    assert "Installation" in reply.text()


async def test_store_outage_answers_451_and_the_retry_is_answered_once(
    tmp_path: Path, smarthost: Smarthost, dkim_env: None
) -> None:
    """While the store is down the listener answers 451 (the MTA retries); nothing is lost."""
    redis = start_redis_server(tmp_path, appendonly=True)
    try:
        async with email_world(redis.url, smarthost) as world:
            msg = world.sender.compose(
                from_addr=JANE, from_name="Jane", to=SUPPORT, subject="outage", text="hello"
            )
            redis.stop()
            code, text = await world.sender.send(msg)
            assert code == 451, text
            assert world.event("smtp_deferred") == 1
            redis = start_redis_server(tmp_path, appendonly=True, port=redis.port)
            code, _ = await world.sender.send(msg)  # the sending MTA's retry
            assert code == 250
            [reply] = await world.smarthost.wait_for(1, timeout=20)
            assert str(reply.message["Subject"]) == "Re: outage"
    finally:
        redis.stop()
