"""The stdlib ``email`` policies the channel reads and writes mail with, made cheaper.

Guarantee: a message read or written with these policies is the same, byte for byte and
value for value, as with ``policy.default`` / ``policy.SMTP``; only repeated work is cut.
The stdlib's header factory (``HeaderRegistry``) makes a new class with ``type(...)`` for
every header it builds — more CPU than parsing most header values, and garbage for the
cycle collector. :class:`HeaderClasses` makes each class once: a class depends only on the
registered class it wraps, so there are as many as the registry names.
"""

from __future__ import annotations

from email import policy
from email.headerregistry import HeaderRegistry

__all__ = ["SMTP_WRITE", "HeaderClasses"]


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


SMTP_WRITE = policy.SMTP.clone(header_factory=HeaderClasses())
"""``policy.SMTP`` (CRLF line ends, RFC 5322 headers) for the replies we compose."""
