"""The blob store: the bytes of the files the gateway keeps, one object per file.

A blob is named by :func:`blob_id`: ``{tenant}.{conversation digest}.{random}`` — one path
segment, safe in a URL, unguessable, and grouped so that everything of one conversation or
one tenant can be listed and erased without an index. Its metadata (:class:`BlobInfo`:
content type, name, size, SHA-256, when it was kept) travels with it.

Two stores keep the same contract (``tests/media/test_blob_stores.py`` runs one suite over
both): :class:`FileBlobStore`, a folder under the data dir (the default), and
:class:`gateway.media.s3.S3BlobStore`, any S3-compatible object store. Guarantees: ``put``
returns only once the bytes are durable (written and renamed into place, or stored by S3);
``get`` of an unknown, malformed or erased id raises :class:`BlobNotFound`, never reads
outside the store; the deletes return how many blobs they removed. The folder store creates
its folders 0700 and its files 0600, whatever the umask.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

__all__ = [
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "FileBlobStore",
    "blob_id",
    "conversation_digest",
    "parse_blob_id",
]

# tenant ids are [a-z0-9_-]; the digest and the random part are hex.
_BLOB_ID = re.compile(r"^([a-z0-9_-]{1,64})\.([0-9a-f]{24})\.([0-9a-f]{32})$")


class BlobNotFound(LookupError):
    """No blob by that id (never kept, erased, expired, or not an id at all)."""


class BlobStoreError(OSError):
    """The store could not be reached or refused the operation (an OSError, as a disk's)."""


def conversation_digest(conversation_key: str) -> str:
    return hashlib.sha256(conversation_key.encode()).hexdigest()[:24]


def blob_id(tenant: str, conversation_key: str) -> str:
    """A new blob's id, in its tenant's and conversation's group."""
    return f"{tenant}.{conversation_digest(conversation_key)}.{secrets.token_hex(16)}"


def parse_blob_id(value: str) -> tuple[str, str, str]:
    """``(tenant, conversation digest, random)``; BlobNotFound for anything else."""
    match = _BLOB_ID.match(value)
    if match is None:
        raise BlobNotFound(value[:100])
    tenant, digest, rand = match.groups()
    return tenant, digest, rand


@dataclass(frozen=True, slots=True)
class BlobInfo:
    id: str
    tenant: str
    content_type: str
    size: int
    sha256: str
    name: str | None
    created_at: datetime

    def to_json(self) -> bytes:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BlobInfo:
        data = json.loads(raw)
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        return cls(**data)


class BlobStore(Protocol):
    async def put(
        self,
        *,
        tenant: str,
        conversation_key: str,
        data: bytes,
        content_type: str,
        name: str | None,
    ) -> BlobInfo: ...

    async def get(self, blob: str) -> tuple[BlobInfo, bytes]: ...

    async def info(self, blob: str) -> BlobInfo: ...

    async def list_conversation(self, tenant: str, conversation_key: str) -> list[BlobInfo]: ...

    async def delete_conversation(self, tenant: str, conversation_key: str) -> int: ...

    async def delete_older_than(self, tenant: str, cutoff: datetime) -> int: ...

    async def tenants(self) -> list[str]: ...

    async def aclose(self) -> None: ...


def new_info(blob: str, tenant: str, data: bytes, content_type: str, name: str | None) -> BlobInfo:
    return BlobInfo(
        id=blob,
        tenant=tenant,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        name=name,
        created_at=datetime.now(UTC),
    )


class FileBlobStore:
    """Blobs as files: ``{root}/{tenant}/{conversation digest}/{random}`` and a ``.json``
    beside each. File work runs in a thread, so the event loop never waits on the disk."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, blob: str) -> Path:
        tenant, digest, rand = parse_blob_id(blob)
        return self.root / tenant / digest / rand

    async def put(
        self,
        *,
        tenant: str,
        conversation_key: str,
        data: bytes,
        content_type: str,
        name: str | None,
    ) -> BlobInfo:
        info = new_info(blob_id(tenant, conversation_key), tenant, data, content_type, name)
        await asyncio.to_thread(self._write, self._path(info.id), data, info.to_json())
        return info

    def _write(self, path: Path, data: bytes, meta: bytes) -> None:
        # Owner-only, whatever the umask: the files are what customers sent.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.parent.mkdir(mode=0o700, exist_ok=True)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        # The metadata first: a blob whose bytes are in place always has its metadata.
        for target, content in ((path.with_suffix(".json"), meta), (path, data)):
            partial = target.with_name(target.name + ".part")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, target)

    async def get(self, blob: str) -> tuple[BlobInfo, bytes]:
        path = self._path(blob)
        try:
            return await asyncio.to_thread(self._read, path)
        except FileNotFoundError:
            raise BlobNotFound(blob) from None

    @staticmethod
    def _read(path: Path) -> tuple[BlobInfo, bytes]:
        data = path.read_bytes()
        return BlobInfo.from_json(path.with_suffix(".json").read_bytes()), data

    async def info(self, blob: str) -> BlobInfo:
        path = self._path(blob).with_suffix(".json")
        try:
            return BlobInfo.from_json(await asyncio.to_thread(path.read_bytes))
        except FileNotFoundError:
            raise BlobNotFound(blob) from None

    async def list_conversation(self, tenant: str, conversation_key: str) -> list[BlobInfo]:
        folder = self.root / tenant / conversation_digest(conversation_key)
        return await asyncio.to_thread(self._infos, folder)

    @staticmethod
    def _infos(folder: Path) -> list[BlobInfo]:
        if not folder.is_dir():
            return []
        found = []
        for meta in sorted(folder.glob("*.json")):
            try:
                found.append(BlobInfo.from_json(meta.read_bytes()))
            except FileNotFoundError:  # erased meanwhile
                continue
        return sorted(found, key=lambda i: i.created_at)

    async def delete_conversation(self, tenant: str, conversation_key: str) -> int:
        folder = self.root / tenant / conversation_digest(conversation_key)
        return await asyncio.to_thread(self._delete_folder, folder)

    @staticmethod
    def _delete_folder(folder: Path) -> int:
        if not folder.is_dir():
            return 0
        count = sum(1 for _ in folder.glob("*.json"))
        shutil.rmtree(folder, ignore_errors=True)
        return count

    async def delete_older_than(self, tenant: str, cutoff: datetime) -> int:
        return await asyncio.to_thread(self._delete_older, self.root / tenant, cutoff)

    @staticmethod
    def _delete_older(folder: Path, cutoff: datetime) -> int:
        if not folder.is_dir():
            return 0
        count = 0
        for meta in folder.glob("*/*.json"):
            try:
                info = BlobInfo.from_json(meta.read_bytes())
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                continue
            if info.created_at < cutoff:
                meta.with_suffix("").unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
                count += 1
        return count

    async def tenants(self) -> list[str]:
        def names() -> list[str]:
            if not self.root.is_dir():
                return []
            return sorted(p.name for p in self.root.iterdir() if p.is_dir())

        return await asyncio.to_thread(names)

    async def aclose(self) -> None:
        return None
