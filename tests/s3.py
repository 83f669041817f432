"""A real S3-compatible server on loopback for the blob store's tests: moto's server mode.

``S3Server`` is moto's threaded server (a WSGI server answering the S3 API over HTTP on a
free loopback port); ``tests.conftest`` starts one for the session (``s3_server``). Each test
that uses it makes its own bucket (:meth:`S3Server.make_bucket`), so tests share nothing.
The credentials are ``tests.harness.SECRETS``' ``T_S3_KEY`` / ``T_S3_SECRET``: the server
takes any, the client signs with them as it would for a real store.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from aiobotocore.session import AioSession
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

from gateway.media_config import S3Config
from tests.harness import SECRETS

__all__ = ["S3Server", "start_s3_server"]


@dataclass
class S3Server:
    server: ThreadedMotoServer
    endpoint: str

    def stop(self) -> None:
        self.server.stop()

    async def make_bucket(self) -> str:
        """A new, empty bucket, named uniquely."""
        name = f"flowbiz-{uuid.uuid4().hex[:16]}"
        async with self.client() as s3:
            await s3.create_bucket(Bucket=name)
        return name

    async def keys(self, bucket: str) -> list[str]:
        """Every object key in ``bucket``, read straight from the server."""
        found: list[str] = []
        async with self.client() as s3:
            async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                found.extend(item["Key"] for item in page.get("Contents", ()))
        return found

    def client(self) -> Any:
        return AioSession().create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url=self.endpoint,
            aws_access_key_id=SECRETS["T_S3_KEY"],
            aws_secret_access_key=SECRETS["T_S3_SECRET"],
        )

    def config(self, bucket: str, *, prefix: str = "flowbiz/") -> S3Config:
        return S3Config(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=self.endpoint,
            access_key_id=SecretStr(SECRETS["T_S3_KEY"]),
            secret_access_key=SecretStr(SECRETS["T_S3_SECRET"]),
        )

    def config_data(self, bucket: str) -> dict[str, Any]:
        """The ``media.s3`` block of a gateway config file for ``bucket``."""
        return {
            "bucket": bucket,
            "endpoint_url": self.endpoint,
            "access_key_id": "env:T_S3_KEY",
            "secret_access_key": "env:T_S3_SECRET",
        }


def start_s3_server(port: int) -> S3Server:
    # Its WSGI server logs every request at INFO (werkzeug); the tests read their own logs.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return S3Server(server=server, endpoint=f"http://127.0.0.1:{port}")
