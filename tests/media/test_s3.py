"""The S3 blob store on a real S3-compatible server (moto's, on loopback): its layout, its
metadata, its pages and batches, and its failures turned into the blob store's own errors.
The contract both stores share is tested in test_blob_stores.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import pytest

from gateway.media import BlobInfo, BlobNotFound, BlobStoreError, MediaFetch
from gateway.media.blobs import conversation_digest, parse_blob_id
from gateway.media.keeper import keep_attachment
from gateway.media.s3 import S3BlobStore
from gateway.media_config import MediaLimits
from gateway.metrics import Metrics
from gateway.models import Attachment, Channel, ConversationKey, InboundMessage, Participant
from tests.conftest import free_port
from tests.harness import base_config, running_gateway
from tests.media.conftest import PDF, PNG
from tests.s3 import S3Server

CONV = "acme/line/U1"
BLOB = "acme.0123456789abcdef01234567.0123456789abcdef0123456789abcdef"


@pytest.fixture
async def bucket(s3_server: S3Server) -> str:
    return await s3_server.make_bucket()


@pytest.fixture
async def store(s3_server: S3Server, bucket: str) -> AsyncIterator[S3BlobStore]:
    opened = S3BlobStore(s3_server.config(bucket))
    yield opened
    await opened.aclose()


async def _put(
    store: S3BlobStore, tenant: str = "acme", conv: str = CONV, name: str | None = None
) -> BlobInfo:
    return await store.put(
        tenant=tenant, conversation_key=conv, data=PNG, content_type="image/png", name=name
    )


async def test_a_blob_is_one_object_under_tenant_and_conversation_with_its_metadata(
    s3_server: S3Server, bucket: str, store: S3BlobStore
) -> None:
    info = await _put(store, name="a.png")
    tenant, digest, rand = parse_blob_id(info.id)
    assert digest == conversation_digest(CONV)
    assert await s3_server.keys(bucket) == [f"flowbiz/{tenant}/{digest}/{rand}"]
    async with s3_server.client() as s3:
        head = await s3.head_object(Bucket=bucket, Key=f"flowbiz/acme/{digest}/{rand}")
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {
        "sha256": info.sha256,
        "created-at": info.created_at.isoformat(),
        "name": "a.png",
    }


async def test_objects_that_are_not_blobs_are_neither_listed_nor_deleted(
    s3_server: S3Server, bucket: str, store: S3BlobStore
) -> None:
    """The bucket may hold other things: under the prefix in another shape, or beside it."""
    info = await _put(store)
    digest = conversation_digest(CONV)
    foreign = [
        "other-app/acme/data.csv",  # outside the prefix
        f"flowbiz/acme/{digest}/notes.txt",  # inside, not a blob id
        "flowbiz/Not A Tenant/x/y",
    ]
    async with s3_server.client() as s3:
        for key in foreign:
            await s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert [i.id for i in await store.list_conversation("acme", CONV)] == [info.id]
    assert await store.tenants() == ["acme"]
    assert await store.delete_conversation("acme", CONV) == 1
    assert await store.delete_older_than("acme", datetime.now(UTC) + timedelta(days=1)) == 0
    assert sorted(await s3_server.keys(bucket)) == sorted(foreign)


@pytest.mark.parametrize(
    "name", ['café ☕ "quoted"\r\nX-Header: 1.png', "../../etc/passwd", "x" * 3000, "é" * 400]
)
async def test_any_name_is_kept_as_metadata_cut_to_fit(store: S3BlobStore, name: str) -> None:
    info = await _put(store, name=name)
    got, data = await store.get(info.id)
    assert data == PNG
    assert got == info
    assert info.name is not None
    assert name.startswith(info.name)
    if len(name) < 200:
        assert info.name == name


async def test_a_conversation_of_many_blobs_is_listed_and_deleted_page_by_page(
    s3_server: S3Server, bucket: str
) -> None:
    """More objects than a page and a batch hold (21 against pages and batches of 10, as
    1001 would be against S3's 1000): three pages of listing and three DeleteObjects."""
    store = S3BlobStore(s3_server.config(bucket), page_size=10, delete_batch=10)
    digest = conversation_digest(CONV)
    async with s3_server.client() as s3:
        await asyncio.gather(
            *(
                s3.put_object(Bucket=bucket, Key=f"flowbiz/acme/{digest}/{n:032x}", Body=b"x")
                for n in range(21)
            )
        )
    kept = await _put(store, conv="acme/line/U2")
    assert await store.delete_conversation("acme", CONV) == 21
    assert await s3_server.keys(bucket) == [store._key(kept.id)]
    assert await store.delete_older_than("acme", datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert await s3_server.keys(bucket) == []
    await store.aclose()


async def test_a_bucket_that_does_not_exist_is_a_store_error(s3_server: S3Server) -> None:
    store = S3BlobStore(s3_server.config("flowbiz-no-such-bucket"))
    try:
        with pytest.raises(BlobStoreError, match="NoSuchBucket"):
            await _put(store)
        with pytest.raises(BlobStoreError, match="NoSuchBucket"):
            await store.get(BLOB)
        for call in (
            store.list_conversation("acme", CONV),
            store.delete_conversation("acme", CONV),
            store.delete_older_than("acme", datetime.now(UTC)),
            store.tenants(),
        ):
            with pytest.raises(BlobStoreError):
                await call
        # HEAD answers a missing bucket as a missing object: no body says which.
        with pytest.raises(BlobNotFound):
            await store.info(BLOB)
    finally:
        await store.aclose()


async def test_a_server_that_is_down_is_a_store_error(s3_server: S3Server) -> None:
    config = s3_server.config("flowbiz-any").model_copy(
        update={"endpoint_url": f"http://127.0.0.1:{free_port()}"}
    )
    store = S3BlobStore(config, attempts=1)
    try:
        started = time.monotonic()
        with pytest.raises(BlobStoreError, match="out of reach"):
            await _put(store)
        with pytest.raises(BlobStoreError):
            await store.get(BLOB)
        assert time.monotonic() - started < 10  # one try each, then the error
    finally:
        await store.aclose()


async def test_an_unreachable_store_refuses_the_file_and_the_message_goes_on(
    s3_server: S3Server,
) -> None:
    store = S3BlobStore(s3_server.config("flowbiz-no-such-bucket"))
    metrics = Metrics()
    message = InboundMessage(
        event_id="ev1",
        conversation=ConversationKey(tenant="acme", channel=Channel.LINE, conversation_id="U1"),
        sender=Participant(id="U1"),
        text="look",
    )

    class Source:
        async def media_fetch(self, message: InboundMessage, attachment: Attachment) -> MediaFetch:
            return MediaFetch(data=PDF)

    try:
        async with aiohttp.ClientSession() as http:
            kept = await keep_attachment(
                message,
                Attachment(kind="file", name="a.pdf"),
                source=Source(),
                blobs=store,
                http=http,
                limits=MediaLimits(),
                metrics=metrics,
            )
    finally:
        await store.aclose()
    assert (kept.blob, kept.refused) == (None, "not_stored")
    assert metrics.media.labels("line", "in", "not_stored")._value.get() == 1


async def test_a_closed_store_makes_no_new_client(store: S3BlobStore) -> None:
    await _put(store)
    await store.aclose()
    with pytest.raises(BlobStoreError, match="closed"):
        await _put(store)


async def test_the_gateway_serves_a_file_kept_in_s3_through_its_signed_link(
    tmp_path: Path, s3_server: S3Server, bucket: str, channel_env: None
) -> None:
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db",
        media={"s3": s3_server.config_data(bucket), "dir": str(tmp_path / "unused")},
    )
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        media = gw.runtime.media
        assert media is not None
        assert isinstance(media.blobs, S3BlobStore)
        info = await media.blobs.put(
            tenant="acme",
            conversation_key=CONV,
            data=PNG,
            content_type="image/png",
            name="cat.png",
        )
        assert len(await s3_server.keys(bucket)) == 1
        url = media.links.url(info.id)
        async with session.get(url) as response:
            assert response.status == 200
            assert await response.read() == PNG
            assert response.headers["Content-Type"] == "image/png"
            assert unquote(response.headers["Content-Disposition"]).endswith("cat.png")
        async with session.get(url[:-4] + "0000") as response:
            assert response.status == 403
        await media.blobs.delete_conversation("acme", CONV)
        async with session.get(url) as response:
            assert response.status == 404
    assert not (tmp_path / "unused").exists()  # nothing went to the folder


async def test_a_link_to_a_store_that_fails_answers_503(
    tmp_path: Path, s3_server: S3Server, channel_env: None
) -> None:
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db",
        media={"s3": s3_server.config_data("flowbiz-no-such-bucket")},
    )
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        media = gw.runtime.media
        assert media is not None
        async with session.get(media.links.url(BLOB)) as response:
            assert response.status == 503
        assert gw.runtime.metrics.media_links.labels("store_failed")._value.get() == 1
