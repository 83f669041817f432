"""A Web API that cannot be reached: retried (nothing was written), then dead-lettered with
``network``, the code every channel uses for it, in the letter and the metric label."""

from __future__ import annotations

from connectors.slack.emulator import event_callback, message_event
from gateway.deadletters import list_dead_letters
from tests.conftest import free_port
from tests.connectors.slack.conftest import sender_for
from tests.harness import eventually


async def test_unreachable_web_api_is_dead_lettered_as_network(slack_gateway, session) -> None:
    closed = f"http://127.0.0.1:{free_port()}/api/"  # nothing listens there
    async with slack_gateway(api_base_url=closed) as gw:
        rt = gw.runtime
        await sender_for(session, gw).event(event_callback(message_event(text="pricing")))
        [(_, letter)] = await eventually(lambda: list_dead_letters(rt.store, rt.keyspace))
        sample = rt.metrics.registry.get_sample_value
        labels = {"channel": "slack", "reason": "network"}
        # Counted once the store has the letter: the test may see the letter first.
        await eventually(lambda: sample("flowbiz_dead_letters_total", labels) == 1)
    assert (letter.code, letter.platform_code) == ("network", None)
    assert letter.attempts == 4  # every try was retried: the connection never opened
    assert letter.reason.startswith("gave up after 4 attempts: cannot reach Slack")
