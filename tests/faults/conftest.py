"""Shared pieces of the fault tests: an echo persona, patient senders, store probes.

Every fault test drives the real app on loopback against real emulators and checks the
same promise: each message the gateway acknowledged is answered exactly once, in order per
conversation, and the dead-letter list holds exactly the permanent failures.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from gateway.deadletters import DeadLetter, list_dead_letters
from tests.harness import SECRETS, RunningGateway

__all__ = [
    "SECRETS",
    "STORE_TIMEOUT",
    "dead_letters",
    "echo_personas",
    "post_until_stored",
    "short_store_timeout",
]

RETRYABLE = frozenset({503})
STORE_TIMEOUT = 1.0  # the store's command timeout in the tests that ask for it (10 s by default)


@pytest.fixture(autouse=True)
def _channel_env(channel_env: None) -> None:
    """The HTTP channel's test secrets are in the environment for every fault test."""


@pytest.fixture
def short_store_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's command timeout at STORE_TIMEOUT for the gateways this test opens.

    A module constant, not a setting (yet): set wherever a store module has read it in.
    """
    import gateway.store.redis  # noqa: F401 - loads every store module that reads it

    for name, module in list(sys.modules.items()):
        if name.startswith("gateway.store.") and hasattr(module, "COMMAND_TIMEOUT"):
            monkeypatch.setattr(module, "COMMAND_TIMEOUT", STORE_TIMEOUT)


@pytest.fixture
def echo_personas(tmp_path: Path) -> Path:
    """One persona, ``core``, whose reply is exactly the customer's text. It shows no typing
    indicator: the faults these tests inject hit the platform's first request, which must be
    the reply's."""
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "core.yaml").write_text(
        "name: core\ndisplay_name: Echo\ntyping: false\n"
        "agent: {kind: echo, options: {prefix: ''}}\n"
    )
    return folder


async def post_until_stored(
    post: Callable[[], Awaitable[int]],
    *,
    attempts: int = 200,
    pause: float = 0.05,
    statuses: list[int] | None = None,
) -> int:
    """Post like a platform does: again after a 503 or a refused connection, a bounded
    number of times. Returns the final status; ``statuses`` collects every answer seen
    (0 for a connection error)."""
    status = 0
    for _ in range(attempts):
        try:
            status = await post()
        except aiohttp.ClientConnectionError:
            status = 0
        if statuses is not None:
            statuses.append(status)
        if status not in RETRYABLE and status != 0:
            return status
        await asyncio.sleep(pause)
    return status


async def dead_letters(gw: RunningGateway) -> list[DeadLetter]:
    store = gw.runtime.store
    assert store is not None
    letters = await list_dead_letters(store, gw.runtime.keyspace, limit=10_000)
    return [letter for _, letter in letters]
