"""The retention sweep: each tenant's files go after its own ``media.retention_days``, the
others' stay; a sweep that fails is logged and the gateway goes on."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from gateway.config import parse_config
from gateway.media import BlobInfo, BlobNotFound, BlobStore, MediaLinks, MediaService
from gateway.metrics import Metrics
from tests.harness import SECRETS, base_config, eventually, http_tenant, running_gateway
from tests.media.conftest import PNG
from tests.s3 import S3Server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _service(blob_store: BlobStore, http: aiohttp.ClientSession) -> MediaService:
    tenants = [
        http_tenant(None, "acme") | {"media": {"retention_days": 1}},
        http_tenant(None, "globex"),  # the gateway's retention below
    ]
    config = parse_config(base_config("memory://", tenants=tenants, media={"retention_days": 7}))
    return MediaService(
        config=lambda: config,
        blobs=blob_store,
        links=MediaLinks([b"k"], base_url="https://gw.example", ttl_seconds=60),
        http=http,
        metrics=Metrics(),
    )


async def _put(blob_store: BlobStore, tenant: str) -> BlobInfo:
    return await blob_store.put(
        tenant=tenant,
        conversation_key=f"{tenant}/http/c1",
        data=PNG,
        content_type="image/png",
        name=None,
    )


async def _kept(blob_store: BlobStore, info: BlobInfo) -> bool:
    try:
        await blob_store.info(info.id)
    except BlobNotFound:
        return False
    return True


@pytest.mark.usefixtures("channel_env")
async def test_each_tenant_keeps_its_files_for_its_own_retention(
    blob_store: BlobStore, http: aiohttp.ClientSession
) -> None:
    media = _service(blob_store, http)
    acme, globex, gone = [await _put(blob_store, t) for t in ("acme", "globex", "gone")]
    now = datetime.now(UTC)
    # Within a day: everything stays.
    assert await media.sweep(now=now + timedelta(hours=12)) == 0
    # Two days on: acme's (1 day) goes; globex's and a tenant no longer configured
    # (the gateway's 7 days) stay.
    assert await media.sweep(now=now + timedelta(days=2)) == 1
    assert [await _kept(blob_store, i) for i in (acme, globex, gone)] == [False, True, True]
    # Eight days on: the gateway's retention takes the rest.
    assert await media.sweep(now=now + timedelta(days=8)) == 2
    assert [await _kept(blob_store, i) for i in (globex, gone)] == [False, False]


@pytest.mark.usefixtures("channel_env")
async def test_a_sweep_that_fails_is_logged_and_the_gateway_goes_on(
    tmp_path: Path,
    s3_server: S3Server,
    receiver: CallbackReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bucket is gone: the sweep (run as the gateway starts, then hourly) fails, is
    logged, and the gateway still answers its customers."""
    caplog.set_level(logging.WARNING)
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db",
        tenants=[http_tenant(receiver.url)],
        media={"s3": s3_server.config_data("flowbiz-no-such-bucket")},
    )
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        await eventually(lambda: "media.sweep_failed" in caplog.text)
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        status, _ = await client.send(conversation_id="c1", text="hello", user_id="u1")
        assert status == 202
        [reply] = await receiver.wait_for(1)
        assert reply.payload["text"]
