"""Slash commands (acked at once, answered via response_url or the Web API) and buttons."""

from __future__ import annotations

import asyncio
import time

from connectors.slack.emulator import (
    block_actions_payload,
    event_callback,
    message_event,
    slash_command_fields,
)
from tests.connectors.slack.conftest import sender_for


async def test_slash_command_is_acked_then_answered_ephemerally(
    slack_gateway, emulator, session
) -> None:
    """The command gets an empty 200 at once; the answer follows on its response_url."""
    async with slack_gateway() as gw:
        fields = slash_command_fields(
            command="/flowbiz", text="pricing", response_url=emulator.response_url()
        )
        started = time.perf_counter()
        status, body = await sender_for(session, gw).command(fields)
        assert (status, body) == (200, "")
        assert time.perf_counter() - started < 1.0
        [post] = await emulator.wait_for_posts(1)
    assert post.via == "response_url"
    assert post.response_type == "ephemeral"
    assert post.shown_text == "Pro costs 29 a month."


async def test_slash_command_in_channel_through_the_web_api(
    slack_gateway, emulator, session
) -> None:
    """Configured for in_channel via the Web API: a chat.postMessage in the command's channel."""
    async with slack_gateway(command_reply_via="web_api", command_response="in_channel") as gw:
        fields = slash_command_fields(
            command="/flowbiz", text="hours", response_url=emulator.response_url()
        )
        await sender_for(session, gw).command(fields)
        [post] = await emulator.wait_for_posts(1)
    assert (post.via, post.channel, post.thread_ts) == ("chat.postMessage", "C0GENERAL", None)
    assert post.shown_text == "We are open 9 to 18."


async def test_slash_command_ephemeral_through_the_web_api(
    slack_gateway, emulator, session
) -> None:
    """Ephemeral via the Web API: chat.postEphemeral to the user who ran the command."""
    async with slack_gateway(command_reply_via="web_api") as gw:
        fields = slash_command_fields(
            command="/flowbiz", text="hours", response_url=emulator.response_url()
        )
        await sender_for(session, gw).command(fields)
        [post] = await emulator.wait_for_posts(1)
    assert (post.via, post.channel, post.user) == ("chat.postEphemeral", "C0GENERAL", "U0CUSTOMER")


async def test_foreign_response_url_is_not_posted_to(slack_gateway, emulator, session) -> None:
    """A response_url outside the allowed prefixes is ignored; the Web API answers instead."""
    async with slack_gateway() as gw:
        fields = slash_command_fields(
            command="/flowbiz", text="hours", response_url="http://169.254.169.254/latest"
        )
        await sender_for(session, gw).command(fields)
        [post] = await emulator.wait_for_posts(1)
    assert post.via == "chat.postEphemeral"


async def test_button_click_round_trips_the_value(slack_gateway, emulator, session) -> None:
    """Clicking a persona button sends its value back as the next message of the conversation."""
    async with slack_gateway() as gw:
        sender = sender_for(session, gw)
        await sender.event(event_callback(message_event(text="hello", channel="D0ALICE")))
        [greeting] = await emulator.wait_for_posts(1)
        label, value = greeting.buttons[0]
        status, body = await sender.interaction(
            block_actions_payload(
                value=value, label=label, message_ts=greeting.ts, channel_id="D0ALICE"
            )
        )
        assert (status, body) == (200, "")
        posts = await emulator.wait_for_posts(2)
    assert posts[1].channel == "D0ALICE"
    assert posts[1].shown_text == "We are open 9 to 18."


async def test_click_in_a_thread_is_answered_in_that_thread(
    slack_gateway, emulator, session
) -> None:
    """A button on a threaded reply answers in the same thread."""
    async with slack_gateway() as gw:
        await sender_for(session, gw).interaction(
            block_actions_payload(
                value="pricing",
                message_ts="1700000005.000200",
                thread_ts="1700000000.000100",
                channel_id="C0SALES",
            )
        )
        [post] = await emulator.wait_for_posts(1)
    assert (post.channel, post.thread_ts) == ("C0SALES", "1700000000.000100")


async def test_click_on_an_ephemeral_message_answers_ephemerally(
    slack_gateway, emulator, session
) -> None:
    """A click on an ephemeral message (no message in the payload) answers via response_url."""
    async with slack_gateway() as gw:
        await sender_for(session, gw).interaction(
            block_actions_payload(
                value="pricing",
                message_ts="1700000005.000200",
                channel_id="C0GENERAL",
                is_ephemeral=True,
                response_url=emulator.response_url(),
            )
        )
        [post] = await emulator.wait_for_posts(1)
    assert (post.via, post.response_type) == ("response_url", "ephemeral")


async def test_repeated_click_delivery_is_answered_once(slack_gateway, emulator, session) -> None:
    """The same block_actions payload delivered twice (same trigger_id) yields one answer."""
    async with slack_gateway() as gw:
        payload = block_actions_payload(value="pricing", message_ts="1.2", channel_id="D0ALICE")
        sender = sender_for(session, gw)
        await sender.interaction(payload)
        await sender.interaction(payload)
        await emulator.wait_for_posts(1)
        await asyncio.sleep(0.3)
    assert len(emulator.posted) == 1
