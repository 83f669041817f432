"""The demo scene plays through the real gateway and every expected reply arrives."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from connectors.slack.demo import Scene
from gateway.demo import Transcript
from tests.harness import base_config, running_gateway


async def test_demo_scene_plays(
    store_url: str, personas_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare() adds a working channel to tenant acme; play() returns True, no extra reply."""
    # Set here so the scene's os.environ.setdefault leaves no trace after the test.
    monkeypatch.setenv("ACME_SLACK_SIGNING_SECRET", "demo-slack-signing-secret")
    monkeypatch.setenv("ACME_SLACK_BOT_TOKEN", "xoxb-emulated-bot-token")
    data = base_config(store_url, tenants=[{"id": "acme", "name": "Acme", "channels": []}])
    scene = Scene()
    try:
        await scene.prepare(data)
        assert [c["kind"] for c in data["tenants"][0]["channels"]] == ["slack"]
        out = io.StringIO()
        async with running_gateway(data) as gw:
            assert await scene.play(gw.url, Transcript(out)) is True
        assert "Incident noted" in out.getvalue()  # the infra persona answered the mention
    finally:
        await scene.close()


async def test_simulate_cli_sends_a_signed_event(
    slack_gateway, emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`flowbiz simulate slack` posts a signed event that the gateway accepts and answers."""
    from gateway.cli import main

    monkeypatch.setenv("SLACK_SIGNING_SECRET", "slack-signing-secret-acme")
    async with slack_gateway() as gw:
        argv = ["simulate", "slack", "--url", gw.url, "--event-id", "EvCLI1", "pricing"]
        assert await asyncio.to_thread(main, argv) == 0
        [post] = await emulator.wait_for_posts(1)
    assert post.shown_text == "Pro costs 29 a month."
    assert "EvCLI1 200" in capsys.readouterr().out
