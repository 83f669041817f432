"""Whether this process is ready to serve: the verdict of ``/readyz``, in one place so the
operations endpoint and the console's health page say the same thing.

The verdict comes back within :data:`STORE_ANSWER_SECONDS` (plus the local checks) whatever
the store does: a store that does not answer (a black-holed or half-open connection) is a
problem named as such, not a ``/readyz`` that hangs until the store's own command timeout
(10 s) and is cut off by the probe with no reason given.
"""

from __future__ import annotations

import asyncio

from gateway.errors import StoreError
from gateway.runtime import Runtime

__all__ = ["STORE_ANSWER_SECONDS", "readiness_problems"]

STORE_ANSWER_SECONDS = 1.5
"""How long the readiness check waits for the store's PING: far above a healthy round
trip, below the 2-3 s a readiness probe waits (deploy/k8s, the Dockerfile's HEALTHCHECK)."""


async def readiness_problems(rt: Runtime) -> list[str]:
    """Why ``/readyz`` would answer 503 (none: ready); the console's health page shows them."""
    problems: list[str] = []
    if rt.store is None:
        problems.append("store not open")
    else:
        try:
            async with asyncio.timeout(STORE_ANSWER_SECONDS):
                await rt.store.ping()
        except TimeoutError:
            problems.append(
                f"store slow or unreachable: no answer to PING within {STORE_ANSWER_SECONDS:g} s"
            )
        except StoreError as exc:
            problems.append(f"store unreachable: {exc}")
    if rt.role in ("all", "worker") and not all(c.running for c in rt.consumers):
        problems.append("workers not running")
    return problems
