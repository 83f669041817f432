"""``serve``: the process-level setup around the guarded listener, on a real loopback port."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from pathlib import Path

import aiohttp
from aiohttp import web

from agents.persona import load_personas
from gateway.app import RUNTIME, create_app
from gateway.config import HttpServerConfig, parse_config
from gateway.metrics import Metrics
from gateway.server import GC_YOUNG_THRESHOLD, ConnectionGuard, GuardedSite, serve
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


async def test_any_app_on_a_guarded_site_is_guarded_without_a_middleware() -> None:
    """The guard follows each request through the connection it owns: a plain app (no
    middleware at all) gets the body deadline for a slow body, and a handler slower than the
    head deadline is not cut off while it works."""

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(0.6)  # twice the head deadline
        return web.Response(text="done")

    app = web.Application()
    app.router.add_post("/slow", slow)
    limits = HttpServerConfig(header_timeout_seconds=0.3, body_timeout_seconds=0.3)
    metrics = Metrics()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = GuardedSite(
        runner, "127.0.0.1", 0, guard=ConnectionGuard(listener="t", limits=limits, metrics=metrics)
    )
    await site.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        async with asyncio.timeout(3):
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        async with asyncio.timeout(3):
            assert await reader.read() == b""  # closed, nothing answered
        writer.close()
        body_timeouts = metrics.http_guard.labels("t", "body_timeout")._value.get()
        assert body_timeouts == 1
        assert metrics.http_guard.labels("t", "header_timeout")._value.get() == 0
    finally:
        await runner.cleanup()
