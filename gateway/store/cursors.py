"""The one place a caller's cursor (``after=``) or entry id is checked before a store sees it.

Cursors come from outside (a client's ``?after=``, an operator's dead-letter handle), so
every store refuses the same malformed ones the same way: :class:`~gateway.errors.CursorError`
(a 400), raised before any store call. Without this, Redis answered a too-large id with a
command error, which became a 503 ``store_unavailable`` that clients retried forever, while
SQLite overflowed and the memory store quietly read from the start.

The shapes, per kind of id:

- **log ids** (``read_log``, every store): ASCII decimal, at most :data:`MAX_LOG_ID`
  (2**53 - 1: exact in a Redis Lua number and in a JavaScript client);
- **stream ids** in SQLite and memory: ASCII decimal, at most 2**63 - 1 (SQLite's INTEGER);
- **stream ids** in Redis: ``<ms>`` or ``<ms>-<seq>``, each part at most 2**64 - 1.

A well-formed id that names nothing (trimmed away, never issued) is not an error: reads
after it follow each method's documented semantics.
"""

from __future__ import annotations

import re

from gateway.errors import CursorError

__all__ = ["MAX_LOG_ID", "decimal_id", "log_cursor", "redis_stream_id"]

MAX_LOG_ID = 2**53 - 1
_MAX_DECIMAL_ID = 2**63 - 1
_MAX_REDIS_PART = 2**64 - 1
_DECIMAL = re.compile(r"[0-9]{1,20}")
_REDIS_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")


def _decimal(value: str, maximum: int) -> int | None:
    # re.ASCII semantics by construction: [0-9] never matches other scripts' digits, which
    # str.isdigit() and int() would accept.
    if _DECIMAL.fullmatch(value) is None:
        return None
    number = int(value)
    return number if number <= maximum else None


def log_cursor(after: str | None) -> int | None:
    """The log id ``after`` names (None: from the oldest kept), or :class:`CursorError`."""
    if after is None:
        return None
    number = _decimal(after, MAX_LOG_ID)
    if number is None:
        raise CursorError()
    return number


def decimal_id(entry_id: str | None, *, strict: bool = True) -> int | None:
    """A SQLite/memory stream id as an integer.

    With ``strict`` a malformed id raises :class:`CursorError`; without it the answer is
    None (an id that cannot exist names no entry: a lookup finds nothing).
    """
    if entry_id is None:
        return None
    number = _decimal(entry_id, _MAX_DECIMAL_ID)
    if number is None and strict:
        raise CursorError()
    return number


def redis_stream_id(entry_id: str, *, strict: bool = True) -> str | None:
    """``entry_id`` if it is a Redis stream id; else :class:`CursorError` (or None)."""
    match = _REDIS_ID.fullmatch(entry_id)
    if match is not None and all(
        int(part) <= _MAX_REDIS_PART for part in match.groups() if part is not None
    ):
        return entry_id
    if strict:
        raise CursorError()
    return None
