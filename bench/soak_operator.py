"""What the soak's operator does: replay the letters the gateway could not decide on.

A worker SIGKILLed between claiming a LINE reply token and recording how the reply went
leaves its message dead-lettered ``outcome_unknown`` (docs/connectors/line.md): LINE may
or may not have shown the reply, and the gateway will not guess. The operator the docs
describe replays such a letter, accepting that it may show twice; the replay pushes it. The
soak does the same, so its ledger then says whether the customer got the answer once.
Any other dead letter is left where it is: the soak's verdict fails on it.
"""

from __future__ import annotations

from gateway.deadletters import DeadLetter, list_dead_letters, replay
from gateway.errors import DeliveryFailure, StoreError
from gateway.store import Keyspace, open_store

__all__ = ["replay_unknown_outcomes"]


async def replay_unknown_outcomes(url: str, keyspace: Keyspace) -> list[DeadLetter]:
    """Replay every ``outcome_unknown`` letter; the ones replayed (none while Redis is away)."""
    try:
        store = await open_store(url)
    except StoreError:
        return []
    replayed: list[DeadLetter] = []
    try:
        for handle, letter in await list_dead_letters(store, keyspace):
            if letter.code == DeliveryFailure.OUTCOME_UNKNOWN and await replay(
                store, keyspace, handle
            ):
                replayed.append(letter)
    except StoreError:
        pass  # Redis is being restarted: the next round replays them
    finally:
        await store.aclose()
    return replayed
