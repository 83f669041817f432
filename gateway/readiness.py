"""Whether this process is ready to serve: the verdict of ``/readyz``, in one place so the
operations endpoint and the console's health page say the same thing."""

from __future__ import annotations

from gateway.errors import StoreError
from gateway.runtime import Runtime

__all__ = ["readiness_problems"]


async def readiness_problems(rt: Runtime) -> list[str]:
    """Why ``/readyz`` would answer 503 (none: ready); the console's health page shows them."""
    problems: list[str] = []
    if rt.store is None:
        problems.append("store not open")
    else:
        try:
            await rt.store.ping()
        except StoreError as exc:
            problems.append(f"store unreachable: {exc}")
    if rt.role in ("all", "worker") and not all(c.running for c in rt.consumers):
        problems.append("workers not running")
    return problems
