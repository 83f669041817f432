"""The WhatsApp demo scene and the ``flowbiz simulate whatsapp`` command, end to end."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from connectors.whatsapp import cli
from connectors.whatsapp.demo import Scene
from connectors.whatsapp.emulator import TwilioEmulator
from gateway.demo import Transcript
from gateway.models import EventKind
from tests.connectors.whatsapp.conftest import ConfigFactory
from tests.connectors.whatsapp.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUBLIC_BASE,
    SENDER,
    inbox_messages,
)
from tests.harness import base_config, running_gateway


async def test_demo_scene_gets_every_reply(tmp_path: Path, store_url: str) -> None:
    """The scene adds its channel to tenant acme, plays through the real gateway, returns True."""
    data = base_config(store_url)
    data["tenants"] = [{"id": "acme", "name": "Acme", "channels": []}]
    scene = Scene()
    out = io.StringIO()
    try:
        await scene.prepare(data)
        async with running_gateway(data) as gw:
            assert await scene.play(gw.url, Transcript(out))
    finally:
        await scene.close()
    shown = out.getvalue()
    assert "0 extra replies" in shown
    # The photo is answered with a card, sent as Twilio Content and printed as received.
    assert "*Photo received*" in shown
    assert "[twilio/card, HX" in shown
    assert "[Opening hours] [Pricing]" in shown
    assert "(without the token: yes)" in shown


async def test_simulate_command_posts_a_signed_webhook_through_a_proxy(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``flowbiz simulate whatsapp --via-proxy`` signs over the public URL and is accepted."""
    monkeypatch.setenv("SIM_TWILIO_TOKEN", AUTH_TOKEN)
    config = make_config(
        public_base_url=None, status_callback=False, trusted_proxies=["127.0.0.1/32"]
    )
    async with running_gateway(config) as gw:
        parser = argparse.ArgumentParser()
        cli.add_simulator(parser.add_subparsers())
        args = parser.parse_args(
            [
                "whatsapp",
                *("--url", gw.url, "--public-url", "https://lb.example.test", "--via-proxy"),
                *("--account-sid", ACCOUNT_SID, "--token-env", "SIM_TWILIO_TOKEN"),
                *("--to", SENDER, "--media", "https://cdn.example.test/p.png,image/png"),
                "look at this",
            ]
        )
        assert await cli._simulate(args) == 0
        [reply] = await emulator.wait_for(1)
        [message] = await inbox_messages(gw)
    assert "-> 200 text/xml" in capsys.readouterr().out
    assert message.attachments[0].mime_type == "image/png"
    assert reply.body is not None
    assert reply.body.startswith("look at this")


async def test_simulate_command_sends_a_list_pick_and_a_place(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--list-pick`` arrives as an ACTION with the item id; ``--location`` as a place."""
    monkeypatch.setenv("SIM_TWILIO_TOKEN", AUTH_TOKEN)
    async with running_gateway(make_config()) as gw:
        parser = argparse.ArgumentParser()
        cli.add_simulator(parser.add_subparsers())
        common = ["whatsapp", "--url", gw.url, "--public-url", PUBLIC_BASE]
        common += ["--account-sid", ACCOUNT_SID, "--token-env", "SIM_TWILIO_TOKEN", "--to", SENDER]
        for extra in (["--list-pick", "size-l"], ["--location", "41.3851,2.1734,Shop"]):
            assert await cli._simulate(parser.parse_args([*common, *extra])) == 0
        await emulator.wait_for(2)
        messages = await inbox_messages(gw)
    picked = next(m for m in messages if m.kind is EventKind.ACTION)
    assert picked.text == "size-l"
    [place] = next(m for m in messages if m.attachments).attachments
    assert place.location is not None
    assert (place.location.latitude, place.location.title) == (41.3851, "Shop")
    capsys.readouterr()
