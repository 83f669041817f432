"""Validating what can be validated of a configuration that has schema errors.

``flowbiz check`` reports every problem of a file in one run. Pydantic finds the schema
errors, but the checks that need a validated model (an unknown plan, two tenants with one
id, a persona nobody defines, a model's own check of its keys together) could only run once
the whole file validated, so a user met them one run after another. :func:`salvage`
validates, and on failure removes from a copy of the data exactly what each error points at
— the key (its default then applies) or, when what is missing is required, the list element
or mapping entry that lacks it — and validates again, until the rest validates or nothing is
left to remove. What is not wrong in itself but stands in the way (an environment variable
not set where the check runs) is let pass by a lenient validation instead of removed.

Guarantees:

- the caller's data is never changed;
- every problem returned is one pydantic reported, at its path in the file as written; an
  error that could only show once its neighbours validated (a model's own check) is
  reported, unless it concerns a key this salvage removed or put a default in place of
  (a "missing" key it removed, a check that saw that default);
- :class:`Removals` turns a path in the salvaged model back into the path in the file
  (``tenants.1.plan`` is ``tenants.2.plan`` when tenant 0 was removed) and says which paths
  now hold a default instead of what the file wrote, so that a check on the salvaged model
  never reports what only the removal caused. A salvaged model is for checks, never served.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

__all__ = ["Removals", "Salvaged", "salvage"]

ModelT = TypeVar("ModelT")

KeyPath = tuple[str, ...]  # keys and list indices, as strings: ("tenants", "0", "plan")


@dataclass(slots=True)
class Removals:
    """What was removed from the data, in the file's coordinates."""

    # For a list that lost elements (keyed by its path in the file): the file's indices of
    # the elements that remain, in order.
    kept: dict[KeyPath, list[int]] = field(default_factory=dict)
    removed: set[KeyPath] = field(default_factory=set)

    def to_file(self, path: KeyPath) -> KeyPath:
        """A path in the salvaged data as the path of the same element in the file."""
        out: list[str] = []
        for segment in path:
            kept = self.kept.get(tuple(out))
            if kept is not None and segment.isdigit() and int(segment) < len(kept):
                segment = str(kept[int(segment)])
            out.append(segment)
        return tuple(out)

    def original(self, dotted: str) -> str:
        """:meth:`to_file` for a dotted problem path (``tenants.1.plan``)."""
        return ".".join(self.to_file(tuple(dotted.split("."))))

    def shadowed(self, dotted_in_file: str) -> bool:
        """Whether this file path is, or lies under, something removed (now a default)."""
        parts = tuple(dotted_in_file.split("."))
        return any(parts[: len(r)] == r for r in self.removed)

    def touches(self, path_in_file: KeyPath) -> bool:
        """Whether this path is, holds or lies under something removed."""
        return any(
            path_in_file[: len(r)] == r or r[: len(path_in_file)] == path_in_file
            for r in self.removed
        )

    def merge(self, inner: Removals, prefix: KeyPath) -> None:
        """Take in the removals of a part salvaged on its own (a channel block) at ``prefix``."""
        self.removed |= {(*prefix, *r) for r in inner.removed}
        self.kept |= {(*prefix, *k): v for k, v in inner.kept.items()}

    def keep(self, list_in_file: KeyPath, indices: list[int]) -> None:
        """Record that the list at this file path holds only these of its elements."""
        self.kept[list_in_file] = indices


@dataclass(frozen=True, slots=True)
class Salvaged(Generic[ModelT]):
    model: ModelT | None  # None: nothing at all validated (the root itself is wrong)
    problems: list[tuple[str, str]]
    removals: Removals


def _loc(parts: KeyPath) -> str:
    return ".".join(parts) or "(root)"


def salvage(
    validate: Callable[[Any], ModelT],
    data: Any,
    *,
    lenient: Callable[[Any], ModelT] | None = None,
) -> Salvaged[ModelT]:
    """``validate(data)``, and on schema errors what is left without them.

    ``lenient`` validates the same data but lets pass what stands in the way of the rest
    without being wrong in itself (an environment variable not set where the check runs):
    its problems come from ``validate``, and the salvage continues with ``lenient``.
    """
    data = copy.deepcopy(data)
    try:
        return Salvaged(validate(data), [], Removals())
    except ValidationError as exc:
        strict = [(_loc(tuple(str(p) for p in e["loc"])), e["msg"]) for e in exc.errors()]
    found = _salvage(lenient or validate, data)
    refused = [tuple(path.split(".")) for path, _ in strict]
    extra = [
        (path, message)
        for path, message in found.problems
        if not any(tuple(path.split("."))[: len(r)] == r for r in refused)
    ]
    return Salvaged(found.model, strict + extra, found.removals)


def _salvage(validate: Callable[[Any], ModelT], data: Any) -> Salvaged[ModelT]:
    removals = Removals()
    problems: list[tuple[str, str]] = []
    while True:
        try:
            return Salvaged(validate(data), problems, removals)
        except ValidationError as exc:
            errors = exc.errors()
        targets: set[KeyPath] = set()
        for error in errors:
            where = tuple(str(p) for p in error["loc"])
            in_file = removals.to_file(where)
            # A model's own check that ran on a default standing in for a refused key, or a
            # required key this salvage removed, says nothing about the file.
            if not removals.touches(in_file):
                problems.append((_loc(in_file), error["msg"]))
            targets.add(_existing_prefix(data, where, whole=error["type"] != "missing"))
        # Deepest and latest first, so one removal never shifts the index of another.
        removed = [_remove(data, t, removals) for t in sorted(targets, key=_order, reverse=True)]
        if not any(removed):  # the root itself is wrong: nothing can be salvaged
            return Salvaged(None, problems, removals)


def _order(path: KeyPath) -> tuple[tuple[int, int, str], ...]:
    return tuple((1, int(p), "") if p.isdigit() else (0, 0, p) for p in path)


def _existing_prefix(data: Any, where: KeyPath, *, whole: bool) -> KeyPath:
    """The longest prefix of ``where`` that exists in ``data``; for a missing key (``whole``
    false) the element lacking it, since a required key cannot fall back to a default."""
    node, found = data, []
    for segment in where:
        if isinstance(node, dict) and segment in node:
            node = node[segment]
        elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
            node = node[int(segment)]
        else:
            break
        found.append(segment)
    if not whole and len(found) == len(where):
        found.pop()  # the key exists but is reported missing: remove its holder
    return tuple(found)


def _remove(data: Any, target: KeyPath, removals: Removals) -> bool:
    """Remove what ``target`` points at (the root cannot be); whether anything was."""
    if not target:
        return False
    holder = data
    for segment in target[:-1]:
        holder = holder[int(segment)] if isinstance(holder, list) else holder[segment]
    last = target[-1]
    if isinstance(holder, list) and int(last) < len(holder):
        in_file = removals.to_file(target[:-1])
        kept = removals.kept.setdefault(in_file, list(range(len(holder))))
        removals.removed.add((*in_file, str(kept.pop(int(last)))))
        del holder[int(last)]
        return True
    if isinstance(holder, dict) and last in holder:
        removals.removed.add(removals.to_file(target))
        del holder[last]
        return True
    return False
