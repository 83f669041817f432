"""Fixtures of the HA tests: a replicated redis-server pair, and the same under three
sentinels (see :mod:`tests.ha.redis_ha`). Each test gets its own processes: the tests kill
and promote them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ha.redis_ha import Replicated, SentinelGroup, start_replicated, start_sentinels


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
