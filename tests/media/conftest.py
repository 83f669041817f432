"""Fixtures for the media tests: blob stores, and a loopback file host playing a platform."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from gateway.media import BlobStore, FileBlobStore
from gateway.media.s3 import S3BlobStore
from tests.conftest import free_port
from tests.s3 import S3Server

# The smallest valid PNG (1 by 1, transparent), and a PDF head: their magic numbers are what
# the keeper judges.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
PDF = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"
ELF = b"\x7fELF\x02\x01\x01" + bytes(64)  # an executable, whatever its name says


@pytest.fixture(params=["files", "s3"])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """Each blob store implementation, empty: a folder, and a bucket of its own on a real
    S3-compatible server."""
    store: BlobStore
    if request.param == "files":
        store = FileBlobStore(tmp_path / "media")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        store = S3BlobStore(server.config(await server.make_bucket()))
    yield store
    await store.aclose()


@dataclass
class FileHost:
    """A platform's file host on loopback: serves ``files`` by path, counts requests."""

    url: str = ""
    files: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    stream: Callable[[web.Request], AsyncIterator[bytes]] | None = None

    def serve(self, path: str, body: bytes, *, status: int = 200, **headers: str) -> str:
        self.files[path] = (status, body, headers)
        return f"{self.url}{path}"


@pytest.fixture
async def file_host() -> AsyncIterator[FileHost]:
    host = FileHost()

    async def handle(request: web.Request) -> web.StreamResponse:
        host.requests.append(dict(request.headers))
        if request.path == "/endless":
            response = web.StreamResponse()  # no Content-Length: chunked, never-ending
            await response.prepare(request)
            chunk = b"\x89PNG" + bytes(65532)
            for _ in range(10_000):
                await response.write(chunk)
            return response
        if request.path not in host.files:
            return web.Response(status=404)
        status, body, headers = host.files[request.path]
        return web.Response(status=status, body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    host.url = f"http://127.0.0.1:{port}"
    yield host
    await runner.cleanup()
