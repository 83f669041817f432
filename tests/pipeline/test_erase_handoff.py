"""Erasing a customer who was handed to people erases the desk's thread for them too: the
announcement, the relayed messages, the operators' answers and the thread's link back."""

from __future__ import annotations

from gateway.conversations import erase_conversation
from gateway.deadletters import OUTBOX_GROUP
from gateway.handoff_config import desk_threads
from gateway.metrics import Metrics
from gateway.models import Channel, ConversationKey, InboundMessage, Participant
from tests.leftovers import leftovers
from tests.pipeline.conftest import Pipeline, make_config

VICTIM = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="victim")
BYSTANDER = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="bystander")


def _from(conv: ConversationKey, text: str, n: int, *, operator: bool = False) -> InboundMessage:
    who = "operator-1" if operator else f"{conv.conversation_id}-user"
    return InboundMessage(
        event_id=f"{conv.conversation_id}-ev-{n}",
        conversation=conv,
        sender=Participant(id=who, display_name=who),
        text=text,
    )


async def _dispatch_all(pipeline: Pipeline) -> None:
    dispatcher = pipeline.dispatcher()
    streams = [pipeline.keyspace.outbox(p) for p in range(pipeline.keyspace.partitions)]
    while got := await pipeline.store.read_group(
        streams, group=OUTBOX_GROUP, consumer="t", count=50, block=0.05
    ):
        for stream, entry in got:
            await dispatcher.handle(int(stream.split("{p")[1].split("}")[0]), entry)


async def test_erase_takes_the_desk_thread_of_a_handed_off_customer(pipeline: Pipeline) -> None:
    config = make_config(
        pipeline.store, handoff={"operators": {"channel": "http", "conversation_id": "desk"}}
    )
    pipeline = Pipeline(config, pipeline.store, Metrics(), pipeline.connector)
    worker = pipeline.worker()
    for customer in (VICTIM, BYSTANDER):
        tag = customer.conversation_id
        await worker.handle(*await pipeline.inbound(_from(customer, "/human", 1)))
        await worker.handle(*await pipeline.inbound(_from(customer, f"I am {tag}", 2)))
        [thread] = desk_threads(config.handoff_desks(), "acme", customer.key)
        answer = _from(thread, f"hello {tag}, how can we help?", 3, operator=True)
        await worker.handle(*await pipeline.inbound(answer))
    await _dispatch_all(pipeline)
    sent = pipeline.connector.texts
    assert "I am victim" in sent  # relayed to the desk
    assert "hello victim, how can we help?" in sent  # relayed back to the customer
    bystander_before = await leftovers(pipeline.store, (b"bystander",))

    await erase_conversation(
        pipeline.store, pipeline.keyspace, "acme", VICTIM.key, desks=config.handoff_desks()
    )

    assert await leftovers(pipeline.store, (b"victim",)) == []
    assert sorted(await leftovers(pipeline.store, (b"bystander",))) == sorted(bystander_before)
