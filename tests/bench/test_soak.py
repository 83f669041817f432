"""The soak's books (bench/soak_ledger.py) and a short soak of the real deployment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.soak import Soak
from bench.soak_ledger import Ledger
from bench.soak_operator import replay_unknown_outcomes
from bench.soak_report import report
from gateway.deadletters import DeadLetter, list_dead_letters, move_to_dead_letters
from gateway.store import Keyspace, open_store


def _books(acked: dict[str, list[str]], answers: list[tuple[str, str]]) -> Ledger:
    ledger = Ledger(grace=10.0)
    for conversation, texts in acked.items():
        for text in texts:
            ledger.offered()
            ledger.attempt(202)
            ledger.acknowledged(conversation, text, at=0.0)
    for conversation, text in answers:
        ledger.answered(conversation, text)
    return ledger


def test_every_acknowledged_message_answered_once_in_order_is_ok() -> None:
    ledger = _books({"c1": ["c1:0", "c1:1"], "c2": ["c2:0"]}, [("c2", "c2:0"), ("c1", "c1:0")])
    ledger.answered("c1", "c1:1")
    verdict = ledger.verdict()
    assert verdict["ok"] is True
    assert (verdict["lost"], verdict["answered_twice"], verdict["answered"]) == (0, 0, 3)


def test_an_unanswered_message_is_lost_and_counts_as_lost_so_far_after_the_grace() -> None:
    ledger = _books({"c1": ["c1:0", "c1:1"]}, [("c1", "c1:0")])
    assert ledger.lost_so_far(now=5.0) == 0  # still within the grace
    assert ledger.lost_so_far(now=11.0) == 1
    verdict = ledger.verdict()
    assert verdict["ok"] is False
    assert verdict["lost"] == 1


def test_a_second_answer_is_a_duplicate() -> None:
    ledger = _books({"c1": ["c1:0"]}, [("c1", "c1:0"), ("c1", "c1:0")])
    verdict = ledger.verdict()
    assert verdict["ok"] is False
    assert (verdict["answered_twice"], verdict["duplicate_answers"]) == (1, 1)
    assert verdict["duplicate_examples"] == ["c1:0"]  # the text names the conversation


def test_answers_in_another_order_than_the_acknowledgements_fail() -> None:
    ledger = _books({"c1": ["c1:0", "c1:1"]}, [("c1", "c1:1"), ("c1", "c1:0")])
    verdict = ledger.verdict()
    assert verdict["ok"] is False
    assert verdict["out_of_order_conversations"] == 1


def test_an_answer_before_its_acknowledgement_is_not_left_unanswered() -> None:
    """The reply can arrive before the client read the 2xx: still answered, not lost."""
    ledger = Ledger(grace=0.0)
    ledger.answered("c1", "c1:0")
    ledger.acknowledged("c1", "c1:0", at=0.0)
    assert ledger.lost_so_far(now=100.0) == 0
    assert ledger.verdict()["ok"] is True


@pytest.mark.redis
async def test_the_soaks_operator_replays_only_the_letters_whose_outcome_is_unknown(
    redis_url: str,
) -> None:
    keyspace = Keyspace(prefix="soakop", partitions=2)
    store = await open_store(redis_url)
    try:
        for code, text in (("outcome_unknown", "maybe shown"), ("rejected", "refused")):
            entry = await store.append(keyspace.outbox(1), b"{}")
            letter = DeadLetter(
                kind="outbound",
                reason=text,
                code=code,
                partition=1,
                message={"text": text, "idempotency_key": f"k-{code}"},
            )
            ack = (keyspace.outbox(1), "g", entry)
            await move_to_dead_letters(store, keyspace, letter, ack=ack)
        replayed = await replay_unknown_outcomes(redis_url, keyspace)
        assert [letter.code for letter in replayed] == ["outcome_unknown"]
        assert [letter.code for _, letter in await list_dead_letters(store, keyspace)] == [
            "rejected"
        ]
        outbox = [json.loads(e.payload) for e in await store.range(keyspace.outbox(1))]
        again = {"text": "maybe shown", "idempotency_key": "k-outcome_unknown", "replayed": True}
        assert again in outbox
        assert await replay_unknown_outcomes(redis_url, keyspace) == []  # once
    finally:
        await store.aclose()


@pytest.mark.slow
@pytest.mark.redis
async def test_a_short_soak_kills_a_worker_and_keeps_every_acknowledged_message(
    tmp_path: Path,
) -> None:
    """Eight seconds of the real deployment with a worker SIGKILLed after four: the record
    is written as it goes and the verdict holds."""
    soak = Soak(
        out=tmp_path / "out",
        workdir=tmp_path / "work",
        minutes=8 / 60,
        fault_minutes=8 / 60,  # a worker at 4 s; Redis at 8 s, which is past the end
        rate=20.0,
        http_conversations=16,
        line_users=4,
        sample_seconds=2.0,
        outage_seconds=1.0,
        pipeline={"lease_seconds": 2.0},  # the survivor takes the partitions over at once
    )
    summary = await soak.run()
    assert summary["ok"] is True, summary
    assert summary["worker_kills"] == 1
    assert summary["acknowledged"] >= 100
    assert summary["lost"] == summary["answered_twice"] == 0
    record = (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
    lines = [json.loads(line) for line in record]
    events = [line["event"] for line in lines if "event" in line]
    assert events[:2] == ["start", "worker killed"], events
    assert "worker restarted" in events, events  # the restart finishes even after the end
    assert any("rss_web" in line and "redis_used_memory" in line for line in lines)
    assert (tmp_path / "out" / "samples.csv").exists()
    table = report(tmp_path / "out", every_minutes=0.05)
    assert ": worker killed" in table
    assert "Summary:" in table
    assert table.count("\n| ") >= 3  # the header row and at least two samples
