"""Signed links to kept files, served by a running gateway: only the right link, only in
time, never as something a browser would run."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from gateway.media import MediaLinks
from tests.harness import base_config, running_gateway
from tests.media.conftest import PNG

BLOB = "acme.0123456789abcdef01234567.0123456789abcdef0123456789abcdef"


def test_a_link_verifies_for_its_blob_until_it_expires() -> None:
    links = MediaLinks([b"k1"], base_url="https://gw.example/", ttl_seconds=60)
    url = links.url(BLOB, now=1000)
    assert url.startswith(f"https://gw.example/media/{BLOB}?exp=1060&sig=")
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    assert links.verify(BLOB, "1060", sig, now=1059)
    assert not links.verify(BLOB, "1060", sig, now=1061)  # expired
    assert not links.verify(BLOB, "9999", sig, now=1000)  # expiry pushed out
    assert not links.verify(BLOB.replace("acme", "evil"), "1060", sig, now=1000)
    assert not links.verify(BLOB, "1060", "0" * 32, now=1000)
    # A rotation: the old key still verifies its links, new links use the new key.
    rotated = MediaLinks([b"k2", b"k1"], base_url="https://gw.example", ttl_seconds=60)
    assert rotated.verify(BLOB, "1060", sig, now=1000)
    assert rotated.url(BLOB, now=1000) != url


async def test_the_gateway_serves_a_kept_file_behind_its_link_only(
    tmp_path: Path,
) -> None:
    data = base_config(f"sqlite:///{tmp_path}/gw.db", media={"dir": str(tmp_path / "media")})
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        media = gw.runtime.media
        assert media is not None
        info = await media.blobs.put(
            tenant="acme",
            conversation_key="acme/line/U1",
            data=PNG,
            content_type="image/png",
            name='cat"\r\nSet-Cookie: x=1.png',
        )
        url = media.links.url(info.id)
        assert url.startswith(gw.url + "/media/")
        async with session.get(url) as response:
            assert response.status == 200
            assert await response.read() == PNG
            assert response.headers["Content-Type"] == "image/png"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "sandbox" in response.headers["Content-Security-Policy"]
            # The kept name is encoded into the header, never a header of its own.
            assert "Set-Cookie" not in response.headers
            assert response.headers["Content-Disposition"].startswith("inline; filename*=")
        forged = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
        async with session.get(forged) as response:
            assert response.status == 403
        expired = media.links.url(info.id, now=time.time() - 10_000)
        async with session.get(expired) as response:
            assert response.status == 403
        async with session.get(f"{gw.url}/media/{info.id}") as response:
            assert response.status == 403
        await media.blobs.delete_conversation("acme", "acme/line/U1")
        async with session.get(url) as response:
            assert response.status == 404
        metrics = gw.runtime.metrics.media_links
        assert metrics.labels("served")._value.get() == 1
        assert metrics.labels("expired_or_forged")._value.get() == 3
        assert metrics.labels("not_found")._value.get() == 1


@pytest.mark.parametrize("configured", [False, True])
async def test_every_process_signs_with_the_same_key(
    tmp_path: Path, configured: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two apps on one store: a link one makes, the other serves (a key kept in the store,
    or the configured one)."""
    monkeypatch.setenv("FLOWBIZ_TEST_LINK_KEY", "a-long-random-link-key")
    media: dict[str, object] = {"dir": str(tmp_path / "media")}
    if configured:
        media["link_secrets"] = ["env:FLOWBIZ_TEST_LINK_KEY"]
    data = base_config(f"sqlite:///{tmp_path}/gw.db", media=media)
    async with running_gateway(data) as one, running_gateway(data) as two:
        assert one.runtime.media is not None
        assert two.runtime.media is not None
        info = await one.runtime.media.blobs.put(
            tenant="acme", conversation_key="k", data=PNG, content_type="image/png", name=None
        )
        link = one.runtime.media.links.url(info.id).replace(one.url, two.url)
        async with aiohttp.ClientSession() as session, session.get(link) as response:
            assert response.status == 200
