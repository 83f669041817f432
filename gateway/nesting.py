"""How deeply a JSON document nests, measured without a recursive parser.

A body nested thousands of levels deep makes ``json.loads`` raise ``RecursionError`` (a 500
if nobody catches it), and one a few hundred levels deep parses at the edge but not when the
worker reads its inbox entry back (pydantic-core stops at 200 levels): it would be
acknowledged and then dead-lettered. The edge therefore refuses any body — or form field —
nested deeper than ``http.max_json_depth`` before a connector parses it (form fields:
only those a route declares as JSON).

The measure runs at C speed: a body with no more brackets than the limit is done after two
``bytes.count`` calls; otherwise strings are cut out with one regular expression (linear:
it never backtracks) and the brackets left are summed with ``itertools.accumulate``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from itertools import accumulate
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["form_too_deep", "json_too_deep", "value_too_deep"]

# A JSON string, or an unterminated one running to the end: each match is found from its
# first quote in one pass, so hostile input cannot make the search quadratic.
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
_KEEP_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def json_too_deep(body: bytes, limit: int) -> bool:
    """True when the arrays and objects in ``body`` nest more than ``limit`` levels."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    if b'"' in body:
        body = _STRING.sub(b"", body)
    brackets = body.translate(None, _KEEP_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def form_too_deep(body: bytes, limit: int, fields: Collection[str]) -> bool:
    """True when one of ``fields`` of a url-encoded form holds JSON nested deeper than ``limit``.

    Only the fields a connector parses as JSON are measured: any other field is text, and a
    customer may type as many brackets as they like.
    """
    if (
        not fields
        or body.count(b"%5B") + body.count(b"%7B") + body.count(b"[") + body.count(b"{") <= limit
    ):
        return False  # the fast path: too few brackets, encoded or not, to matter
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return False  # not a form: the connector refuses it with its own reason
    return any(json_too_deep(value.encode(), limit) for name, value in pairs if name in fields)


def value_too_deep(value: Any, limit: int) -> bool:
    """True when an already parsed JSON value nests more than ``limit`` levels."""
    level: list[Iterable[Any]] = [[value]]
    depth = 0
    while level:
        children: list[Iterable[Any]] = []
        for items in level:
            for item in items:
                if isinstance(item, dict):
                    children.append(item.values())
                elif isinstance(item, list):
                    children.append(item)
        if children:
            depth += 1
            if depth > limit:
                return True
        level = children
    return False
