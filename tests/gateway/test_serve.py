"""``serve``: the process-level setup around the guarded listener, on a real loopback port."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from pathlib import Path

import aiohttp

from agents.persona import load_personas
from gateway.app import RUNTIME, create_app
from gateway.config import parse_config
from gateway.server import GC_YOUNG_THRESHOLD, ConnectionGuard, serve
from tests.harness import base_config, eventually, http_tenant


async def test_serve_moves_start_up_objects_out_of_the_collectors_sight(
    tmp_path: Path, channel_env: None
) -> None:
    """Once listening, the app and everything start-up built are frozen (no collection walks
    them again), young collections are rarer, and requests are still served."""
    config = parse_config(base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[http_tenant(None)]))
    app = create_app(config, role="web", personas=load_personas(config.personas_dir))
    guard = ConnectionGuard(listener="public", limits=config.http, metrics=app[RUNTIME].metrics)
    threshold = gc.get_threshold()
    gc.unfreeze()
    assert id(app) in {id(o) for o in gc.get_objects()}
    task = asyncio.create_task(
        serve(app, host="127.0.0.1", port=0, guard=guard, shutdown_timeout=1.0)
    )
    try:
        await eventually(lambda: gc.get_freeze_count() > 0 or task.done())
        assert not task.done()
        assert id(app) not in {id(o) for o in gc.get_objects()}
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
        url = app[RUNTIME].public_url
        assert url is not None
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as resp:
            assert resp.status == 200
    finally:
        if not task.done():
            os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler: a graceful stop
        await task
        gc.unfreeze()
        gc.set_threshold(*threshold)
