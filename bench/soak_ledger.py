"""The soak's books: what was acknowledged and what was answered, per conversation.

Every message the soak sends carries a text unique to it (``<conversation>:<seq>``) and the
echo agent answers with exactly that text, so an answer names the message it answers.
:class:`Ledger` keeps, per conversation, the texts the gateway acknowledged (in the order
they were acknowledged: a conversation sends its next message only after the previous one
was acknowledged) and the texts answered (in arrival order, after folding wire retries that
carry the same idempotency key). From those it computes, at any moment:

- ``lost_so_far``: acknowledged longer than ``grace`` seconds ago and still unanswered;
- ``duplicates``: answers beyond the first to one message;
- at the end (:meth:`verdict`): lost, answered twice, and conversations whose answers came
  in another order than their acknowledgements.

It holds one entry per message for the length of the run (about 100,000 for an hour at
30/s: a few tens of MiB), which is the price of checking order and exactly-once at the end.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Ledger:
    grace: float = 120.0
    sent: int = 0  # distinct messages offered (retries of one message count once)
    refused: int = 0  # messages given up on: never acknowledged after every retry
    post_attempts: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    acked: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    answers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    _acked_at: dict[str, float] = field(default_factory=dict)  # unanswered acked text -> time
    _answer_count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _acked_texts: set[str] = field(default_factory=set)

    # -- recording ------------------------------------------------------------------------------
    def offered(self) -> None:
        self.sent += 1

    def attempt(self, status: int) -> None:
        """One POST of a message and what came back (0: no answer, the connection failed)."""
        self.post_attempts += 1
        self.statuses[str(status)] += 1

    def acknowledged(self, conversation: str, text: str, at: float) -> None:
        self.acked[conversation].append(text)
        self._acked_texts.add(text)
        if self._answer_count[text] == 0:
            self._acked_at[text] = at

    def gave_up(self) -> None:
        self.refused += 1

    def answered(self, conversation: str, text: str) -> None:
        """An answer arrived (wire retries with the same idempotency key already folded)."""
        self.answers[conversation].append(text)
        self._answer_count[text] += 1
        self._acked_at.pop(text, None)

    # -- reading --------------------------------------------------------------------------------
    @property
    def acknowledged_count(self) -> int:
        return len(self._acked_texts)

    @property
    def answered_count(self) -> int:
        """Distinct messages answered."""
        return sum(1 for n in self._answer_count.values() if n > 0)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self._answer_count.values() if n > 1)

    def unanswered(self) -> int:
        return len(self._acked_at)

    def lost_so_far(self, now: float) -> int:
        cutoff = now - self.grace
        return sum(1 for at in self._acked_at.values() if at < cutoff)

    def out_of_order(self) -> list[str]:
        """Conversations whose first answers are not in acknowledgement order."""
        wrong = []
        for conversation, acked in self.acked.items():
            seen: set[str] = set()
            firsts = []
            for text in self.answers.get(conversation, []):
                if text not in seen:
                    seen.add(text)
                    firsts.append(text)
            acked_set = set(acked)
            answered_in_order = [t for t in firsts if t in acked_set]
            expected = [t for t in acked if t in seen]
            if answered_in_order != expected:
                wrong.append(conversation)
        return wrong

    def verdict(self) -> dict[str, Any]:
        """The end-of-run judgement: every acknowledged message answered exactly once, in
        order per conversation (``ok``), and the counts behind it."""
        lost = self.unanswered()
        twice = sum(1 for t in self._acked_texts if self._answer_count[t] > 1)
        disordered = self.out_of_order()
        return {
            "ok": lost == 0 and twice == 0 and not disordered,
            "sent": self.sent,
            "acknowledged": self.acknowledged_count,
            "refused": self.refused,
            "answered": self.answered_count,
            "lost": lost,
            "answered_twice": twice,
            "duplicate_answers": self.duplicates,
            # Answers to messages never acknowledged (allowed: the store may have taken a
            # message whose 2xx was lost on the way); counted, not judged.
            "answered_unacknowledged": sum(
                1 for t, n in self._answer_count.items() if n and t not in self._acked_texts
            ),
            "duplicate_examples": [
                t for t, n in self._answer_count.items() if n > 1 and t in self._acked_texts
            ][:10],
            "out_of_order_conversations": len(disordered),
            "out_of_order_examples": disordered[:5],
            "conversations": len(self.acked),
            "post_attempts": self.post_attempts,
            "statuses": dict(self.statuses),
        }
