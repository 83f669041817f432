"""What a store holds that mentions some marks: every key and value, read around the
store's API (the API is what is being checked).

SQLite: every row of every table of the file. Redis: every key of every type. Memory: every
table of the reference store.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import redis.asyncio as aioredis

from gateway.store import Store
from gateway.store.memory import MemoryStore


def _mentions(blob: bytes, marks: tuple[bytes, ...]) -> bool:
    return any(mark in blob for mark in marks)


def sqlite_leftovers(path: str, marks: tuple[bytes, ...]) -> list[str]:
    found = []
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f"SELECT * FROM {table}"):  # noqa: S608 - names from the schema
                blob = b"|".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
                if _mentions(blob, marks):
                    found.append(f"{table}: {row[0]}")
    return found


async def redis_leftovers(url: str, marks: tuple[bytes, ...]) -> list[str]:
    found = []
    client = aioredis.from_url(url)
    try:
        async for key in client.scan_iter(count=1000):
            kind = (await client.type(key)).decode()
            if kind == "string":
                parts = [await client.get(key) or b""]
            elif kind == "stream":
                parts = [b"".join(k + v for k, v in f.items()) for _, f in await client.xrange(key)]
            elif kind == "list":
                parts = await client.lrange(key, 0, -1)
            elif kind == "hash":
                parts = [k + v for k, v in (await client.hgetall(key)).items()]
            elif kind == "zset":
                parts = await client.zrange(key, 0, -1)
            elif kind == "set":
                parts = list(await client.smembers(key))
            else:
                parts = [kind.encode()]
            if _mentions(key + b"|" + b"|".join(parts), marks):
                found.append(key.decode())
    finally:
        await client.aclose()
    return found


def memory_leftovers(store: MemoryStore, marks: tuple[bytes, ...]) -> list[str]:
    tables: dict[str, dict[str, Any]] = {
        "records": store._records,
        "states": store._states,
        "streams": store._streams,
        "counters": store._counters,
        "buckets": store._buckets,
        "leases": store._leases,
        "members": store._members,
    }
    found = []
    for name, table in tables.items():
        for key, value in table.items():
            if _mentions(key.encode() + b"|" + repr(value).encode(), marks):
                found.append(f"{name}: {key}")
    return found


async def leftovers(where: str | Store, marks: tuple[bytes, ...]) -> list[str]:
    """Everything in the store (a URL, or an open store) that names one of ``marks``."""
    if isinstance(where, MemoryStore):
        return memory_leftovers(where, marks)
    url = where if isinstance(where, str) else where.url
    if url.startswith("sqlite:///"):
        return sqlite_leftovers(url.removeprefix("sqlite:///"), marks)
    return await redis_leftovers(url, marks)
