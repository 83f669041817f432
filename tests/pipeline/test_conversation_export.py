"""The export holds what the store keeps about a conversation, operators' notes included."""

from __future__ import annotations

from gateway.conversations import export_conversation
from gateway.takeover import HandoffActions
from tests.pipeline.conftest import CUSTOMER, Pipeline, said


async def test_the_export_holds_state_replies_receipts_and_notes(pipeline: Pipeline) -> None:
    worker = pipeline.worker()
    await worker.handle(*await pipeline.inbound(said("pricing", event_id="ev-1")))
    await HandoffActions(worker.handoff).add_note(CUSTOMER.key, "Bo", "asked about Pro twice")

    data = await export_conversation(pipeline.store, pipeline.keyspace, "acme", CUSTOMER.key)

    assert data is not None
    assert data["state"]["history"][0]["text"] == "pricing"
    assert data["conversation"]["key"] == CUSTOMER.key
    assert [(n["by"], n["text"]) for n in data["notes"]] == [("Bo", "asked about Pro twice")]
