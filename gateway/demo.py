"""``flowbiz demo``: the real gateway, the example config, the platform emulators.

The demo starts the gateway exactly as ``serve`` would (same app factory, same pipeline, the
embedded SQLite store) on a free loopback port, then plays one scene per connector: each
scene starts that platform's emulator, sends signed traffic the way the platform does, and
prints the conversation as the customer would see it. No platform account is needed.

Scenes live beside their connectors (``connectors/<kind>/demo.py``, named by the package's
``SPEC.demo_scene``); what a scene is and the transcript it writes are in
:mod:`gateway.demo_scene`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml
from aiohttp import web

from agents.examples.scene import Scene as ExamplesScene
from agents.persona import load_personas
from connectors.registry import installed_specs
from gateway.app import RUNTIME, create_app
from gateway.config import parse_config
from gateway.demo_scene import Scene, Transcript
from gateway.observability import configure_logging

__all__ = ["DEMO_SECRETS", "EXAMPLE_CONFIG", "Scene", "Transcript", "run_demo"]

EXAMPLE_CONFIG = Path(__file__).parent / "examples" / "gateway.yaml"

# Demo-only credentials, set only when the environment has none, so the example config's
# env: references resolve. Real deployments set their own.
DEMO_SECRETS = {
    "ACME_HTTP_API_KEY": "demo-api-key",
    "ACME_HTTP_SIGNING_SECRET": "demo-signing-secret",
    "ACME_HTTP_CALLBACK_SECRET": "demo-callback-secret",
}


def _scenes() -> list[Scene]:
    scenes: list[Scene] = [
        spec.demo_scene() for spec in installed_specs() if spec.demo_scene is not None
    ]
    # The example bots come last: the HTTP scene counts its callbacks from the start.
    scenes.append(ExamplesScene(personas_base=EXAMPLE_CONFIG.parent))
    return scenes


async def _console_key(app: web.Application) -> str:
    """A demo admin key for the console, made in the demo's own store."""
    from gateway.admin.keys import Role, create_key

    rt = app[RUNTIME]
    assert rt.store is not None
    _, token = await create_key(rt.store, rt.keyspace, name="demo", role=Role.ADMIN)
    return token


async def run_demo(
    *,
    store_url: str | None = None,
    verbose: bool = False,
    out: TextIO | None = None,
    keep_running: bool = False,
) -> int:
    out = out or sys.stdout
    for name, value in DEMO_SECRETS.items():
        os.environ.setdefault(name, value)
    configure_logging("info" if verbose else "error")
    data: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    state_dir = Path.cwd() / "var"
    state_dir.mkdir(exist_ok=True)
    data["store"]["url"] = store_url or f"sqlite:///{state_dir / 'demo.db'}"
    # Kept files beside the demo's store, never inside the package's example folder.
    data.setdefault("media", {})["dir"] = str(state_dir / "media")
    # The operations listener on a free loopback port: a demo must not need 9090 to be free.
    http = data.setdefault("http", {})
    http["operations"] = {**http.get("operations", {}), "host": "127.0.0.1", "port": 0}
    scenes = _scenes()
    transcript = Transcript(out)
    ok = True
    try:
        for scene in scenes:
            await scene.prepare(data)
        config = parse_config(data, source=EXAMPLE_CONFIG)
        personas = load_personas(config.personas_dir)
        app = create_app(config, personas=personas)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        app[RUNTIME].public_url = url
        print(
            f"FlowBiz Gateway demo — gateway on {url}, operations on "
            f"{app[RUNTIME].operations_url}, store {config.store.url}, "
            f"personas: {', '.join(sorted(personas))}",
            file=out,
        )
        print(
            f"operators' console: {app[RUNTIME].operations_url}/console/ — sign in with the "
            f"demo admin key {await _console_key(app)}",
            file=out,
        )
        try:
            for scene in scenes:
                transcript.heading(scene.title)
                ok = await scene.play(url, transcript) and ok
            if keep_running:
                print("\nthe gateway keeps running for the console; Ctrl-C stops it", file=out)
                await asyncio.Event().wait()
        finally:
            await runner.cleanup()
    finally:
        for scene in scenes:
            await scene.close()
    print("\nall replies delivered and verified" if ok else "\nSOME REPLIES WERE MISSING", file=out)
    if not keep_running:
        print("(flowbiz demo --keep-running leaves it up to look around in the console)", file=out)
    return 0 if ok else 1
