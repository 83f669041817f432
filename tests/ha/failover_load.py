"""The load of the failover tests, and what they check: several HTTP conversations sent
like a platform sends (again after a 503, the next message only after the last was
acknowledged) while ``fail_over`` kills a Redis primary; then, per acknowledged message,
whether it was answered, once, in order.

The bot (``slow_bot`` in conftest) answers in ``ANSWER_SECONDS`` and the worker reads at
most ``CONVERSATIONS`` entries ahead, so acknowledged messages wait in Redis (where a
failover can lose them), not in the worker's memory (where they survive one), as they do
under real load.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from tests.faults.conftest import post_until_stored
from tests.harness import SECRETS, base_config, eventually, http_tenant, running_gateway

__all__ = ["ANSWER_SECONDS", "LAG_SECONDS", "Outcome", "run_failover"]

CONVERSATIONS = 8
PER_CONVERSATION = 25
SEND_INTERVAL = 0.08  # between one conversation's messages
ANSWER_SECONDS = 0.2  # the bot's time per answer
LAG_SECONDS = 0.3  # the primary runs ahead of its replica this long before it dies


@dataclass
class Outcome:
    acknowledged: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    answers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    statuses: list[int] = field(default_factory=list)
    answered_twice: int = 0
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return sum(len(texts) for texts in self.acknowledged.values())

    @property
    def lost(self) -> int:
        return sum(
            1 for c, texts in self.acknowledged.items() for t in texts if t not in self.answers[c]
        )

    def report(self, label: str, record_property: Callable[[str, object], None]) -> None:
        """Print the counts (shown with ``-s``) and put them in the JUnit record."""
        print(
            f"\n{label}: {self.count} acknowledged, {self.lost} lost, {self.answered_twice} "
            f"answered twice, {self.statuses.count(503)} answers 503, {self.seconds:.1f} s"
        )
        record_property("acknowledged", self.count)
        record_property("acknowledged_lost", self.lost)
        record_property("answered_twice", self.answered_twice)

    def assert_each_answered_once_in_order(self) -> None:
        assert self.answered_twice == 0, "a message was answered twice"
        for name, texts in self.acknowledged.items():
            assert self.answers[name] == texts, f"{name}: answers differ from the acknowledged"


async def run_failover(
    store: dict[str, Any],
    *,
    receiver: CallbackReceiver,
    personas: Path,
    fail_over: Callable[[], object],
    expect_all: bool,
) -> Outcome:
    """Drive the gateway on ``store`` and call ``fail_over`` (in a thread) a third of the way
    through. ``expect_all``: wait for an answer to every acknowledged message (else wait
    until answers stop arriving)."""
    data = base_config(store["url"], tenants=[http_tenant(receiver.url)])
    data["store"] |= store
    data["personas_dir"] = str(personas)
    data["pipeline"]["max_in_flight"] = CONVERSATIONS
    data["routing"] = {"default_persona": "core"}
    outcome = Outcome()
    killed: list[bool] = []

    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )

        async def conversation(n: int) -> None:
            for seq in range(PER_CONVERSATION):
                text = f"c{n}:{seq}"

                async def post(text: str = text) -> int:
                    status, _ = await client.send(conversation_id=f"c{n}", text=text, event_id=text)
                    return status

                status = await post_until_stored(post, attempts=600, statuses=outcome.statuses)
                assert status == 202, f"{text} was never acknowledged ({status})"
                outcome.acknowledged[f"c{n}"].append(text)
                await asyncio.sleep(SEND_INTERVAL)

        async def kill() -> None:
            await eventually(lambda: len(receiver.unique()) >= 1, timeout=30)
            third = CONVERSATIONS * PER_CONVERSATION // 3
            await eventually(lambda: outcome.count >= third, timeout=30)
            await asyncio.to_thread(fail_over)
            killed.append(True)

        began = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(kill(), *(conversation(n) for n in range(CONVERSATIONS))), timeout=80
        )
        if expect_all:
            await receiver.wait_for(outcome.count, timeout=30)
        else:
            await _settled(receiver)
        await asyncio.sleep(0.5)  # a second answer to anything would arrive in this time
        outcome.seconds = time.monotonic() - began

    assert killed, "the primary was never killed"
    assert 503 in outcome.statuses, "the failover never reached a request"
    for callback in receiver.unique():
        outcome.answers[callback.payload["conversation_id"]].append(callback.payload["text"])
    in_reply_to = [cb.payload["in_reply_to"] for cb in receiver.unique()]
    outcome.answered_twice = len(in_reply_to) - len(set(in_reply_to))
    return outcome


async def _settled(receiver: CallbackReceiver, quiet: float = 3.0) -> None:
    """Wait until no new answer has arrived for ``quiet`` seconds (at most 30 s)."""
    seen, since = -1, time.monotonic()
    deadline = since + 30
    while time.monotonic() < deadline:
        now = len(receiver.unique())
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        await asyncio.sleep(0.1)
