"""The demo scene plays through the real gateway and every expected reply arrives."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import pytest
from aiohttp import web

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
        assert "Photo received" in out.getvalue()  # the photo was kept and answered by a card
        assert "Block Kit: section, section, actions" in out.getvalue()
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


async def test_simulate_cli_retry_repeats_the_first_send(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--retry-num` with the `--event-id` and `--ts` the first send printed posts the same
    body again, as Slack's retries do, with only the retry headers added."""
    from gateway.cli import main

    seen: list[tuple[bytes, str | None]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((await request.read(), request.headers.get("X-Slack-Retry-Num")))
        return web.Response(text="")

    app = web.Application()
    app.router.add_post("/slack/events", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started above
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "slack-signing-secret-acme")
    try:
        url = f"http://127.0.0.1:{port}"
        first = ["simulate", "slack", "--url", url, "--event-id", "EvCLI2", "hello"]
        assert await asyncio.to_thread(main, first) == 0
        printed = capsys.readouterr().out
        match = re.search(r"--event-id (\S+) --ts (\S+)\)", printed)
        assert match is not None, printed
        retry = [*first[:-1], "--ts", match[2], "--retry-num", "1", "hello"]
        assert await asyncio.to_thread(main, retry) == 0
    finally:
        await runner.cleanup()
    [(body, no_retry), (again, retry_num)] = seen
    assert (no_retry, retry_num) == (None, "1")
    assert again == body


def test_simulate_cli_refuses_a_retry_it_cannot_repeat(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    monkeypatch.setenv("SLACK_SIGNING_SECRET", "slack-signing-secret-acme")
    argv = ["simulate", "slack", "--url", "http://127.0.0.1:9", "--event-id", "EvX"]
    assert main([*argv, "--retry-num", "1", "hello"]) == 2
    assert "--ts" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--ts", "1.2; rm -rf /", "hello"])
    assert exited.value.code == 2
