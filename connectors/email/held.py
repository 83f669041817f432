"""The bytes of a parsed mail's attachments, held from its parse to its media fetch.

The worker parses a stored mail (:meth:`EmailConnector.parse`) and, in the same task right
after, asks the connector for each attachment's bytes (``media_fetch``, then the media
keeper judges and stores them). The parse has just decoded them from the stored raw
message, so they are held here rather than decoded a second time, and never written to
the store with the message.

Guarantees: an entry is handed out per attachment and dropped once every attachment of
its message was asked for; whatever is never asked for (downloads off, a turn that
stopped early) is dropped after ``max_age`` seconds or when the held bytes pass
``max_bytes``, oldest first, so memory stays bounded by a few mails whatever happens.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["HeldFiles"]


@dataclass(slots=True)
class _Entry:
    files: dict[int, bytes]
    size: int
    at: float = field(default_factory=time.monotonic)


class HeldFiles:
    def __init__(self, *, max_bytes: int = 128 * 1024 * 1024, max_age: float = 300.0) -> None:
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return len(self._entries)

    def hold(self, message_id: str, data: Sequence[bytes | None]) -> None:
        files = {n: d for n, d in enumerate(data) if d is not None}
        self.drop(message_id)
        self._expire()
        if not files:
            return
        entry = _Entry(files, sum(len(d) for d in files.values()))
        self._entries[message_id] = entry
        self._size += entry.size
        while self._size > self.max_bytes and len(self._entries) > 1:
            self.drop(next(iter(self._entries)))

    def take(self, message_id: str, part: int) -> bytes | None:
        """The bytes of attachment ``part`` of the message, once."""
        entry = self._entries.get(message_id)
        if entry is None:
            return None
        data = entry.files.pop(part, None)
        if data is not None:
            entry.size -= len(data)
            self._size -= len(data)
        if not entry.files:
            del self._entries[message_id]
        return data

    def drop(self, message_id: str) -> None:
        entry = self._entries.pop(message_id, None)
        if entry is not None:
            self._size -= entry.size

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.max_age
        while self._entries:
            oldest_id, oldest = next(iter(self._entries.items()))
            if oldest.at >= cutoff:
                break
            self.drop(oldest_id)
