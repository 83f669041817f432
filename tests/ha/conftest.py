"""Fixtures of the HA tests: a replicated redis-server pair, and the same under three
sentinels (see :mod:`tests.ha.redis_ha`). Each test gets its own processes: the tests kill
and promote them."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.ha.failover_load import ANSWER_SECONDS
from tests.ha.redis_ha import (
    Replicated,
    ReplicatedCluster,
    SentinelGroup,
    start_replicated,
    start_replicated_cluster,
    start_sentinels,
)


@pytest.fixture(autouse=True)
def collect_garbage_after_the_test() -> Iterator[None]:
    """Collect what the test left in reference cycles once its event loop is closed (the
    async runner is set up after every fixture, so torn down before this one), before
    pytest reports unraisable exceptions for the test: a socket left open by a failover
    fails the test that left it, under that test's warning filters, not whichever test
    the garbage collector happens to run in next on this worker."""
    yield
    gc.collect()


@pytest.fixture
def channel_env_on(channel_env: None) -> None:
    """The HTTP channel's test secrets are in the environment."""


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Replicated]:
    """A redis-server primary with one in-sync replica."""
    group = start_replicated(tmp_path / "redis")
    yield group
    group.stop()


@pytest.fixture
def sentinels(replicated: Replicated, tmp_path: Path) -> Iterator[SentinelGroup]:
    """Three sentinels (quorum 2) watching ``replicated``'s primary."""
    group = start_sentinels(tmp_path / "sentinels", replicated.primary.port)
    yield group
    group.stop()


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[ReplicatedCluster]:
    """A 3-master Redis Cluster, one replica per master, 1 s node timeout."""
    cluster = start_replicated_cluster(tmp_path / "cluster")
    yield cluster
    cluster.stop()


@pytest.fixture
async def slow_bot() -> AsyncIterator[str]:
    """A bot (for the webhook agent) that repeats the customer's text after
    ``ANSWER_SECONDS``: turns take longer than messages take to arrive, so at a kill the
    inbox holds acknowledged messages no worker has seen yet, as under real load."""

    async def answer(request: web.Request) -> web.Response:
        context = await request.json()
        await asyncio.sleep(ANSWER_SECONDS)
        return web.json_response({"text": context["message"]["text"]})

    app = web.Application()
    app.router.add_post("/bot", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/bot"
    await runner.cleanup()


@pytest.fixture
def bot_personas(tmp_path: Path, slow_bot: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One persona, ``core``, answered by ``slow_bot`` through the webhook agent."""
    monkeypatch.setenv("T_BOT", "bot-secret")
    folder = tmp_path / "personas"
    folder.mkdir()
    options = {"url": slow_bot, "secrets_env": ["T_BOT"], "allow_private": True}
    agent = {"kind": "webhook", "options": options}
    (folder / "core.yaml").write_text(
        json.dumps({"name": "core", "display_name": "Bot", "agent": agent})
    )
    return folder
