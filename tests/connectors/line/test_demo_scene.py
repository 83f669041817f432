"""The LINE scene of ``flowbiz demo`` against a running gateway: every step answered, the
photo kept and answered with a card the transcript shows with its title and buttons."""

from __future__ import annotations

import io

from connectors.line.demo import Scene
from gateway.demo_scene import Transcript
from tests.harness import base_config, running_gateway


async def test_the_line_scene_keeps_the_photo_and_prints_the_card(tmp_path, monkeypatch):
    monkeypatch.setenv("ACME_LINE_CHANNEL_SECRET", "scene-secret")
    monkeypatch.setenv("ACME_LINE_ACCESS_TOKEN", "scene-token")
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db", tenants=[{"id": "acme", "name": "Acme", "channels": []}]
    )
    data["media"] = {"dir": str(tmp_path / "media")}
    scene = Scene()
    out = io.StringIO()
    try:
        await scene.prepare(data)
        async with running_gateway(data) as gw:
            assert await scene.play(gw.url, Transcript(out)) is True
    finally:
        await scene.close()
    text = out.getvalue()
    assert "┌ Photo received" in text
    assert "└ [Opening hours] [Pricing]" in text
    assert f"kept its {len(scene.photo)} bytes in {tmp_path / 'media'}" in text
    kept = [p for p in (tmp_path / "media").rglob("*") if p.is_file() and p.suffix != ".json"]
    assert [p.read_bytes() for p in kept] == [scene.photo]
