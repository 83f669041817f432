"""Running the real gateway inside a test: the app factory on a loopback port.

``running_gateway(config_data)`` validates a config dict exactly as ``flowbiz serve`` would,
starts the app (store, connectors, workers) on a guarded site on a free port, exactly as
``flowbiz serve`` does, and yields a :class:`RunningGateway`. The operations listener (``/readyz``,
``/metrics``, the admin API) binds a free loopback port too unless the config says otherwise;
its URL is ``RunningGateway.ops_url``. Nothing is mocked: requests go over real sockets.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from agents.persona import load_personas
from gateway.app import RUNTIME, Role, Runtime, create_app
from gateway.config import GatewayConfig, parse_config
from gateway.server import ConnectionGuard, GuardedSite

REPO = Path(__file__).resolve().parent.parent

# Channel secrets the test configs reference as env:NAME (set by the `channel_env` fixture).
SECRETS = {
    "T_API_KEY": "test-api-key",
    "T_SIGN": "test-signing-secret",
    "T_SIGN_OLD": "test-signing-secret-old",
    "T_CALLBACK": "test-callback-secret",
    "T_NOTIFY": "test-notify-secret",
    # The S3 test server (tests/s3.py) takes any credentials; these are signed with.
    "T_S3_KEY": "test-s3-access-key",
    "T_S3_SECRET": "test-s3-secret-key",
}
PERSONAS_DIR = REPO / "agents" / "personas"


TEST_MEDIA_DIR = Path(tempfile.gettempdir()) / "flowbiz-test-media"


def base_config(store_url: str, **overrides: Any) -> dict[str, Any]:
    """A minimal config dict: fast leases and retries so tests run quickly."""
    data: dict[str, Any] = {
        "store": {"url": store_url, "partitions": 4},
        "personas_dir": str(PERSONAS_DIR),
        "pipeline": {
            "lease_seconds": 1.0,
            "retry_base_seconds": 0.05,
            "retry_max_seconds": 0.5,
            "max_delivery_attempts": 4,
            "shutdown_grace_seconds": 2,
        },
        "routing": {
            "default_persona": "core",
            "rules": [{"persona": "infra", "keywords": ["outage", "deploy"]}],
        },
        "tenants": [],
        # Never a fixed port: gateway processes a test starts from this config (workers as
        # subprocesses) must not collide with each other or with anything else on 9090.
        "http": {"operations": {"port": 0}},
        # Kept files go to the system's temporary folder, never the working directory.
        "media": {"dir": str(TEST_MEDIA_DIR)},
    }
    data.update(overrides)
    return data


def http_tenant(callback_url: str | None, tenant: str = "acme") -> dict[str, Any]:
    """A tenant with one HTTP API channel using the SECRETS above."""
    channel: dict[str, Any] = {
        "kind": "http",
        "api_keys": ["env:T_API_KEY"],
        "signing_secrets": ["env:T_SIGN", "env:T_SIGN_OLD"],
    }
    if callback_url is not None:
        channel |= {
            "callback_url": callback_url,
            "callback_secrets": ["env:T_CALLBACK"],
            "callback_allow_private": True,  # the test receivers listen on loopback
        }
    return {"id": tenant, "name": "Acme", "channels": [channel]}


@dataclass(slots=True)
class RunningGateway:
    url: str  # the public port: webhooks and /healthz
    app: web.Application
    config: GatewayConfig

    @property
    def runtime(self) -> Runtime:
        return self.app[RUNTIME]

    @property
    def ops_url(self) -> str:
        """The operations listener: /readyz, /metrics and the admin API under /v1."""
        if self.config.http.operations.mode == "public":
            return self.url
        assert self.runtime.operations_url is not None, "the operations listener is not bound"
        return self.runtime.operations_url

    @property
    def ops_app(self) -> web.Application:
        """The app serving the operations endpoints (the public app itself in mode "public")."""
        if self.config.http.operations.mode == "public":
            return self.app
        assert self.runtime.operations_app is not None, "the operations listener is not bound"
        return self.runtime.operations_app


@asynccontextmanager
async def running_gateway(
    data: dict[str, Any], *, role: Role = "all", port: int = 0
) -> AsyncIterator[RunningGateway]:
    http = dict(data.get("http", {}))
    http["operations"] = {"port": 0, **http.get("operations", {})}  # never a fixed port
    config = parse_config({**data, "http": http})
    app = create_app(config, role=role, personas=load_personas(config.personas_dir))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    guard = ConnectionGuard(listener="public", limits=config.http, metrics=app[RUNTIME].metrics)
    site = GuardedSite(runner, "127.0.0.1", port, guard=guard)
    await site.start()
    app[RUNTIME].public_url = site.loopback_url
    try:
        yield RunningGateway(url=f"http://127.0.0.1:{site.port}", app=app, config=config)
    finally:
        await runner.cleanup()


async def eventually(
    predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
