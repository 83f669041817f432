"""`flowbiz demo` — README's first command — plays every scene and verifies every reply.

It runs the real CLI in a child process from an empty folder, as a new user would, so a
change that breaks the example configuration or a scene fails here rather than on a
user's first run.
"""

import subprocess
import sys


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
