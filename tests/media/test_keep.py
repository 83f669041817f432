"""Keeping an inbound file: fetched under the limits, judged on its bytes, or refused with a
reason while the message goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.media import BlobStore, MediaFetch
from gateway.media.keeper import keep_attachment, sniff_content_type
from gateway.media_config import MediaLimits
from gateway.metrics import Metrics
from gateway.models import Attachment, Channel, ConversationKey, InboundMessage, Participant
from tests.media.conftest import ELF, PDF, PNG, FileHost

MESSAGE = InboundMessage(
    event_id="ev1",
    conversation=ConversationKey(tenant="acme", channel=Channel.LINE, conversation_id="U1"),
    sender=Participant(id="U1"),
    text="look",
)


class UrlSource:
    """A platform whose files are fetched from ``url`` with a bearer token."""

    def __init__(self, url: str | None, data: bytes | None = None) -> None:
        self.url, self.data = url, data

    async def media_fetch(self, message: InboundMessage, attachment: Attachment) -> MediaFetch:
        return MediaFetch(url=self.url, data=self.data, headers={"Authorization": "Bearer t0k"})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _keep(
    source: UrlSource,
    blob_store: BlobStore,
    http: aiohttp.ClientSession,
    metrics: Metrics,
    attachment: Attachment | None = None,
    limits: MediaLimits | None = None,
) -> Attachment:
    return await keep_attachment(
        MESSAGE,
        attachment or Attachment(kind="image", name="cat.png", mime_type="image/png"),
        source=source,
        blobs=blob_store,
        http=http,
        limits=limits or MediaLimits(max_bytes=100_000),
        metrics=metrics,
    )


def _count(metrics: Metrics, outcome: str) -> float:
    return metrics.media.labels("line", "in", outcome)._value.get()


async def test_a_file_is_fetched_with_the_platforms_credentials_and_kept(
    file_host: FileHost, blob_store: BlobStore, http: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    url = file_host.serve("/content/1", PNG, **{"Content-Type": "application/octet-stream"})
    kept = await _keep(UrlSource(url), blob_store, http, metrics)
    assert kept.refused is None
    assert kept.blob is not None
    assert (kept.mime_type, kept.size) == ("image/png", len(PNG))  # judged on the bytes
    assert (await blob_store.get(kept.blob))[1] == PNG
    assert file_host.requests[0]["Authorization"] == "Bearer t0k"
    assert _count(metrics, "kept") == 1
    # Judged once: the same attachment again is not fetched again.
    assert await _keep(UrlSource(url), blob_store, http, metrics, kept) == kept
    assert len(file_host.requests) == 1


async def test_attack_an_executable_named_like_a_picture_is_refused(
    file_host: FileHost, blob_store: BlobStore, http: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    url = file_host.serve("/content/2", ELF, **{"Content-Type": "image/png"})
    kept = await _keep(UrlSource(url), blob_store, http, metrics)
    assert (kept.refused, kept.blob) == ("type_not_allowed", None)
    assert _count(metrics, "type_not_allowed") == 1
    assert await blob_store.list_conversation("acme", MESSAGE.conversation.key) == []


async def test_a_file_too_large_is_refused_by_its_declared_size_without_a_fetch(
    file_host: FileHost, blob_store: BlobStore, http: aiohttp.ClientSession
) -> None:
    url = file_host.serve("/content/3", PNG)
    big = Attachment(kind="image", size=10_000_000)
    kept = await _keep(UrlSource(url), blob_store, http, Metrics(), big)
    assert kept.refused == "too_large"
    assert file_host.requests == []


async def test_attack_an_endless_response_costs_no_more_than_the_limit(
    file_host: FileHost, blob_store: BlobStore, http: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    kept = await _keep(UrlSource(f"{file_host.url}/endless"), blob_store, http, metrics)
    assert kept.refused == "too_large"
    assert _count(metrics, "too_large") == 1


async def test_a_lying_content_length_is_refused_before_the_body(
    file_host: FileHost, blob_store: BlobStore, http: aiohttp.ClientSession
) -> None:
    url = file_host.serve("/content/4", PDF * 5000)
    kept = await _keep(UrlSource(url), blob_store, http, Metrics())
    assert kept.refused == "too_large"


async def test_a_platform_error_refuses_the_file_and_not_the_message(
    file_host: FileHost, blob_store: BlobStore, http: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    url = file_host.serve("/content/5", b"nope", status=500)
    kept = await _keep(UrlSource(url), blob_store, http, metrics)
    assert kept.refused == "fetch_failed"
    unreachable = await _keep(UrlSource("http://127.0.0.1:9/x"), blob_store, http, metrics)
    assert unreachable.refused == "fetch_failed"
    assert _count(metrics, "fetch_failed") == 2


async def test_bytes_at_hand_are_judged_and_kept_without_a_fetch(
    blob_store: BlobStore, http: aiohttp.ClientSession
) -> None:
    kept = await _keep(UrlSource(None, data=PDF), blob_store, http, Metrics())
    assert kept.mime_type == "application/pdf"
    assert kept.blob is not None
    narrow = MediaLimits(allowed_types=("image/*",))
    refused = await _keep(UrlSource(None, data=PDF), blob_store, http, Metrics(), limits=narrow)
    assert refused.refused == "type_not_allowed"


def test_text_is_text_only_when_it_decodes() -> None:
    assert sniff_content_type("héllo\n".encode()) == "text/plain"
    assert sniff_content_type(b"\xff\xfe\x00garbage") == "application/octet-stream"
    assert sniff_content_type(PNG) == "image/png"
