"""People by name on Slack, through the real gateway and the Slack emulator.

The worker's parse asks ``users.info`` (slack_sdk against the emulator) for each writer,
keeps the answer in the store for every process, and goes on with the raw id when Slack
fails or is slow. A profile email Slack confirmed links the person into the tenant's
contacts; a display name is data, never a template or a header.
"""

from __future__ import annotations

import asyncio
from typing import Any

from connectors.slack.emulator import SlackEmulator, event_callback, message_event
from gateway.contacts import ContactBook, ContactIdentity
from gateway.models import Channel
from tests.connectors.slack.conftest import sender_for, slack_config
from tests.harness import PERSONAS_DIR, RunningGateway, running_gateway


def _lookups(gw: RunningGateway, outcome: str) -> float:
    value = gw.runtime.metrics.registry.get_sample_value(
        "flowbiz_contact_lookups_total", {"channel": "slack", "outcome": outcome}
    )
    return value or 0.0


async def _say(session: Any, gw: RunningGateway, text: str, user: str, channel: str) -> None:
    event = event_callback(message_event(text=text, user=user, channel=channel))
    status, _ = await sender_for(session, gw).event(event)
    assert status == 200


async def test_a_seeded_user_is_greeted_by_name_and_asked_for_once(
    slack_gateway, emulator: SlackEmulator, session
) -> None:
    emulator.add_user("U0ALICE", display_name="Alice", real_name="Alice Example")
    async with slack_gateway() as gw:
        await _say(session, gw, "hello", "U0ALICE", "D0ALICE")
        await emulator.wait_for_posts(1)
        await _say(session, gw, "hello again", "U0ALICE", "D0ALICE")
        posts = await emulator.wait_for_posts(2)
        store, keyspace = gw.runtime.store, gw.runtime.keyspace
        assert store is not None
        kept = await store.get_record(keyspace.contact_name("acme", "slack", "U0ALICE"))
        assert _lookups(gw, "fetched") == 1
        assert _lookups(gw, "cached") == 1
    assert [p.shown_text for p in posts] == ["Hello Alice!", "Hello Alice!"]
    assert emulator.users_info_calls("U0ALICE") == 1  # the second came from the store
    assert kept is not None
    assert b'"name":"Alice"' in kept


async def test_the_example_core_persona_greets_a_slack_user_by_name(
    store_url: str, emulator: SlackEmulator, session
) -> None:
    """The shipped rules persona (agents/personas/core.yaml) says the name, not U0…."""
    emulator.add_user("U0ALICE", display_name="Alice")
    async with running_gateway(slack_config(store_url, PERSONAS_DIR, emulator)) as gw:
        await _say(session, gw, "hi there", "U0ALICE", "D0ALICE")
        [post] = await emulator.wait_for_posts(1)
    assert post.shown_text == "Hello Alice! How can I help you today?"


async def test_the_real_name_stands_in_for_an_empty_display_name(
    slack_gateway, emulator: SlackEmulator, session
) -> None:
    emulator.add_user("U0ALICE", display_name="", real_name="Alice Example")
    async with slack_gateway() as gw:
        await _say(session, gw, "hello", "U0ALICE", "D0ALICE")
        [post] = await emulator.wait_for_posts(1)
    assert post.shown_text == "Hello Alice Example!"


async def test_users_info_failing_still_answers_and_is_asked_again_later(
    slack_gateway, emulator: SlackEmulator, session
) -> None:
    """A 500 from users.info: the message is answered with the raw id, the failure counted
    and remembered only for contact_name_failure_ttl_seconds."""
    emulator.add_user("U0ALICE", display_name="Alice")
    emulator.fail_next("users.info", status=500, error="internal_error")
    async with slack_gateway(pipeline={"contact_name_failure_ttl_seconds": 1}) as gw:
        await _say(session, gw, "hello", "U0ALICE", "D0ALICE")
        await emulator.wait_for_posts(1)
        await _say(session, gw, "hello", "U0ALICE", "D0ALICE")  # within the failure's TTL
        await emulator.wait_for_posts(2)
        assert emulator.users_info_calls("U0ALICE") == 1
        assert _lookups(gw, "failed") == 1
        await asyncio.sleep(1.2)
        await _say(session, gw, "hello", "U0ALICE", "D0ALICE")
        posts = await emulator.wait_for_posts(3)
    assert [p.shown_text for p in posts] == ["Hello U0ALICE!", "Hello U0ALICE!", "Hello Alice!"]
    assert emulator.users_info_calls("U0ALICE") == 2


async def test_a_users_info_that_never_answers_costs_the_timeout_not_the_message(
    slack_gateway, emulator: SlackEmulator, session
) -> None:
    emulator.add_user("U0ALICE", display_name="Alice")
    emulator.drop_next("users.info", mode="hang")
    async with slack_gateway(user_name_timeout_seconds=0.3) as gw:
        await _say(session, gw, "hello", "U0ALICE", "D0ALICE")
        [post] = await emulator.wait_for_posts(1)
        assert _lookups(gw, "failed") == 1
    assert post.shown_text == "Hello U0ALICE!"


async def test_attack_a_display_name_is_neither_a_template_nor_a_header(
    slack_gateway, emulator: SlackEmulator, session
) -> None:
    """A name holding template text and CR/LF comes out as the same words on one line: no
    variable of the persona's template expands inside it, no line break reaches a reply or
    the store."""
    emulator.add_user("U0EVE", display_name="$tenant_name $secret\r\nBcc: victim@example.com")
    async with slack_gateway() as gw:
        await _say(session, gw, "hello", "U0EVE", "D0EVE")
        [post] = await emulator.wait_for_posts(1)
        store, keyspace = gw.runtime.store, gw.runtime.keyspace
        assert store is not None
        kept = await store.get_record(keyspace.contact_name("acme", "slack", "U0EVE"))
    assert post.shown_text == "Hello $tenant_name $secret Bcc: victim@example.com!"
    assert "Acme" not in post.shown_text
    assert kept is not None
    assert b"\\r" not in kept
    assert b"\\n" not in kept


async def test_a_confirmed_profile_email_links_the_user_into_the_operators_contact(
    slack_gateway, emulator: SlackEmulator, session
) -> None:
    """The operator made a contact with Alice's address and her LINE id; her first Slack
    message joins it (Slack confirmed the address). Mallory's unconfirmed claim to the same
    address links nothing."""
    line_id = "U" + "a1" * 16
    emulator.add_user("U0ALICE", display_name="Alice")
    emulator.set_user_email("U0ALICE", "Alice@Example.com")
    emulator.add_user("U0MALLORY", display_name="Mallory")
    emulator.set_user_email("U0MALLORY", "alice@example.com", confirmed=False)
    async with slack_gateway() as gw:
        store = gw.runtime.store
        assert store is not None
        book = ContactBook(store, gw.runtime.keyspace)
        await book.put("acme", "alice", name="Alice Example", emails=["alice@example.com"])
        await book.link("acme", "alice", ContactIdentity(channel=Channel.LINE, id=line_id))
        await _say(session, gw, "hello", "U0ALICE", "D0ALICE")
        await _say(session, gw, "hello", "U0MALLORY", "D0MALLORY")
        await emulator.wait_for_posts(2)
        alice = await book.get("acme", "alice")
        mallory = await book.of_identity("acme", Channel.SLACK, "U0MALLORY")
    assert alice is not None
    assert alice.channels == ("line", "slack")
    assert ContactIdentity(channel=Channel.SLACK, id="U0ALICE") in alice.identities
    assert mallory is None
