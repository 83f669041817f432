"""`flowbiz demo` — README's first command — plays every scene and verifies every reply.

It runs the real CLI in a child process from an empty folder, as a new user would, so a
change that breaks the example configuration or a scene fails here rather than on a
user's first run.
"""

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from gateway.admin.keys import Role, authenticate
from gateway.store import Keyspace, open_store


def test_demo_plays_every_scene_and_verifies_every_reply(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all replies delivered and verified" in done.stdout
    # The on-call persona runs commands on the host: a customer channel must not reach it.
    assert "There is no such persona here." in done.stdout
    # The console's address and a key that signs in there, in the demo's own store.
    match = re.search(r"console: (http://127\.0\.0\.1:\d+/console/) .* key (fbk_\S+)", done.stdout)
    assert match is not None, done.stdout[:2000]
    asyncio.run(_assert_key_works(tmp_path / "var" / "demo.db", match.group(2)))


async def _assert_key_works(db: Path, token: str) -> None:
    store = await open_store(f"sqlite:///{db}")
    try:
        key = await authenticate(store, Keyspace(), token)
        assert key is not None
        assert key.role is Role.ADMIN
    finally:
        await store.aclose()
