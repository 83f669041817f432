"""The Messaging API cannot be reached: the reply is retried (the token stays unused), then
dead-lettered with ``network``, the code every channel uses for it, in the letter and the
metric label."""

from __future__ import annotations

from gateway.deadletters import list_dead_letters
from tests.conftest import free_port
from tests.connectors.line.conftest import ALICE
from tests.harness import eventually


async def test_unreachable_api_is_dead_lettered_as_network(line_gateway, sender) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with line_gateway(api_base_url=closed) as gw:
        rt = gw.runtime
        line = sender(gw.url)
        assert await line.post([line.text("hello", user_id=ALICE)]) == 200
        [(_, letter)] = await eventually(lambda: list_dead_letters(rt.store, rt.keyspace))
        sample = rt.metrics.registry.get_sample_value
        labels = {"channel": "line", "reason": "network"}
        # Counted once the store has the letter: the test may see the letter first.
        await eventually(lambda: sample("flowbiz_dead_letters_total", labels) == 1)
    assert (letter.code, letter.platform_code) == ("network", None)
    assert letter.attempts == 4  # every try was retried: the connection never opened
    assert letter.reason.startswith("gave up after 4 attempts: cannot reach LINE reply")
