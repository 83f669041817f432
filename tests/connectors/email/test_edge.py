"""The edge appends the raw mail before the 250; the worker parses it (contract v2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from connectors.email.connector import EmailConnector
from connectors.email.emulator import MailSender
from connectors.email.parse import mail_bytes
from gateway.deadletters import list_dead_letters, replay
from gateway.envelope import RawEvent, is_raw_event
from gateway.models import Channel, EmailReplyContext, conversation_key_of
from tests.connectors.email.conftest import SUPPORT, EmailWorld
from tests.harness import RunningGateway, base_config, eventually, running_gateway

JANE = "jane@customer.example"


def _mail(message_id: str, *, body: bytes, head: bytes = b"") -> bytes:
    return (
        b"From: Jane Doe <" + JANE.encode() + b">\r\nTo: " + SUPPORT.encode() + b"\r\n"
        b"Subject: question\r\nMessage-ID: <"
        + message_id.encode()
        + b">\r\n"
        + head
        + b"\r\n"
        + body
    )


@asynccontextmanager
async def _edge_only(tmp_path: Path) -> AsyncIterator[tuple[RunningGateway, EmailConnector]]:
    """A gateway with no worker: what the edge appended stays on the inbox to be read."""
    channel = {
        "kind": "email",
        "addresses": [{"address": SUPPORT}],
        "listener": {"host": "127.0.0.1", "port": 0},
        "outbound": {"host": "127.0.0.1", "port": 9, "security": "none"},
    }
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db", tenants=[{"id": "acme", "channels": [channel]}]
    )
    async with running_gateway(data, role="web") as gw:
        connector = gw.runtime.connectors[Channel.EMAIL]
        assert isinstance(connector, EmailConnector)
        yield gw, connector


async def _inbox(gw: RunningGateway) -> list[RawEvent]:
    store, keyspace = gw.runtime.store, gw.runtime.keyspace
    assert store is not None
    found = []
    for partition in range(gw.runtime.config.store.partitions):
        for entry in await store.range(keyspace.inbox(partition), count=1000):
            assert is_raw_event(entry.payload), entry.payload[:60]
            found.append(RawEvent.model_validate_json(entry.payload))
    return found


async def test_the_edge_appends_the_mail_as_sent_and_parse_reads_it(tmp_path: Path) -> None:
    """Before the 250 the mail is stored whole (text when UTF-8, base64 when not), keyed by
    its Message-ID and the thread root; the worker's parse reads text and context from it."""
    utf8 = _mail(
        "u.1@customer.example",
        head=b"References: <root.1@customer.example>\r\n",
        body=b"Caf\xc3\xa9 opening hours?\r\n\r\nOn Mon, Acme wrote:\r\n> old text\r\n",
    )
    latin1 = _mail(
        "l.1@customer.example",
        head=b"Content-Type: text/plain; charset=iso-8859-1\r\n",
        body=b"Caf\xe9 prices?\r\n",
    )
    async with _edge_only(tmp_path) as (gw, connector):
        sender = MailSender(*connector.listener_address("acme"))
        for raw in (utf8, latin1):
            assert (await sender.send(raw, mail_from=JANE, rcpt_to=[SUPPORT]))[0] == 250
        events = {e.event_id: e for e in await _inbox(gw)}
        assert set(events) == {"u.1@customer.example", "l.1@customer.example"}

        first, second = events["u.1@customer.example"], events["l.1@customer.example"]
        assert isinstance(first.event, str)
        assert mail_bytes(first) == utf8
        assert second.event == {"base64": "".join(second.event["base64"].split())}
        assert mail_bytes(second) == latin1
        root = conversation_key_of("acme", "email", "root.1@customer.example", None)
        assert first.conversation == root
        assert first.context["thread_root"] == "root.1@customer.example"
        assert (first.tenant, first.source, first.context["to"]) == ("acme", "email", SUPPORT)

        message = await connector.parse(first)
        assert message is not None
        assert (message.id, message.event_id) == (first.id, first.event_id)
        assert message.conversation.key == first.conversation
        assert message.text == "Café opening hours?"
        assert message.sender.id == JANE
        assert isinstance(message.reply_context, EmailReplyContext)
        assert message.reply_context.references == ("root.1@customer.example",)
        assert message.raw["size"] == len(utf8)
        parsed_latin1 = await connector.parse(second)
        assert parsed_latin1 is not None
        assert parsed_latin1.text == "Café prices?"


async def test_parse_takes_the_header_block_as_the_edge_read_it(tmp_path: Path) -> None:
    """The edge stores its reading of the header block with the mail; the worker's parse
    uses it instead of reading the headers again, and reads them itself only when the
    stored head is missing or not a head (an envelope from an older edge)."""
    raw = _mail("h.1@customer.example", body=b"Hello\r\n")
    async with _edge_only(tmp_path) as (gw, connector):
        sender = MailSender(*connector.listener_address("acme"))
        assert (await sender.send(raw, mail_from=JANE, rcpt_to=[SUPPORT]))[0] == 250
        [event] = await _inbox(gw)
        head = event.context["head"]
        assert (head["from_address"], head["message_id"]) == (JANE, "h.1@customer.example")

        # Told apart from a second reading: a stored head naming another sender wins.
        other = {**head, "from_address": "stored@customer.example", "from_name": "Stored"}
        told = event.model_copy(update={"context": {**event.context, "head": other}})
        message = await connector.parse(told)
        assert message is not None
        assert (message.sender.id, message.sender.display_name) == (
            "stored@customer.example",
            "Stored",
        )
        for unusable in (None, "x", {**head, "references": "not a list"}, {"event_id": "e"}):
            older = event.model_copy(update={"context": {**event.context, "head": unusable}})
            message = await connector.parse(older)
            assert message is not None
            assert message.sender.id == JANE


async def test_a_mail_the_parser_refuses_is_dead_lettered_whole_and_replayable(
    world: EmailWorld,
) -> None:
    """A header block the edge accepts over a body the parser cannot read (a charset name
    with a NUL): 250 at the edge, then a dead letter with the parser's reason, kept whole
    and put back on the inbox by a replay; nobody is mailed."""
    raw = _mail(
        "nul.1@customer.example",
        head=b'Content-Type: text/plain; charset="utf\x00-8"\r\n',
        body=b"hello\r\n",
    )
    code, answer = await world.sender.send(raw, mail_from=JANE, rcpt_to=[SUPPORT])
    assert (code, answer) == (250, "2.0.0 Message accepted")
    rt = world.gateway.runtime
    assert rt.store is not None
    [(handle, first)] = await eventually(lambda: list_dead_letters(rt.store, rt.keyspace))
    assert first.code == "unparsable_event"
    assert first.reason.startswith("unparsable:")
    assert (first.tenant, first.channel) == ("acme", "email")
    assert first.raw is not None
    assert mail_bytes(RawEvent.model_validate_json(first.raw)) == raw
    assert world.inbound("parse_failed") == 1
    assert await world.connector.quarantined("acme") == []

    assert await replay(rt.store, rt.keyspace, handle)

    async def letters_again() -> list[object]:
        letters = await list_dead_letters(rt.store, rt.keyspace)
        return [letter for _, letter in letters if letter.id != first.id]

    [second] = await eventually(letters_again)
    assert second.raw == first.raw  # byte for byte the same envelope
    assert world.smarthost.received == []
