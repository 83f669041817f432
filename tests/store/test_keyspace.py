"""Store keys: spelled as they always were, and every one of a conversation's erased.

The spellings are a storage format (data lives under them), so each method's output is
pinned. The erase test writes a key of every per-conversation family the
:class:`~gateway.store.Keyspace` knows, for a conversation and a bystander, erases the first
and reads the whole store around its API: nothing of the conversation may be left, nothing of
the bystander may go. A new ``Keyspace`` method fails here until it is classified below.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import pytest

from gateway.conversations import erase_conversation, index_records
from gateway.models import Channel, ConversationKey, DeliveryReceipt, InboundMessage, Participant
from gateway.store import Commit, Keyspace, StateWrite, Store
from tests.leftovers import leftovers

KS = Keyspace(prefix="fb", partitions=8)
TENANT = "acme"

# Per-conversation families hold data of one conversation; sample values by parameter name.
BUCKETS = {"reply_bucket", "email_reply_rate", "inbound_bucket"}
LOGS = {"replies", "notes"}

# Outside the conversation's prefix, named by one of its ids (the inbound marker's event id
# and sender, the receipts' idempotency keys, outbound ids and platform message ids).
LINKED = {
    "inbound_seen",
    "inbound_bucket",
    "email_thread",
    "delivered",
    "delivered_prefix_of_inbound",
    "email_attempt",
    "whatsapp_outbound",
    "whatsapp_sid",
    "status_seen",
    "status_dead_letter_seen",
    "contact_name",
}

# No conversation's data: partition streams (their entries are erased one by one, below),
# cluster and tenant records, pacing buckets, a desk's Slack thread map (named by a hash).
NOT_PER_CONVERSATION = {
    "inbox",
    "outbox",
    "dead_letters",
    "replayed",
    "conversation_index_prefix",
    "lease",
    "members",
    "web_members",
    "plan_override",
    "quota_warning",
    "line_push_usage",
    "quota_counter",
    "usage_prefix",
    "usage",
    "audit",
    "audit_tenant",
    "api_key_prefix",
    "api_key",
    "personas_version",
    "personas_overlay",
    "tenants_overlay",
    "tenants_version",
    "signature_nonce",
    "media_link_key",
    "console_session",
    "console_activity",
    "whatsapp_pace",
    "whatsapp_content",
    "line_pace",
    "slack_pace",
    "slack_desk_thread",
    "slack_desk_thread_of",
    "slack_installation",
    "slack_token_refresh",
    "slack_oauth_state",
    "email_quarantine",
    "email_suppressed",
    "imap_state_prefix",
    "imap_state",
    "collecting_pace",
    # a person's contact record outlives one conversation; erase takes the conversation's
    # participants out of it (gateway/contacts/book.py, tests/pipeline/test_contacts_erase.py)
    "contacts_version",
    "contact",
    "contact_prefix",
    "contact_identity",
    "contact_email",
}

# Helpers over the families above (prefixes, erase's own lists).
HELPERS = {
    "partition",
    "conversation_prefix",
    "inbound_marker_prefix",
    "conversation_participant_prefix",
    "status_seen_prefix",
    "conversation_keys",
    "inbound_keys",
    "delivery_keys",
}


def _public_methods() -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(Keyspace, inspect.isfunction)
        if not name.startswith("_")
    }


def _per_conversation_methods() -> set[str]:
    return {
        name
        for name in _public_methods() - HELPERS
        if {"conversation_key", "operators_conversation_key"}
        & set(inspect.signature(getattr(Keyspace, name)).parameters)
    }


def test_every_keyspace_method_is_classified() -> None:
    """A new key family must say whether it holds a conversation's data (and erase it)."""
    known = _per_conversation_methods() | LINKED | NOT_PER_CONVERSATION | HELPERS
    assert _public_methods() - known == set(), (
        "classify the new Keyspace method(s) in tests/store/test_keyspace.py and, if they hold "
        "a conversation's data, make erase_conversation remove them"
    )


class _Conversation:
    """One conversation's ids, all carrying ``mark`` so a leftover names it."""

    def __init__(self, mark: str) -> None:
        self.mark = mark
        self.conv = ConversationKey(tenant=TENANT, channel=Channel.WHATSAPP, conversation_id=mark)
        self.key = self.conv.key
        self.partition = KS.partition(self.key)
        self.inbound = InboundMessage(
            id=f"{mark}-in",
            event_id=f"{mark}-ev",
            conversation=self.conv,
            sender=Participant(id=f"{mark}-user"),
            text=f"hello from {mark}",
        )
        self.receipts = [
            DeliveryReceipt(
                outbound_id=f"{mark}-out",
                idempotency_key=f"{mark}-in:0",
                channel=Channel.WHATSAPP,
                platform_message_id=f"SM{mark}1",
                detail={"message_sids": [f"SM{mark}1", f"SM{mark}2"]},
            ),
            DeliveryReceipt(
                outbound_id=f"{mark}-out2",
                idempotency_key=f"proactive:{mark}-out2",
                channel=Channel.EMAIL,
                platform_message_id=f"{mark}-reply@example.com",
            ),
        ]

    def sample(self, parameter: str) -> Any:
        samples: dict[str, Any] = {
            "conversation_key": self.key,
            "operators_conversation_key": self.key,
            "idempotency_key": f"{self.mark}-in:0",
            "index": 1,
            "window": "2026-12",
            "reply_token": f"{self.mark}-token",
            "inbound_id": self.inbound.id,
            "tenant": TENANT,
            "sender_id": f"{self.mark}-user",
        }
        assert parameter in samples, f"no sample value for Keyspace parameter {parameter!r}"
        return samples[parameter]

    def linked(self) -> dict[str, list[str]]:
        p, m = self.partition, self.mark
        return {
            "inbound_seen": [KS.inbound_seen(p, "whatsapp", TENANT, f"{m}-ev")],
            "inbound_bucket": [KS.inbound_bucket(TENANT, "whatsapp", f"{m}-user")],
            "contact_name": [KS.contact_name(TENANT, "whatsapp", f"{m}-user")],
            "email_thread": [
                KS.email_thread(TENANT, f"{m}-ev"),
                KS.email_thread(TENANT, f"{m}-reply@example.com"),
            ],
            "delivered": [KS.delivered(p, f"{m}-in:0"), KS.delivered(p, f"proactive:{m}-out2")],
            # a reply whose receipt never came (the quota notice's record, say)
            "delivered_prefix_of_inbound": [KS.delivered(p, f"{m}-in:quota-notice")],
            "email_attempt": [KS.email_attempt(f"proactive:{m}-out2")],
            "whatsapp_outbound": [KS.whatsapp_outbound(f"{m}-out")],
            "whatsapp_sid": [KS.whatsapp_sid(f"SM{m}2")],
            "status_seen": [KS.status_seen(p, "whatsapp", TENANT, f"SM{m}2", "delivered")],
            "status_dead_letter_seen": [
                KS.status_dead_letter_seen(p, "whatsapp", TENANT, f"SM{m}1", "failed")
            ],
        }

    async def write_everything(self, store: Store) -> None:
        data = f"data of {self.mark}".encode()
        await store.commit(
            Commit(records=index_records(KS, self.inbound, persona="core", dedupe_ttl=600))
        )
        for receipt in self.receipts:
            await store.append_log(KS.receipts(self.key), receipt.model_dump_json().encode(), cap=9)
        for name in sorted(_per_conversation_methods() - {"receipts", "inbound_marker"}):
            method: Callable[..., str] = getattr(KS, name)
            params = inspect.signature(method).parameters
            key = method(*(self.sample(p) for p in params))
            await _write(store, name, key, data)
        for name, keys in self.linked().items():
            for key in keys:
                await _write(store, name, key, data)
        await store.append(KS.inbox(self.partition), self.inbound.model_dump_json().encode())
        letter = {"kind": "inbound", "conversation": self.key, "reason": "test"}
        await store.append(KS.dead_letters(self.partition), json.dumps(letter).encode())


async def _write(store: Store, family: str, key: str, data: bytes) -> None:
    if family in BUCKETS:
        await store.take_tokens(key, rate=1.0, burst=5.0)
    elif family in LOGS:
        await store.append_log(key, data, cap=9)
    elif family == "state":
        await store.commit(Commit(state=StateWrite(key=key, value=data, expected_version=0)))
    else:
        await store.put_record(key, data)


def test_linked_families_are_all_written() -> None:
    """The erase test below writes a key of every linked family."""
    assert set(_Conversation("x").linked()) == LINKED


async def test_erase_leaves_nothing_of_any_key_family(store: Store) -> None:
    victim, bystander = _Conversation("victim"), _Conversation("bystander")
    await victim.write_everything(store)
    await bystander.write_everything(store)
    before = await leftovers(store, (b"bystander",))
    assert await leftovers(store, (b"victim",))  # the marks really are in the store

    await erase_conversation(store, KS, TENANT, victim.key)

    assert await leftovers(store, (b"victim",)) == []
    assert sorted(await leftovers(store, (b"bystander",))) == sorted(before)


@pytest.mark.parametrize(
    ("built", "spelled"),
    [
        (KS.inbox(3), "fb:{p3}:inbox"),
        (KS.outbox(3), "fb:{p3}:outbox"),
        (KS.dead_letters(3), "fb:{p3}:dead"),
        (KS.inbound_seen(3, "line", "acme", "ev1"), "fb:{p3}:seen:line:acme:ev1"),
        (
            KS.status_seen(3, "whatsapp", "acme", "SM1", "sent"),
            "fb:{p3}:seen:whatsapp-status:acme:SM1:sent",
        ),
        (
            KS.status_dead_letter_seen(3, "whatsapp", "acme", "SM1", "failed"),
            "fb:{p3}:seen:whatsapp-status:acme:SM1:failed:dead",
        ),
        (KS.replayed(3, "1-0"), "fb:{p3}:dead:replayed:1-0"),
        (KS.delivered(3, "m1:0"), "fb:{p3}:delivered:m1:0"),
        (KS.delivered_prefix_of_inbound(3, "m1"), "fb:{p3}:delivered:m1:"),
        (KS.conversation_prefix("a/http/c"), f"fb:{{p{KS.partition('a/http/c')}}}:c:a/http/c:"),
        (KS.state("a/http/c"), KS.conversation_prefix("a/http/c") + "state"),
        (KS.replies("a/http/c"), KS.conversation_prefix("a/http/c") + "replies"),
        (KS.receipts("a/http/c"), KS.conversation_prefix("a/http/c") + "receipts"),
        (KS.reply_bucket("a/http/c"), KS.conversation_prefix("a/http/c") + "reply-bucket"),
        (KS.inbound_marker("a/http/c", "m1"), KS.conversation_prefix("a/http/c") + "in:m1"),
        (
            KS.quota_notice("a/http/c", "2026-12"),
            KS.conversation_prefix("a/http/c") + "quota-notice:2026-12",
        ),
        (KS.notes("a/http/c"), KS.conversation_prefix("a/http/c") + "notes"),
        (
            KS.handoff_customer("a/slack/d/t"),
            KS.conversation_prefix("a/slack/d/t") + "handoff-customer",
        ),
        (KS.http_posted("a/http/c", "m1:0"), KS.conversation_prefix("a/http/c") + "posted:m1:0"),
        (
            KS.slack_part("a/slack/c", "m1:0", 2),
            KS.conversation_prefix("a/slack/c") + "slack-part:m1:0:2",
        ),
        (
            KS.slack_draft("a/slack/c", "m1"),
            KS.conversation_prefix("a/slack/c") + "slack-draft:m1",
        ),
        (
            KS.whatsapp_part("a/whatsapp/c", "m1:0", 2),
            KS.conversation_prefix("a/whatsapp/c") + "wa_sent:m1:0:2",
        ),
        (
            KS.line_replied("a/line/c", "m1:0"),
            KS.conversation_prefix("a/line/c") + "line_replied:m1:0",
        ),
        (
            KS.line_reply_token("a/line/c", "tok"),
            KS.conversation_prefix("a/line/c") + "line_reply_token:tok",
        ),
        (
            KS.line_push_reserved("a/line/c", "m1:0", 2),
            KS.conversation_prefix("a/line/c") + "line_push_reserved:m1:0#2",
        ),
        (
            KS.conversation_index("acme", "a/http/c"),
            f"fb:{{p{KS.partition('a/http/c')}}}:ix:acme:a/http/c",
        ),
        (
            KS.conversation_participant("a/line/c", "U1"),
            KS.conversation_prefix("a/line/c") + "who:U1",
        ),
        (KS.contact_name("acme", "slack", "U1"), "fb:t:acme:name:slack:U1"),
        (KS.contacts_version("acme"), "fb:{ct:acme}:contacts:version"),
        (KS.contact("acme", "c1"), "fb:{ct:acme}:contact:c1"),
        (KS.contact_identity("acme", "line", "U1"), "fb:{ct:acme}:contact-of:line:U1"),
        (KS.contact_email("acme", "a@x"), "fb:{ct:acme}:contact-email:a@x"),
        (KS.lease("worker", 3), "fb:lease:worker:3"),
        (KS.members("worker"), "fb:members:worker"),
        (KS.web_members(), "fb:members:web"),
        (KS.plan_override("acme"), "fb:t:acme:plan"),
        (
            KS.quota_warning("acme", "outbound", "2026-12"),
            "fb:t:acme:quota-warning:outbound:2026-12",
        ),
        (KS.line_push_usage("acme", "2026-12-05"), "fb:t:acme:usage:line_push:2026-12-05"),
        (KS.quota_counter("acme", "outbound", "2026-12"), "fb:q:acme:outbound:2026-12"),
        (KS.inbound_bucket("acme", "line", "U1"), "fb:bucket:in:acme:line:U1"),
        (
            KS.usage("acme", "2026-12-05", "line", "core", "inbound"),
            "fb:usage:acme:2026-12-05:line:core:inbound",
        ),
        (KS.audit(), "fb:audit"),
        (KS.audit_tenant("acme"), "fb:audit:t:acme"),
        (KS.api_key("k1"), "fb:apikey:k1"),
        (KS.personas_version(), "fb:personas:version"),
        (KS.personas_overlay(), "fb:personas:overlay"),
        (KS.tenants_overlay(), "fb:tenants:overlay"),
        (KS.tenants_version(), "fb:tenants:version"),
        (KS.signature_nonce("http", "acme", "r1"), "fb:nonce:http:acme:r1"),
        (KS.media_link_key(), "fb:media:link-key"),
        (KS.console_session("d1"), "fb:console:session:d1"),
        (KS.console_activity(), "fb:console:activity"),
        (KS.whatsapp_pace("+1555"), "fb:ch:whatsapp:pace:+1555"),
        (KS.whatsapp_outbound("o1"), "fb:ch:whatsapp:out:o1"),
        (KS.whatsapp_sid("SM1"), "fb:ch:whatsapp:sid:SM1"),
        (KS.whatsapp_content("acme", "ab12"), "fb:ch:whatsapp:content:acme:ab12"),
        (KS.line_pace("Ubot"), "fb:ch:line:pace:Ubot"),
        (KS.slack_pace("T1", "C1"), "fb:ch:slack:pace:T1:C1"),
        (KS.slack_desk_thread("acme", "C1", "h-1"), "fb:ch:slack:desk-thread:acme:C1:h-1"),
        (KS.slack_desk_thread_of("acme", "C1", "1.2"), "fb:ch:slack:desk-thread-of:acme:C1:1.2"),
        (KS.slack_installation("1.2", "T:T1"), "fb:ch:slack:install:1.2:T:T1"),
        (KS.slack_token_refresh("1.2", "T:T1"), "fb:ch:slack:install-refresh:1.2:T:T1"),
        (KS.slack_oauth_state("s"), "fb:ch:slack:oauth-state:s"),
        (KS.email_thread("acme", "m@x"), "fb:ch:email:thread:acme:m@x"),
        (KS.email_quarantine("acme"), "fb:ch:email:quarantine:acme"),
        (KS.email_suppressed("acme"), "fb:ch:email:suppressed:acme"),
        (KS.email_attempt("m1:0"), "fb:ch:email:attempt:m1:0"),
        (KS.email_reply_rate("a/email/r"), "fb:ch:email:rate:a/email/r"),
        (KS.collecting_pace("t"), "fb:ch:collect:pace:t"),
        (
            KS.imap_state("acme", "support", "bot", "imap.example", "INBOX"),
            "fb:ch:email:imap:acme:support:bot@imap.example/INBOX",
        ),
    ],
)
def test_key_spellings_are_unchanged(built: str, spelled: str) -> None:
    """Keys already written by earlier releases keep their names (no orphaned data)."""
    assert built == spelled
