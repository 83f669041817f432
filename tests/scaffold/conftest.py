"""``flowbiz init`` as a user runs it: the real command in a subprocess.

``run_flowbiz`` runs ``python -m gateway.cli`` with the given arguments and environment;
``ALL_CHANNELS`` are the flags of a project with every channel; ``project_env`` fills every
variable ``.env.example`` names with a test value (the DKIM one with the written key, as the
file's own hint says).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PUBLIC_URL = "https://bot.acme.example"
ALL_CHANNELS = [
    "--tenant", "acme",
    "--name", "Acme Corp",
    "--public-url", PUBLIC_URL,
    "--channels", "http,slack,line,whatsapp,email",
    "--slack-team-id", "T0123ABCD",
    "--line-bot-user-id", "U0123456789abcdef0123456789abcdef",
    "--twilio-account-sid", "AC0123456789abcdef0123456789abcdef",
    "--whatsapp-number", "+14155238886",
    "--email-address", "support@acme.example",
    "--dkim-selector", "s2026",
]  # fmt: skip

_ENV_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.MULTILINE)
_CAT = re.compile(r'^"\$\(cat ([A-Za-z0-9._/-]+)\)"$')


def run_flowbiz(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "gateway.cli", *args],
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def project_env(project: Path) -> dict[str, str]:
    """Every variable ``.env.example`` names, with a test value (``$(cat file)``: the file)."""
    found: dict[str, str] = {}
    for name, value in _ENV_LINE.findall((project / ".env.example").read_text()):
        cat = _CAT.match(value)
        found[name] = (project / cat.group(1)).read_text() if cat else f"test-{name.lower()}"
    return found


@pytest.fixture
def all_channels(tmp_path: Path) -> Path:
    """A project with every channel, made by ``flowbiz init``."""
    project = tmp_path / "acme-bot"
    done = run_flowbiz("init", str(project), *ALL_CHANNELS, "--non-interactive")
    assert done.returncode == 0, done.stderr
    return project
