"""The demo scene and the ``flowbiz simulate email`` command against the real gateway."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from connectors.email.cli import _simulate, add_simulator
from connectors.email.demo import Scene
from gateway.demo import Transcript
from tests.harness import base_config, running_gateway


async def test_demo_scene_plays_a_thread_with_verified_replies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scene's thread is answered twice plus docs@, all DKIM-verified; the OOO is not."""
    monkeypatch.delenv("ACME_EMAIL_DKIM_KEY", raising=False)
    scene = Scene()
    data = base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[{"id": "acme", "channels": []}])
    out = io.StringIO()
    try:
        await scene.prepare(data)
        async with running_gateway(data) as gw:
            assert await scene.play(gw.url, Transcript(out))
    finally:
        await scene.close()
        monkeypatch.delenv("ACME_EMAIL_DKIM_KEY", raising=False)
    text = out.getvalue()
    assert text.count("DKIM verified") == 3
    assert "Docs Assistant <docs@acme.example>" in text


async def test_simulate_email_sends_into_the_listener(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`flowbiz simulate email` delivers a message that the gateway accepts with 250."""
    monkeypatch.delenv("ACME_EMAIL_DKIM_KEY", raising=False)
    scene = Scene()
    data = base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[{"id": "acme", "channels": []}])
    try:
        await scene.prepare(data)
        async with running_gateway(data):
            parser = argparse.ArgumentParser()
            add_simulator(parser.add_subparsers())
            args = parser.parse_args(
                [
                    "email",
                    "--port",
                    str(scene.listener_port),
                    "--to",
                    "support@acme.example",
                    "--subject",
                    "From the CLI",
                    "hello",
                ]
            )
            assert await _simulate(args) == 0
            assert scene.smarthost is not None
            [reply] = await scene.smarthost.wait_for(1)
            assert str(reply.message["Subject"]) == "Re: From the CLI"
    finally:
        await scene.close()
        monkeypatch.delenv("ACME_EMAIL_DKIM_KEY", raising=False)
    assert "-> 250" in capsys.readouterr().out
