"""The stdlib ``email`` policies the channel reads and writes mail with, made cheaper.

Guarantee: a message read with :class:`HeaderClasses` is the same, value for value, as
with ``policy.default``; a reply written with :data:`REPLY_WRITE` is the same, byte for byte,
as with ``policy.compat32`` at CRLF line ends and 78 columns. Only repeated work is cut:

- The stdlib's header factory (``HeaderRegistry``) makes a new class with ``type(...)`` for
  every header it builds — more CPU than parsing most header values, and garbage for the
  cycle collector. :class:`HeaderClasses` makes each class once: a class depends only on
  the registered class it wraps, so there are as many as the registry names.
- ``compat32`` runs every header through ``email.header.Header`` to fold it, a third of a
  reply's composition; a header line that is already short ASCII folds to itself, so
  :class:`_ReplyWrite` writes it as it is and leaves every other value to ``Header``.
"""

from __future__ import annotations

from email.headerregistry import HeaderRegistry
from email.policy import Compat32

__all__ = ["REPLY_WRITE", "HeaderClasses"]


class HeaderClasses(HeaderRegistry):
    """``HeaderRegistry``, with each header class made once."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[type, type] = {}

    def __getitem__(self, name: str) -> type:
        cls = self.registry.get(name.lower(), self.default_class)
        made = self._made.get(cls)
        if made is None:
            made = self._made[cls] = super().__getitem__(name)
        return made


class _ReplyWrite(Compat32):
    """``compat32``, with a short single-line ASCII header written without ``Header``."""

    def _fold(self, name: str, value: object, sanitize: bool) -> str:
        limit = self.max_line_length
        if (
            isinstance(value, str)
            and value.isascii()
            and value.isprintable()  # no CR, LF or other control that Header would treat
            and value == value.strip()
            and limit is not None
            and len(name) + 2 + len(value) <= limit
        ):
            return f"{name}: {value}{self.linesep}"
        folded: str = super()._fold(name, value, sanitize)  # type: ignore[misc] # untyped in typeshed
        return folded


REPLY_WRITE = _ReplyWrite(linesep="\r\n", max_line_length=78)
"""``compat32`` at CRLF line ends and 78 columns: how the replies are written."""
