"""Every store key the gateway uses, spelled in one place, each by a method that names it.

Conversations are spread over ``partitions`` partitions by a stable hash of their key. All
keys of one partition carry the Redis Cluster hash tag ``{pN}``, so one conversation's
inbox, outbox, state, dedupe claims and delivery records share one cluster slot and can be
updated in one atomic script. Cross-partition keys (leases, membership, tenant counters,
connectors' channel records) carry no partition tag and are only ever touched one key at a
time.

Callers never append their own suffix to a key: a new kind of key is a new method here, so
the code that writes a key and the code that reads, exports or erases it
(:func:`gateway.conversations.erase_conversation`) call the same method. The strings are a
storage format: data already lives under them, so a method's output never changes once
released (an upgrade must not orphan stored keys).

A key holding data about one conversation — under :meth:`Keyspace.conversation_prefix`, or
outside it but named by one of the conversation's ids (an event id, an idempotency key, a
platform message id) — must be removed by ``erase_conversation``;
``tests/store/test_keyspace_erase.py`` lists every method and fails for one it does not know.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Keyspace"]


@dataclass(frozen=True, slots=True)
class Keyspace:
    prefix: str = "fb"
    partitions: int = 8

    def partition(self, conversation_key: str) -> int:
        return zlib.crc32(conversation_key.encode()) % self.partitions

    def _p(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}"

    # -- per partition -------------------------------------------------------------------------
    def inbox(self, partition: int) -> str:
        return f"{self._p(partition)}:inbox"

    def outbox(self, partition: int) -> str:
        return f"{self._p(partition)}:outbox"

    def dead_letters(self, partition: int) -> str:
        return f"{self._p(partition)}:dead"

    def _seen(self, partition: int, scope: str, claim: str) -> str:
        return f"{self._p(partition)}:seen:{scope}:{claim}"

    def inbound_seen(self, partition: int, channel: str, tenant: str, event_id: str) -> str:
        """Dedupe claim for an inbound platform event id, per channel kind and tenant."""
        # Spelled out rather than through _seen: one call fewer on the ingest path.
        return f"{self.prefix}:{{p{partition}}}:seen:{channel}:{tenant}:{event_id}"

    def status_seen(
        self, partition: int, channel: str, tenant: str, platform_message_id: str, status: str
    ) -> str:
        """Dedupe claim for a delivery-status callback (one receipt per message and status)."""
        return self._seen(
            partition, f"{channel}-status:{tenant}", f"{platform_message_id}:{status}"
        )

    def status_dead_letter_seen(
        self, partition: int, channel: str, tenant: str, platform_message_id: str, status: str
    ) -> str:
        """Dedupe claim for the dead letter a failed-status callback files (one per message)."""
        return self.status_seen(partition, channel, tenant, platform_message_id, f"{status}:dead")

    def status_seen_prefix(
        self, partition: int, channel: str, tenant: str, platform_message_id: str
    ) -> str:
        """Every status claim (and status dead-letter claim) of one platform message."""
        return self.status_seen(partition, channel, tenant, platform_message_id, "")

    def replayed(self, partition: int, entry_id: str) -> str:
        """Claimed by the one replay a dead letter may have."""
        return f"{self._p(partition)}:dead:replayed:{entry_id}"

    def delivered(self, partition: int, idempotency_key: str) -> str:
        return f"{self._p(partition)}:delivered:{idempotency_key}"

    def delivered_prefix_of_inbound(self, partition: int, inbound_id: str) -> str:
        """The delivery records of the replies to one inbound message: their idempotency
        keys are ``<inbound id>:<suffix>`` (the worker's turn, the handoff, quota notices)."""
        return self.delivered(partition, f"{inbound_id}:")

    # -- per conversation (inside its partition) ---------------------------------------------
    def conversation_prefix(self, conversation_key: str) -> str:
        return f"{self._p(self.partition(conversation_key))}:c:{conversation_key}:"

    def _conversation_record(self, conversation_key: str, name: str) -> str:
        return self.conversation_prefix(conversation_key) + name

    def state(self, conversation_key: str) -> str:
        return self._conversation_record(conversation_key, "state")

    def replies(self, conversation_key: str) -> str:
        """The HTTP channel's replies waiting to be polled (a capped log)."""
        return self._conversation_record(conversation_key, "replies")

    def receipts(self, conversation_key: str) -> str:
        return self._conversation_record(conversation_key, "receipts")

    def reply_bucket(self, conversation_key: str) -> str:
        """The plan's per-conversation reply rate limit (a token bucket)."""
        return self._conversation_record(conversation_key, "reply-bucket")

    def inbound_marker(self, conversation_key: str, inbound_id: str) -> str:
        """Names one handled message's event id and sender, so erase finds what they name."""
        return self._conversation_record(conversation_key, f"in:{inbound_id}")

    def inbound_marker_prefix(self, conversation_key: str) -> str:
        return self.inbound_marker(conversation_key, "")

    def quota_notice(self, conversation_key: str, window: str) -> str:
        """Claimed by the one over-quota notice a conversation gets per quota window."""
        return self._conversation_record(conversation_key, f"quota-notice:{window}")

    def notes(self, conversation_key: str) -> str:
        """Operators' notes on a conversation (a capped log)."""
        return self._conversation_record(conversation_key, "notes")

    def handoff_customer(self, operators_conversation_key: str) -> str:
        """On a desk's thread: the customer conversation the thread relays to."""
        return self._conversation_record(operators_conversation_key, "handoff-customer")

    def http_posted(self, conversation_key: str, idempotency_key: str) -> str:
        """Claimed when the HTTP channel keeps a reply for polling (kept once)."""
        return self._conversation_record(conversation_key, f"posted:{idempotency_key}")

    def slack_part(self, conversation_key: str, idempotency_key: str, index: int) -> str:
        """A part of a multi-part Slack reply that went out (its ``ts``)."""
        return self._conversation_record(conversation_key, f"slack-part:{idempotency_key}:{index}")

    def slack_draft(self, conversation_key: str, inbound_id: str) -> str:
        """The draft of the reply to one inbound message (its ``ts``), which later drafts
        and the reply itself update rather than post again."""
        return self._conversation_record(conversation_key, f"slack-draft:{inbound_id}")

    def whatsapp_part(self, conversation_key: str, idempotency_key: str, index: int) -> str:
        """A part of a multi-part WhatsApp reply Twilio accepted (its message SID)."""
        return self._conversation_record(conversation_key, f"wa_sent:{idempotency_key}:{index}")

    def line_replied(self, conversation_key: str, idempotency_key: str) -> str:
        """Written once LINE took a reply's first batch by reply token."""
        return self._conversation_record(conversation_key, f"line_replied:{idempotency_key}")

    def line_reply_token(self, conversation_key: str, reply_token: str) -> str:
        """Claimed by the one send that may use a LINE reply token."""
        return self._conversation_record(conversation_key, f"line_reply_token:{reply_token}")

    def line_push_reserved(self, conversation_key: str, idempotency_key: str, index: int) -> str:
        """Claimed when a LINE push batch took its unit of the paid-push quota."""
        return self._conversation_record(
            conversation_key, f"line_push_reserved:{idempotency_key}#{index}"
        )

    def conversation_participant(self, conversation_key: str, sender_id: str) -> str:
        """Names one person who wrote in the conversation, so erase finds their cached name
        and their identity on a contact (gateway/contacts)."""
        return self._conversation_record(conversation_key, f"who:{sender_id}")

    def conversation_participant_prefix(self, conversation_key: str) -> str:
        return self.conversation_participant(conversation_key, "")

    def conversation_index(self, tenant: str, conversation_key: str) -> str:
        """The tenant's index entry for a conversation (admin listing), in its partition."""
        return self.conversation_index_prefix(tenant, self.partition(conversation_key)) + (
            conversation_key
        )

    def conversation_index_prefix(self, tenant: str, partition: int) -> str:
        return f"{self._p(partition)}:ix:{tenant}:"

    # -- what one conversation leaves outside its prefix (erase) ------------------------------
    def conversation_keys(self, tenant: str, conversation_key: str) -> list[str]:
        """The conversation's keys erase names rather than scans for: a store may leave
        buckets out of :meth:`Store.scan`, and some live outside its prefix."""
        return [
            self.conversation_index(tenant, conversation_key),
            self.state(conversation_key),
            self.replies(conversation_key),
            self.receipts(conversation_key),
            self.notes(conversation_key),
            self.reply_bucket(conversation_key),
            self.email_reply_rate(conversation_key),
        ]

    def inbound_keys(
        self, partition: int, channel: str, tenant: str, event_id: str, sender_id: str
    ) -> list[str]:
        """What one handled inbound message (named by its inbound marker) left elsewhere."""
        return [
            self.inbound_seen(partition, channel, tenant, event_id),
            self.inbound_bucket(tenant, channel, sender_id),
            self.email_thread(tenant, event_id),  # an email's event id is its Message-ID
        ]

    def delivery_keys(
        self,
        partition: int,
        tenant: str,
        *,
        outbound_id: str,
        idempotency_key: str,
        platform_message_ids: Iterable[str],
    ) -> tuple[list[str], list[str]]:
        """What one delivered reply (named by its receipt) left elsewhere: ``(keys, prefixes
        to scan)``."""
        keys = [
            self.delivered(partition, idempotency_key),
            self.email_attempt(idempotency_key),
            self.whatsapp_outbound(outbound_id),
        ]
        prefixes: list[str] = []
        for platform_id in platform_message_ids:
            keys += [self.whatsapp_sid(platform_id), self.email_thread(tenant, platform_id)]
            prefixes.append(self.status_seen_prefix(partition, "whatsapp", tenant, platform_id))
        return keys, prefixes

    # -- cluster-wide ----------------------------------------------------------------------------
    def lease(self, role: str, partition: int) -> str:
        return f"{self.prefix}:lease:{role}:{partition}"

    def members(self, role: str) -> str:
        return f"{self.prefix}:members:{role}"

    def web_members(self) -> str:
        """The processes serving requests (``--role web`` or ``all``), for the Health page."""
        return self.members("web")

    def _tenant_record(self, tenant: str, name: str) -> str:
        return f"{self.prefix}:t:{tenant}:{name}"

    def plan_override(self, tenant: str) -> str:
        """The plan an admin set for a tenant, overriding the configured one."""
        return self._tenant_record(tenant, "plan")

    def quota_warning(self, tenant: str, quota: str, window: str) -> str:
        """Claimed by the one soft-limit warning a tenant gets per quota and window."""
        return self._tenant_record(tenant, f"quota-warning:{quota}:{window}")

    def line_push_usage(self, tenant: str, day: str) -> str:
        """The tenant's billed LINE pushes on one UTC day (``YYYY-MM-DD``)."""
        return self._tenant_record(tenant, f"usage:line_push:{day}")

    def contact_name(self, tenant: str, channel: str, user: str) -> str:
        """A person's display name (and verified email) as their platform gave it, cached
        with an expiry (gateway/contacts/names.py); erased with a conversation they wrote in."""
        return self._tenant_record(tenant, f"name:{channel}:{user}")

    def _contacts(self, tenant: str) -> str:
        # One hash tag per tenant: a contact and its indexes change in one atomic commit.
        return f"{self.prefix}:{{ct:{tenant}}}"

    def contacts_version(self, tenant: str) -> str:
        """Bumped by every change of the tenant's contacts: their compare-and-set."""
        return f"{self._contacts(tenant)}:contacts:version"

    def contact(self, tenant: str, contact_id: str) -> str:
        """One person's contact record: their identities across channels (gateway/contacts)."""
        return self.contact_prefix(tenant) + contact_id

    def contact_prefix(self, tenant: str) -> str:
        return f"{self._contacts(tenant)}:contact:"

    def contact_identity(self, tenant: str, channel: str, user: str) -> str:
        """A channel identity → the id of the contact it is linked to."""
        return f"{self._contacts(tenant)}:contact-of:{channel}:{user}"

    def contact_email(self, tenant: str, email: str) -> str:
        """A verified email address → the id of the contact that holds it."""
        return f"{self._contacts(tenant)}:contact-email:{email}"

    def quota_counter(self, tenant: str, name: str, window: str) -> str:
        return f"{self.prefix}:q:{tenant}:{name}:{window}"

    def inbound_bucket(self, tenant: str, channel: str, user: str) -> str:
        return f"{self.prefix}:bucket:in:{tenant}:{channel}:{user}"

    def usage_prefix(self, tenant: str) -> str:
        return f"{self.prefix}:usage:{tenant}:"

    def usage(self, tenant: str, day: str, channel: str, persona: str, metric: str) -> str:
        return f"{self.usage_prefix(tenant)}{day}:{channel}:{persona}:{metric}"

    def audit(self) -> str:
        return f"{self.prefix}:audit"

    def audit_tenant(self, tenant: str) -> str:
        """One tenant's audit events, a copy of its entries in :meth:`audit` (scoped reads)."""
        return f"{self.prefix}:audit:t:{tenant}"

    def api_key_prefix(self) -> str:
        return f"{self.prefix}:apikey:"

    def api_key(self, key_id: str) -> str:
        return self.api_key_prefix() + key_id

    def personas_version(self) -> str:
        """Bumped by a file reload and with every write of :meth:`personas_overlay`; what
        each process polls."""
        return f"{self.prefix}:personas:version"

    def personas_overlay(self) -> str:
        """The personas defined or disabled through the admin API, over the files' (one
        versioned document: a write is a compare-and-set on its version)."""
        return f"{self.prefix}:personas:overlay"

    def tenants_overlay(self) -> str:
        """The tenants defined or disabled through the admin API, over the file's (one
        versioned document: a write is a compare-and-set on its version)."""
        return f"{self.prefix}:tenants:overlay"

    def tenants_version(self) -> str:
        """Bumped with every write of :meth:`tenants_overlay`; what each process polls."""
        return f"{self.prefix}:tenants:version"

    def signature_nonce(self, channel: str, tenant: str, replay_key: str) -> str:
        """Claimed by the one use a signed request may have (the HTTP channel's reply polls)."""
        return f"{self.prefix}:nonce:{channel}:{tenant}:{replay_key}"

    def media_link_key(self) -> str:
        """The key signing links to kept files, when the configuration gives none."""
        return f"{self.prefix}:media:link-key"

    def console_session(self, token_digest: str) -> str:
        """A console sign-in, named by the SHA-256 of its cookie token (never the token)."""
        return f"{self.prefix}:console:session:{token_digest}"

    def console_activity(self) -> str:
        """Bumped by every handoff change outside a worker turn: the console's live pages
        notice operator actions (from any desk or process) without reading every state."""
        return f"{self.prefix}:console:activity"

    # -- connectors' channel records (cluster-wide) ------------------------------------------
    def _channel_record(self, channel: str, name: str) -> str:
        return f"{self.prefix}:ch:{channel}:{name}"

    def whatsapp_pace(self, sender: str) -> str:
        """Send pacing per Twilio sender (number or Messaging Service SID; a token bucket)."""
        return self._channel_record("whatsapp", f"pace:{sender}")

    def whatsapp_outbound(self, outbound_id: str) -> str:
        """A sent message kept for its status callbacks (until the dedupe TTL)."""
        return self._channel_record("whatsapp", f"out:{outbound_id}")

    def whatsapp_sid(self, message_sid: str) -> str:
        """Twilio message SID → our outbound id, for callbacks that carry no ``ob`` query."""
        return self._channel_record("whatsapp", f"sid:{message_sid}")

    def whatsapp_content(self, tenant: str, digest: str) -> str:
        """A tenant's Twilio Content resource (its ``HX…`` SID), named by the hash of the
        content's definition: created once, reused by every message that renders alike."""
        return self._channel_record("whatsapp", f"content:{tenant}:{digest}")

    def line_pace(self, destination: str) -> str:
        """Send pacing per LINE channel (bot user id; a token bucket)."""
        return self._channel_record("line", f"pace:{destination}")

    def slack_pace(self, team_id: str, channel_id: str) -> str:
        """Send pacing per Slack workspace and channel (a token bucket)."""
        return self._channel_record("slack", f"pace:{team_id}:{channel_id}")

    def slack_desk_thread(self, tenant: str, channel_id: str, thread: str) -> str:
        """A desk thread we name → the Slack ``thread_ts`` started for it."""
        return self._channel_record("slack", f"desk-thread:{tenant}:{channel_id}:{thread}")

    def slack_desk_thread_of(self, tenant: str, channel_id: str, thread_ts: str) -> str:
        """A Slack ``thread_ts`` → the desk thread we name."""
        return self._channel_record("slack", f"desk-thread-of:{tenant}:{channel_id}:{thread_ts}")

    def slack_installation(self, client_id: str, workspace: str) -> str:
        """A Slack app's installation in one workspace (``T:…``) or org (``E:…``), sealed."""
        return self._channel_record("slack", f"install:{client_id}:{workspace}")

    def slack_token_refresh(self, client_id: str, workspace: str) -> str:
        """Held by the one process refreshing that installation's rotating token."""
        return self._channel_record("slack", f"install-refresh:{client_id}:{workspace}")

    def slack_oauth_state(self, state: str) -> str:
        """An "Add to Slack" OAuth state not yet used → the app block that issued it."""
        return self._channel_record("slack", f"oauth-state:{state}")

    def email_thread(self, tenant: str, message_id: str) -> str:
        """A Message-ID seen or sent → the root Message-ID of its thread (the conversation)."""
        return self._channel_record("email", f"thread:{tenant}:{message_id}")

    def email_quarantine(self, tenant: str) -> str:
        """Mail refused before it became a message (a capped stream, for operators)."""
        return self._channel_record("email", f"quarantine:{tenant}")

    def email_suppressed(self, tenant: str) -> str:
        """Automatic or looping mail taken and not answered (a capped stream)."""
        return self._channel_record("email", f"suppressed:{tenant}")

    def email_attempt(self, idempotency_key: str) -> str:
        """Claimed by a reply's first send attempt (only it takes a reply-rate token)."""
        return self._channel_record("email", f"attempt:{idempotency_key}")

    def email_reply_rate(self, conversation_key: str) -> str:
        """The per-thread reply cap against auto-responder loops (a token bucket)."""
        return self._channel_record("email", f"rate:{conversation_key}")

    def collecting_pace(self, name: str) -> str:
        """Send pacing of a collecting connector (:mod:`connectors.collecting`; a bucket)."""
        return self._channel_record("collect", f"pace:{name}")

    def imap_state_prefix(self) -> str:
        return self._channel_record("email", "imap:")

    def imap_state(self, tenant: str, channel: str, username: str, host: str, mailbox: str) -> str:
        """An IMAP mailbox's UIDVALIDITY and last fetched UID."""
        return f"{self.imap_state_prefix()}{tenant}:{channel}:{username}@{host}/{mailbox}"
