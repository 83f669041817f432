"""One suite over every blob store: what put returns, get gives back, deletes remove."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.media import BlobNotFound, BlobStore, FileBlobStore
from gateway.media.blobs import parse_blob_id
from tests.media.conftest import PDF, PNG

CONV = "acme/line/U1"


async def test_put_then_get_gives_the_bytes_and_their_metadata(blob_store: BlobStore) -> None:
    info = await blob_store.put(
        tenant="acme", conversation_key=CONV, data=PNG, content_type="image/png", name="a.png"
    )
    assert parse_blob_id(info.id)[0] == "acme"
    assert (info.size, info.content_type, info.name) == (len(PNG), "image/png", "a.png")
    got, data = await blob_store.get(info.id)
    assert data == PNG
    assert got == info
    assert await blob_store.info(info.id) == info


@pytest.mark.parametrize(
    "blob",
    [
        "../../etc/passwd",
        "acme..0123",
        "acme.0123456789abcdef01234567.0123456789abcdef0123456789abcdef/../x",
        "ACME.0123456789abcdef01234567.0123456789abcdef0123456789abcdef",
        "acme.0123456789abcdef01234567.0123456789abcdef0123456789abcdef",  # well formed, unknown
        "",
    ],
)
async def test_attack_an_id_that_is_not_a_kept_blob_reads_nothing(
    blob_store: BlobStore, blob: str
) -> None:
    with pytest.raises(BlobNotFound):
        await blob_store.get(blob)
    with pytest.raises(BlobNotFound):
        await blob_store.info(blob)


async def test_a_conversation_lists_and_erases_its_own_blobs_only(blob_store: BlobStore) -> None:
    mine = [
        await blob_store.put(
            tenant="acme", conversation_key=CONV, data=d, content_type=t, name=None
        )
        for d, t in ((PNG, "image/png"), (PDF, "application/pdf"))
    ]
    other = await blob_store.put(
        tenant="acme",
        conversation_key="acme/line/U2",
        data=PNG,
        content_type="image/png",
        name=None,
    )
    assert [i.id for i in await blob_store.list_conversation("acme", CONV)] == [i.id for i in mine]
    assert await blob_store.delete_conversation("acme", CONV) == 2
    assert await blob_store.list_conversation("acme", CONV) == []
    for info in mine:
        with pytest.raises(BlobNotFound):
            await blob_store.get(info.id)
    assert (await blob_store.get(other.id))[1] == PNG
    assert await blob_store.delete_conversation("acme", CONV) == 0


async def test_retention_deletes_what_is_older_than_the_cutoff(blob_store: BlobStore) -> None:
    info = await blob_store.put(
        tenant="acme", conversation_key=CONV, data=PNG, content_type="image/png", name=None
    )
    other_tenant = await blob_store.put(
        tenant="globex", conversation_key=CONV, data=PNG, content_type="image/png", name=None
    )
    assert await blob_store.delete_older_than("acme", datetime.now(UTC) - timedelta(hours=1)) == 0
    assert await blob_store.delete_older_than("acme", datetime.now(UTC) + timedelta(seconds=1)) == 1
    with pytest.raises(BlobNotFound):
        await blob_store.get(info.id)
    assert (await blob_store.get(other_tenant.id))[1] == PNG
    assert sorted(await blob_store.tenants()) in (["acme", "globex"], ["globex"])


async def test_attack_other_local_users_cannot_read_kept_files(tmp_path: Path) -> None:
    """Under the common umask 022 the folder store still creates its folders 0700 and its
    files 0600: they hold what customers sent."""
    old = os.umask(0o022)
    try:
        store = FileBlobStore(tmp_path / "media")
        info = await store.put(
            tenant="acme", conversation_key=CONV, data=PNG, content_type="image/png", name=None
        )
    finally:
        os.umask(old)
    created = sorted((tmp_path / "media").rglob("*"))
    assert len(created) == 4  # tenant, conversation, bytes, metadata
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in created}
    assert modes == {k: 0o700 if (tmp_path / k).is_dir() else 0o600 for k in modes}, modes
    assert stat.S_IMODE((tmp_path / "media").stat().st_mode) == 0o700
    assert (await store.get(info.id))[1] == PNG
