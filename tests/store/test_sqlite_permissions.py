"""The SQLite store's files hold conversations and addresses: other local users cannot read them."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store import Commit, StateWrite, open_store


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The common default umask (022), under which files are created world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_attack_other_local_users_cannot_read_the_store_files(
    tmp_path: Path, permissive_umask: None
) -> None:
    """The database, its WAL and its shared-memory file are created 0600 under umask 022."""
    db = tmp_path / "state" / "gw.db"
    store = await open_store(f"sqlite:///{db}")
    try:
        await store.commit(
            Commit(state=StateWrite(key="s", value=b"+14155550100", expected_version=0))
        )
        files = [db, db.with_name("gw.db-wal"), db.with_name("gw.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}
        assert mode(db.parent) == 0o700
    finally:
        await store.aclose()


async def test_existing_shared_store_file_is_kept_and_warned_about(
    tmp_path: Path, permissive_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A file an operator made readable by a group is not changed behind their back, but logged."""
    db = tmp_path / "gw.db"
    db.touch(mode=0o640)
    caplog.set_level(logging.WARNING, logger="gateway.store.sqlite")
    store = await open_store(f"sqlite:///{db}")
    await store.aclose()
    assert mode(db) == 0o640
    assert [r.getMessage() for r in caplog.records] == ["store.sqlite_file_shared"]
