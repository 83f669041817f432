"""One document in the store changed only by a checked compare-and-set.

What the admin API defines at run time (tenants, personas) is kept as one document per
kind, so a change is checked against everything stored and stored in one atomic step.
:class:`VersionedDocument` reads and writes such a document; :func:`commit_checked` is the
loop every such change runs.

Guarantees:

- a write lands only if the document is still at the version the change was computed
  from (:meth:`VersionedDocument.write`); the same commit bumps the document's counter,
  the key every process polls, so no process can see the one without the other;
- :func:`commit_checked` computes the change on what is stored, checks the result
  *before* writing, and on a lost race starts again from what the other writer stored
  (checked again), so of two racing admins neither change is lost silently: after
  :data:`ATTEMPTS` lost races it gives up and says so (``None``), never overwrites.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from gateway.store import Commit, StateWrite, Store

__all__ = ["ATTEMPTS", "Committed", "StoredDefinition", "VersionedDocument", "commit_checked"]

Doc = TypeVar("Doc", bound=BaseModel)
Checked = TypeVar("Checked")

# Compare-and-set attempts before giving up: each lost race means another admin just
# wrote, so with a short random pause between them only a storm of writers runs out.
ATTEMPTS = 20
_PAUSE_SECONDS = 0.05


class StoredDefinition(BaseModel):
    """One tenant or persona as the admin API left it, in its kind's document."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The block as the file would hold it (with its ``id`` or ``name``); None for one of the
    # file's that was only ever disabled.
    definition: dict[str, Any] | None = None
    disabled: bool = False
    updated_at: datetime
    updated_by: str  # the API key's id


@dataclass(frozen=True, slots=True)
class VersionedDocument(Generic[Doc]):
    """The document of type ``model`` at ``key``, its writes counted at ``counter``."""

    model: type[Doc]
    key: str
    counter: str

    async def read(self, store: Store) -> tuple[Doc, int]:
        """The stored document and its version (0 and an empty document: nothing stored)."""
        found = await store.get_state(self.key)
        if found is None:
            return self.model(), 0
        return self.model.model_validate_json(found.value), found.version

    async def write(self, store: Store, document: Doc, *, expected_version: int) -> int | None:
        """Store ``document`` if the stored one is still at ``expected_version``; its new
        version, or None when another write came first (nothing changed)."""
        return await store.commit(
            Commit(
                state=StateWrite(
                    key=self.key,
                    value=document.model_dump_json().encode(),
                    expected_version=expected_version,
                ),
                counters=[(self.counter, 1, None)],
            )
        )


@dataclass(frozen=True, slots=True)
class Committed(Generic[Doc, Checked]):
    """A change stored: the document before it, what the check made of it, its version."""

    previous: Doc
    checked: Checked
    version: int


async def commit_checked(
    store: Store,
    document: VersionedDocument[Doc],
    change: Callable[[Doc], Doc],
    check: Callable[[Doc], Checked],
) -> Committed[Doc, Checked] | None:
    """Store ``change(stored)`` once ``check`` accepts it (an exception from ``check``
    propagates and nothing is stored); None when other writers kept winning the race."""
    for _ in range(ATTEMPTS):
        stored, version = await document.read(store)
        candidate = change(stored)
        checked = check(candidate)
        written = await document.write(store, candidate, expected_version=version)
        if written is not None:
            return Committed(previous=stored, checked=checked, version=written)
        await asyncio.sleep(random.uniform(0, _PAUSE_SECONDS))  # noqa: S311 - jitter, not a key
    return None
