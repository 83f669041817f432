"""The blob store on an S3-compatible object store (AWS S3, MinIO, Ceph, R2…), through
aiobotocore.

Each blob is one object, ``{prefix}{tenant}/{conversation digest}/{random}``: the layout of
:func:`~gateway.media.blobs.blob_id`, so a conversation or a tenant is one key prefix to list
and delete. Its :class:`~gateway.media.blobs.BlobInfo` travels as the object's own
``Content-Type`` and user metadata (``sha256``, ``created-at``, ``name``), not as a sidecar
object: one ``PutObject`` stores bytes and metadata together or not at all (no bytes
without their metadata after a failure, no orphaned sidecar after an erase that stopped
halfway), ``info`` is one ``HEAD``, and a delete removes one object per blob. The name is
percent-encoded (metadata travels as HTTP headers, ASCII only, 2 KiB in all) and cut to
fit; it is what the ``Content-Disposition`` of a link shows, nothing more.

Guarantees, besides the :class:`~gateway.media.blobs.BlobStore` contract:

- every failure of the client — an error answered by the store (``botocore``'s
  ``ClientError``: a missing bucket, refused credentials), a store out of reach, a timeout —
  is turned into :class:`~gateway.media.blobs.BlobStoreError` in one place
  (:func:`_mapped`), and a missing object into :class:`~gateway.media.blobs.BlobNotFound`;
  the keeper then refuses the file ``not_stored`` and the message goes on. ``HEAD`` answers
  a missing bucket and a missing object alike (404, no body), so :meth:`S3BlobStore.info`
  says ``BlobNotFound`` for both; every other call tells them apart;
- an id that is not a blob id is refused before any request (no key outside the layout is
  ever named);
- listings are paginated, deletes go in ``DeleteObjects`` batches of at most 1000 keys,
  and an object the store refused to delete fails the call rather than counting as gone;
- retention (:meth:`S3BlobStore.delete_older_than`) goes by each object's
  ``LastModified`` in the listing, the store's own clock at its creation (objects are
  never rewritten), so it costs no request per object.

The client is created on first use, its service model loaded in a thread, and closed by
:meth:`S3BlobStore.aclose`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from gateway.media.blobs import (
    BlobInfo,
    BlobNotFound,
    BlobStoreError,
    blob_id,
    conversation_digest,
    new_info,
    parse_blob_id,
)
from gateway.media_config import S3Config

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

__all__ = ["S3BlobStore"]

_DELETE_BATCH = 1000  # the most DeleteObjects takes in one request
_HEADS_AT_ONCE = 16
_NAME_MAX = 1024  # encoded; S3 allows 2 KiB of user metadata in all
_MISSING_KEY = frozenset({"NoSuchKey", "404", "NotFound"})


@asynccontextmanager
async def _mapped(blob: str | None = None) -> AsyncIterator[None]:
    """The one place the client's failures become the blob store's: with ``blob`` given,
    a missing object is :class:`BlobNotFound`; everything else :class:`BlobStoreError`."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if blob is not None and code in _MISSING_KEY:
            raise BlobNotFound(blob) from None
        raise BlobStoreError(f"the object store refused: {code or 'error'}") from exc
    except BlobStoreError:
        raise
    except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
        # BotoCoreError: out of reach, timed out, an answer it could not read.
        # TimeoutError is an OSError.
        raise BlobStoreError(f"the object store is out of reach: {type(exc).__name__}") from exc


def _encode_name(name: str | None) -> str | None:
    if name is None:
        return None
    encoded = quote(name, safe="")
    while len(encoded) > _NAME_MAX:
        name = name[: len(name) * 3 // 4]
        encoded = quote(name, safe="")
    return encoded


class S3BlobStore:
    """Blobs as objects of one bucket, under ``config.prefix``."""

    def __init__(
        self,
        config: S3Config,
        *,
        page_size: int = 1000,
        delete_batch: int = _DELETE_BATCH,
        attempts: int = 3,
    ) -> None:
        # page_size, delete_batch and attempts are S3's and botocore's own defaults; smaller
        # values let a test walk many pages and batches, or meet an outage, in little time.
        self.config = config
        self._page_size = page_size
        self._delete_batch = min(delete_batch, _DELETE_BATCH)
        self._attempts = attempts
        self.bucket = config.bucket
        self.prefix = config.prefix
        self._client: S3Client | None = None
        self._context: Any = None
        self._opening = asyncio.Lock()
        self._closed = False

    # -- the client ------------------------------------------------------------------------
    async def _s3(self) -> S3Client:
        if self._client is not None:
            return self._client
        async with self._opening:
            if self._closed:
                raise BlobStoreError("the blob store is closed")
            if self._client is None:
                self._client = await self._open()
            return self._client

    async def _open(self) -> S3Client:
        config = self.config
        options: dict[str, Any] = {}
        if config.endpoint_url is not None:
            # Stores other than AWS (MinIO, Ceph) serve buckets under the path, not as hosts.
            options["s3"] = {"addressing_style": "path"}
        client_config = AioConfig(
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": self._attempts, "mode": "standard"},
            # Only the checksums the API requires: S3-compatible stores differ in the rest.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            warm_up_loader_caches=True,  # the service model is read from disk in a thread
            **options,
        )
        context = AioSession().create_client(
            "s3",
            region_name=config.region,
            endpoint_url=config.endpoint_url,
            aws_access_key_id=config.access_key_id.get_secret_value(),
            aws_secret_access_key=config.secret_access_key.get_secret_value(),
            config=client_config,
        )
        async with _mapped():
            client: S3Client = await context.__aenter__()
        self._context = context
        return client

    async def aclose(self) -> None:
        async with self._opening:
            self._closed = True
            context, self._context, self._client = self._context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)

    # -- keys ------------------------------------------------------------------------------
    def _key(self, blob: str) -> str:
        tenant, digest, rand = parse_blob_id(blob)
        return f"{self.prefix}{tenant}/{digest}/{rand}"

    def _blob(self, key: str) -> str | None:
        """The blob id of an object key, None for an object that is not a blob."""
        rest = key[len(self.prefix) :].split("/")
        if not key.startswith(self.prefix) or len(rest) != 3:
            return None
        try:
            parse_blob_id(".".join(rest))
        except BlobNotFound:
            return None
        return ".".join(rest)

    def _tenant_prefix(self, tenant: str) -> str:
        return f"{self.prefix}{tenant}/"

    def _conversation_prefix(self, tenant: str, conversation_key: str) -> str:
        return f"{self.prefix}{tenant}/{conversation_digest(conversation_key)}/"

    @staticmethod
    def _info(blob: str, answer: Any) -> BlobInfo:
        """The BlobInfo of a GetObject or HeadObject answer."""
        meta = answer.get("Metadata", {})
        try:
            name = meta.get("name")
            return BlobInfo(
                id=blob,
                tenant=parse_blob_id(blob)[0],
                content_type=answer["ContentType"],
                size=int(answer["ContentLength"]),
                sha256=meta["sha256"],
                name=None if name is None else unquote(name),
                created_at=datetime.fromisoformat(meta["created-at"]),
            )
        except (KeyError, ValueError) as exc:
            # An object under our prefix that we did not write: not a blob of ours.
            raise BlobNotFound(blob) from exc

    # -- the contract ----------------------------------------------------------------------
    async def put(
        self,
        *,
        tenant: str,
        conversation_key: str,
        data: bytes,
        content_type: str,
        name: str | None,
    ) -> BlobInfo:
        encoded = _encode_name(name)
        stored_name = None if encoded is None else unquote(encoded)
        info = new_info(blob_id(tenant, conversation_key), tenant, data, content_type, stored_name)
        metadata = {"sha256": info.sha256, "created-at": info.created_at.isoformat()}
        if encoded is not None:
            metadata["name"] = encoded
        s3 = await self._s3()
        async with _mapped():
            await s3.put_object(
                Bucket=self.bucket,
                Key=self._key(info.id),
                Body=data,
                ContentType=content_type,
                Metadata=metadata,
            )
        return info

    async def get(self, blob: str) -> tuple[BlobInfo, bytes]:
        key = self._key(blob)
        s3 = await self._s3()
        async with _mapped(blob):
            answer = await s3.get_object(Bucket=self.bucket, Key=key)
            async with answer["Body"] as body:
                data = await body.read()
        return self._info(blob, answer), data

    async def info(self, blob: str) -> BlobInfo:
        key = self._key(blob)
        s3 = await self._s3()
        async with _mapped(blob):
            answer = await s3.head_object(Bucket=self.bucket, Key=key)
        return self._info(blob, answer)

    async def _objects(self, prefix: str) -> AsyncIterator[tuple[str, datetime]]:
        """``(key, last modified)`` of every blob object under ``prefix``, page by page."""
        s3 = await self._s3()
        async with _mapped():
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=prefix,
                PaginationConfig={"PageSize": self._page_size},
            )
            async for page in pages:
                for item in page.get("Contents", ()):
                    if self._blob(item["Key"]) is not None:
                        yield item["Key"], item["LastModified"]

    async def list_conversation(self, tenant: str, conversation_key: str) -> list[BlobInfo]:
        prefix = self._conversation_prefix(tenant, conversation_key)
        blobs = [self._blob(key) async for key, _ in self._objects(prefix)]
        found: list[BlobInfo] = []
        for start in range(0, len(blobs), _HEADS_AT_ONCE):
            batch = [b for b in blobs[start : start + _HEADS_AT_ONCE] if b is not None]
            for result in await asyncio.gather(
                *(self.info(b) for b in batch), return_exceptions=True
            ):
                if isinstance(result, BlobNotFound):
                    continue  # erased meanwhile
                if isinstance(result, BaseException):
                    raise result
                found.append(result)
        return sorted(found, key=lambda i: i.created_at)

    async def _delete(self, keys: Iterable[str]) -> int:
        s3 = await self._s3()
        pending = list(keys)
        deleted = 0
        for start in range(0, len(pending), self._delete_batch):
            batch = pending[start : start + self._delete_batch]
            async with _mapped():
                answer = await s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            errors = answer.get("Errors", [])
            if errors:
                code = errors[0].get("Code", "error")
                raise BlobStoreError(f"the object store kept {len(errors)} objects: {code}")
            deleted += len(batch)
        return deleted

    async def delete_conversation(self, tenant: str, conversation_key: str) -> int:
        prefix = self._conversation_prefix(tenant, conversation_key)
        return await self._delete([key async for key, _ in self._objects(prefix)])

    async def delete_older_than(self, tenant: str, cutoff: datetime) -> int:
        prefix = self._tenant_prefix(tenant)
        return await self._delete(
            [key async for key, modified in self._objects(prefix) if modified < cutoff]
        )

    async def tenants(self) -> list[str]:
        s3 = await self._s3()
        found: set[str] = set()
        async with _mapped():
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
            )
            async for page in pages:
                for common in page.get("CommonPrefixes", ()):
                    tenant = common.get("Prefix", "")[len(self.prefix) :].rstrip("/")
                    try:
                        parse_blob_id(f"{tenant}.{'0' * 24}.{'0' * 32}")
                    except BlobNotFound:
                        continue  # not a tenant's folder
                    found.add(tenant)
        return sorted(found)
