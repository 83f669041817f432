"""The Redis store's streams, consumer groups and capped logs.

Guarantees: streams are Redis Streams, so consumer groups, pending lists and reclaiming are
Redis's own (``XREADGROUP``/``XACK``/``XAUTOCLAIM``); an admit claims its dedupe key and
appends its entry in one atomic step; a claimed entry reports how often it was delivered;
blocking reads run on their own connection pool, so long polls never hold the connections
the hot path needs, and a server that stops answering surfaces as :class:`StoreError`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from functools import partial
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from gateway.errors import StoreError
from gateway.store.base import Admission, StreamEntry
from gateway.store.cursors import log_cursor, redis_stream_id
from gateway.store.redis_cluster import by_slot
from gateway.store.redis_pipeline import (
    COMMAND_TIMEOUT,
    FIELD,
    REDIS_ERRORS,
    AdmitCall,
    RedisPipeline,
    raw_command,
    store_errors,
    text,
    to_ms,
)

__all__ = ["RedisStreams"]


def _payload(fields: list[bytes]) -> bytes:
    """The payload field of a stream entry's flat ``[field, value, ...]`` list."""
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == FIELD:
            return fields[i + 1]
    raise StoreError("redis stream entry without its payload field")


class RedisStreams(RedisPipeline):
    """Ingest, streams and logs of :class:`gateway.store.redis.RedisStore`."""

    # -- ingest --------------------------------------------------------------------------------
    async def admit(self, items: Sequence[Admission], *, dedupe_ttl: float) -> list[str | None]:
        self._check_open()
        if not items:
            return []
        fut: asyncio.Future[list[str | None]] = asyncio.get_running_loop().create_future()
        self._admits.append(
            AdmitCall(items, to_ms(dedupe_ttl), fut, [None] * len(items), len(items))
        )
        self._kick()
        return await fut

    async def claim(self, key: str, *, ttl: float, holder: bytes = b"1") -> bool:
        return bool(await self._pipelined("SET", key, holder, "NX", "PX", to_ms(ttl)))

    # -- streams -------------------------------------------------------------------------------
    async def append(self, stream: str, payload: bytes, *, maxlen: int | None = None) -> str:
        trim = () if maxlen is None else ("MAXLEN", maxlen)
        return text(
            await self._pipelined("XADD", stream, *trim, "*", FIELD, payload, replicated=True)
        )

    async def ensure_group(self, stream: str, group: str) -> None:
        self._check_open()
        try:
            await raw_command(self._client, "XGROUP", "CREATE", stream, group, "0", "MKSTREAM")
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise StoreError(f"redis XGROUP CREATE failed: {exc}") from exc
        except REDIS_ERRORS as exc:
            raise StoreError(f"redis XGROUP CREATE failed: {exc}") from exc

    async def read_group(
        self,
        streams: Sequence[str],
        *,
        group: str,
        consumer: str,
        count: int,
        block: float,
    ) -> list[tuple[str, StreamEntry]]:
        self._check_open()
        names = list(dict.fromkeys(streams))
        if not names:
            await asyncio.sleep(block)
            return []
        read = partial(self._read_streams, group=group, consumer=consumer, count=count)
        if self._slot_reads is not None:
            # Always through SlotReads, one slot too: it also ends the reads kept from an
            # earlier call over streams this one no longer names.
            return await self._slot_reads.read(
                by_slot(names), group=group, consumer=consumer, block=block, read_batch=read
            )
        return await read(names, block)

    async def _read_streams(
        self, names: list[str], block: float, *, group: str, consumer: str, count: int
    ) -> list[tuple[str, StreamEntry]]:
        """One XREADGROUP over ``names`` (on a cluster: streams of one slot)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block
        for attempt in range(2):
            remaining = deadline - loop.time()
            blocking = ("BLOCK", to_ms(remaining)) if remaining > 0 else ()
            if self._wire is not None:
                read = self._wire_read(names, blocking, max(remaining, 0), group, consumer, count)
                found = await read
                if found is None and attempt == 0:
                    continue  # the group was missing and is made now
                return found or []
            client = self._blocking if blocking else self._client
            # On a cluster, name the node: redis-py would otherwise ask a node for the keys
            # of every XREADGROUP (COMMAND GETKEYS), a second round trip per read.
            try:
                node = (
                    {"target_nodes": client.get_node_from_key(names[0])}
                    if isinstance(client, RedisCluster)
                    else {}
                )
                async with asyncio.timeout(max(remaining, 0) + COMMAND_TIMEOUT):
                    reply = await client.execute_command(
                        "XREADGROUP", "GROUP", group, consumer, "COUNT", count,
                        *blocking, "STREAMS", *names, *(">" * len(names)), **node,
                    )  # fmt: skip
            except TimeoutError as exc:
                raise StoreError("redis XREADGROUP did not answer in time") from exc
            except ResponseError as exc:
                if attempt == 0 and str(exc).startswith("NOGROUP"):
                    # Like the reference store: a missing group reads from the stream start.
                    for name in names:
                        await self.ensure_group(name, group)
                    continue
                raise StoreError(f"redis XREADGROUP failed: {exc}") from exc
            except REDIS_ERRORS as exc:
                raise StoreError(f"redis XREADGROUP failed: {exc}") from exc
            return [
                (text(name), StreamEntry(text(entry_id), fields[FIELD], 1))
                for name, entries in reply or ()
                for entry_id, fields in entries
                if fields  # only a re-read of history can yield deleted (empty) entries
            ]
        return []

    async def _wire_read(
        self,
        names: list[str],
        blocking: tuple[Any, ...],
        block: float,
        group: str,
        consumer: str,
        count: int,
    ) -> list[tuple[str, StreamEntry]] | None:
        """:meth:`_read_streams` over the hot-path connections; None: the group was missing
        and has been made (the caller reads again)."""
        args = (
            "XREADGROUP", "GROUP", group, consumer, "COUNT", count,
            *blocking, "STREAMS", *names, *(">" * len(names)),
        )  # fmt: skip
        try:
            if blocking:
                reply = await self._blocking_call(*args, timeout=block)
            else:
                reply = await self._pipelined(*args)
        except StoreError as exc:
            if "NOGROUP" not in str(exc):
                raise StoreError(f"redis XREADGROUP failed: {exc}") from exc
            # Like the reference store: a missing group reads from the stream start.
            for name in names:
                await self.ensure_group(name, group)
            return None
        # RESP2 as the server sends it: [[stream, [[id, [field, value, ...]], ...]], ...]
        return [
            (text(name), StreamEntry(text(entry_id), _payload(fields), 1))
            for name, entries in reply or ()
            for entry_id, fields in entries
            if fields  # only a re-read of history can yield deleted (empty) entries
        ]

    async def claim_pending(
        self, stream: str, *, group: str, consumer: str, min_idle: float, count: int
    ) -> list[StreamEntry]:
        self._check_open()
        out: list[StreamEntry] = []
        cursor: Any = "0-0"
        idle_ms = max(0, math.ceil(min_idle * 1000))
        while len(out) < count:
            try:
                with store_errors("XAUTOCLAIM"):
                    reply = await self._claim_script(
                        keys=[stream], args=[group, consumer, idle_ms, cursor, count - len(out)]
                    )
            except StoreError as exc:
                if "NOGROUP" in str(exc):
                    return out  # no group, nothing pending
                raise
            cursor, claimed = reply[0], reply[1:]
            out.extend(StreamEntry(text(i), payload, int(n)) for i, payload, n in claimed)
            if text(cursor) == "0-0":  # scanned the whole pending list
                break
        return out

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        return int(await self._pipelined("XACK", stream, group, *ids))

    async def _group_info(self, stream: str, group: str) -> tuple[bool, dict[str, Any] | None]:
        """``(stream exists, XINFO GROUPS entry of group or None)``."""
        self._check_open()
        try:
            groups = await self._client.xinfo_groups(stream)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return False, None
            raise StoreError(f"redis XINFO GROUPS failed: {exc}") from exc
        except REDIS_ERRORS as exc:
            raise StoreError(f"redis XINFO GROUPS failed: {exc}") from exc
        info: dict[str, Any] | None = next((g for g in groups if text(g["name"]) == group), None)
        return True, info

    async def backlog(self, stream: str, group: str) -> int:
        exists, info = await self._group_info(stream, group)
        if not exists:
            return 0
        with store_errors("backlog"):
            if info is None:
                return int(await self._client.xlen(stream))
            lag = info.get("lag")
            if lag is None:  # unknown after deletions (or on Redis < 7): count it
                lag = await self._count_after_script(
                    keys=[stream], args=[info["last-delivered-id"]]
                )
            return int(info["pending"]) + int(lag)

    async def range(
        self, stream: str, *, after: str | None = None, count: int = 100
    ) -> list[StreamEntry]:
        self._check_open()
        start = "-" if after is None else f"({redis_stream_id(after)}"
        with store_errors("XRANGE"):
            rows = await raw_command(self._client, "XRANGE", stream, start, "+", "COUNT", count)
        return [StreamEntry(text(i), fields[FIELD]) for i, fields in rows]

    # -- logs ----------------------------------------------------------------------------------
    async def append_log(self, key: str, payload: bytes, *, cap: int) -> str:
        script = self._append_log_script
        return text(
            await self._pipelined(
                *self._evalsha(script, [key], [payload, cap]), script=script, replicated=True
            )
        )

    async def read_log(
        self, key: str, *, after: str | None = None, count: int = 100
    ) -> list[StreamEntry]:
        floor = log_cursor(after) or 0
        script = self._read_log_script
        rows = await self._pipelined(*self._evalsha(script, [key], [floor, count]), script=script)
        out: list[StreamEntry] = []
        for row in rows:
            entry_id, _, payload = bytes(row).partition(b":")
            out.append(StreamEntry(entry_id.decode(), payload))
        return out

    async def get_entry(self, stream: str, entry_id: str) -> StreamEntry | None:
        self._check_open()
        if redis_stream_id(entry_id, strict=False) is None:
            return None
        with store_errors("XRANGE"):
            rows = await raw_command(self._client, "XRANGE", stream, entry_id, entry_id, "COUNT", 1)
        return StreamEntry(text(rows[0][0]), rows[0][1][FIELD]) if rows else None

    async def trim_acknowledged(self, stream: str, group: str) -> int:
        # Everything below the bound was delivered and acknowledged when it was read, and an
        # acknowledgement is final, so reading and trimming need not be one atomic step.
        _, info = await self._group_info(stream, group)
        if info is None:
            return 0
        with store_errors("XTRIM"):
            summary = await self._client.xpending(stream, group)
            if int(summary["pending"]) > 0:
                bound = text(summary["min"])
            else:
                ms, _, seq = text(info["last-delivered-id"]).partition("-")
                bound = f"{ms}-{int(seq or 0) + 1}"
            return int(await raw_command(self._client, "XTRIM", stream, "MINID", bound))

    async def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        wanted = [i for i in ids if redis_stream_id(i, strict=False) is not None]
        if not wanted:
            return 0
        return int(await self._pipelined("XDEL", stream, *wanted))
