"""One admin change to a stored overlay (the tenants', the personas'): checked whole, stored
by compare-and-set, applied in this process before the answer.

Guarantees: nothing is stored unless ``check`` accepts the overlay the change makes (its
problems are a 422 with ``reason``, each by path, and the audit row counts them); a writer
that keeps losing the race gets a 409; a change stored but not applied here (the apply
failed) is logged and left to the poll that applies it in every process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from gateway.admin.operation import ApiError, Call
from gateway.errors import ConfigError
from gateway.observability import get_logger
from gateway.versioned_document import (
    Committed,
    StoredDefinition,
    VersionedDocument,
    commit_checked,
)

__all__ = ["change_made", "changed_fields", "commit_change", "stored_definition"]

log = get_logger(__name__)

Doc = TypeVar("Doc", bound=BaseModel)
Checked = TypeVar("Checked")


async def commit_change(
    call: Call,
    document: VersionedDocument[Doc],
    change: Callable[[Doc], Doc],
    check: Callable[[Doc], Checked],
    apply: Callable[[int, Checked], Awaitable[None]],
    *,
    reason: str,
    what: str,
) -> Committed[Doc, Checked]:
    """Store ``change(stored)`` once ``check`` accepts it, and apply it here."""

    def checked(candidate: Doc) -> Checked:
        try:
            return check(candidate)
        except ConfigError as exc:
            call.audit_detail = {"refused": len(exc.problems)}
            listed = "; ".join(f"{path}: {message}" for path, message in exc.problems)
            raise ApiError(422, reason, listed[:2000], exc.problems[:100]) from exc

    committed = await commit_checked(call.store, document, change, checked)
    if committed is None:
        raise ApiError(409, "conflict", f"the {what} kept changing under this request; retry")
    try:
        await apply(committed.version, committed.checked)
    except Exception as exc:  # noqa: BLE001 - stored already; the poll tries again
        log.error(f"{what}.apply_failed", version=committed.version, error=repr(exc)[:500])
    return committed


def stored_definition(
    call: Call, definition: dict[str, Any] | None, *, disabled: bool
) -> StoredDefinition:
    """What a change stores: the block (None: keep none), by whom and when."""
    return StoredDefinition(
        definition=definition,
        disabled=disabled,
        updated_at=datetime.now(UTC),
        updated_by=call.key.id,
    )


def change_made(previous: StoredDefinition | None, *, in_files: bool) -> str:
    """What a PUT did, for the audit: ``enabled``, ``replaced`` or ``created``."""
    if previous is not None and previous.disabled:
        return "enabled"
    if previous is not None or in_files:
        return "replaced"
    return "created"


def changed_fields(model: type[BaseModel], before: object | None, after: object) -> list[str]:
    """The fields that differ, by name only: no value (a secret, a prompt) reaches the audit."""
    return [
        name
        for name in model.model_fields
        if before is None or getattr(before, name) != getattr(after, name)
    ]
