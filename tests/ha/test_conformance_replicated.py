"""The Store conformance suite (``tests/store/test_conformance.py``) once more, on a store
that reaches a replicated primary through three sentinels (``redis+sentinel://``) with
``replica_acks: 1``: waiting for the replica changes no answer the protocol promises.

The suite's tests that take the ``store`` fixture are collected here again, with the fixture
below in place of the suite's one; the servers are shared by the module and emptied before
each test.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.store import ReplicaAcks, Store, open_store
from tests.ha.redis_ha import Replicated, SentinelGroup, start_replicated, start_sentinels
from tests.store import test_conformance as conformance

for _name, _test in vars(conformance).items():
    if _name.startswith("test_") and "store" in inspect.signature(_test).parameters:
        globals()[_name] = _test


@pytest.fixture(scope="module")
def sentinel_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Replicated, str]]:
    where: Path = tmp_path_factory.mktemp("replicated")
    replicated = start_replicated(where / "redis")
    sentinels: SentinelGroup | None = None
    try:
        sentinels = start_sentinels(where / "sentinels", replicated.primary.port)
        yield replicated, sentinels.url()
    finally:
        if sentinels is not None:
            sentinels.stop()
        replicated.stop()


@pytest.fixture
async def store(sentinel_store: tuple[Replicated, str]) -> AsyncIterator[Store]:
    replicated, url = sentinel_store
    assert replicated.primary.command("FLUSHALL") == b"+OK"
    opened = await open_store(url, replica_acks=ReplicaAcks(1, 2000))
    yield opened
    await opened.aclose()
