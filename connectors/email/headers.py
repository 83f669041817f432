"""What a header value taken from a stranger's mail may contain, in and out.

Guarantees, for the values these functions return:

- :func:`header_text` (display names, subjects): no control character (C0, DEL, C1 — so
  no CR, LF or NUL), no Unicode line or paragraph separator, whitespace runs collapsed to
  one space, and no ``=?``. The last matters as much as CR/LF: the stdlib generator
  re-parses every header value it folds and decodes RFC 2047 encoded-words wherever it
  finds them (inside a word, a quoted string, a dot-atom), so text that merely *looks*
  encoded — an encoded-word inside an encoded-word, decoded once on the way in — would be
  decoded into raw CR/LF on the way out. ``=?`` becomes ``= ?``; nothing else changes.
- :func:`checked_address`: a plain ``local@domain`` addr-spec (dot-atom local part,
  hostname domain) that the stdlib parses back to itself, or :class:`AddressRefused`.
  Quoted local parts and address literals are refused: they are where encoded-words and
  CR/LF hide, and no customer of a support desk needs them.
- :func:`checked_message_id`: an RFC 5322 msg-id (``id-left@id-right``, printable ASCII,
  no ``=?``) without brackets, or ``None``.
- :func:`verify_header_block`: a generated message's header block is exactly the headers
  we meant to write, each once, with no bare CR, LF or NUL — the last line of defence
  whatever the Python version's folder does.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.headerregistry import Address

__all__ = [
    "AddressRefused",
    "HeaderBlockRefused",
    "checked_address",
    "checked_message_id",
    "decode_words",
    "header_text",
    "is_unsafe",
    "verify_header_block",
]

_LINE_BREAKING = frozenset({"Cc", "Zl", "Zp", "Cs"})  # controls, separators, lone surrogates
_WHITESPACE = re.compile(r"\s+")
# Anything header_text would change beyond whitespace: a control, a separator, "=?".
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]|=\?")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_MESSAGE_ID = re.compile(
    rf"(?:{_ATEXT}|\.){{1,200}}@(?:(?:{_ATEXT}|\.){{1,200}}|\[[!-Z^-~]{{0,200}}\])", re.ASCII
)
# RFC 6531 allows UTF-8 in addresses; letters and digits of any script are accepted.
_LOCAL_PART = re.compile(r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]|[^\x00-\x7f\W])+")
_LABEL = re.compile(r"(?!-)(?:[A-Za-z0-9-]|[^\x00-\x7f\W]){1,63}(?<!-)")


class AddressRefused(ValueError):
    """Not an address we write into a header or an SMTP envelope."""


class HeaderBlockRefused(ValueError):
    """A generated message's header block is not the one we meant to write."""


def is_unsafe(value: str) -> bool:
    """Whether :func:`header_text` has to remove something other than extra whitespace."""
    return _UNSAFE.search(value) is not None


def header_text(value: str, *, limit: int = 998) -> str:
    """``value`` made safe to write as (part of) a header: see the module docstring."""
    chars = (" " if unicodedata.category(c) in _LINE_BREAKING else c for c in value)
    text = _WHITESPACE.sub(" ", "".join(chars)).replace("=?", "= ?").strip()
    return text[:limit].rstrip()


def decode_words(value: str) -> str:
    """RFC 2047 encoded-words in raw header text decoded, as far as they can be."""
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return value


def checked_address(value: str) -> str:
    """``value`` (already normalised) if it is an address we may write; else refuse it."""
    local, at, domain = value.rpartition("@")
    if not at or len(local) > 64 or len(domain) > 253 or is_unsafe(value):
        raise AddressRefused("not a usable email address")
    if not all(_LOCAL_PART.fullmatch(part) for part in local.split(".")):
        raise AddressRefused("not a usable email address (local part)")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise AddressRefused("not a usable email address (domain)")
    try:  # the stdlib's reading must be ours too: it is what writes the To header
        parsed = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise AddressRefused("not a usable email address") from exc
    if parsed.addr_spec != value:
        raise AddressRefused("not a usable email address (does not read back)")
    return value


def checked_message_id(value: str) -> str | None:
    """``value`` (without brackets) if it is a msg-id we may write into a header."""
    if "=?" in value or _MESSAGE_ID.fullmatch(value) is None:
        return None
    return value


def verify_header_block(data: bytes, expected: Iterable[str]) -> None:
    """Refuse ``data`` unless its header block holds exactly ``expected`` headers, each once."""
    head, blank, _ = data.partition(b"\r\n\r\n")
    if not blank:
        raise HeaderBlockRefused("no end of the header block")
    if any(c in head.replace(b"\r\n", b"") for c in (b"\r", b"\n", b"\x00")):
        raise HeaderBlockRefused("a bare CR, LF or NUL in the header block")
    names: list[str] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue  # a folded continuation of the header above
        name, colon, _ = line.partition(b":")
        if not colon:
            raise HeaderBlockRefused("a header line without a name")
        names.append(name.decode("ascii", "replace").lower())
    wanted = sorted(name.lower() for name in expected)
    if sorted(names) != wanted:
        raise HeaderBlockRefused(f"unexpected headers: {sorted(set(names) - set(wanted))}")
