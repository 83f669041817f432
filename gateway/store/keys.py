"""Every store key the gateway uses, built in one place.

Conversations are spread over ``partitions`` partitions by a stable hash of their key. All
keys of one partition carry the Redis Cluster hash tag ``{pN}``, so one conversation's
inbox, outbox, state, dedupe claims and delivery records share one cluster slot and can be
updated in one atomic script. Cross-partition keys (leases, membership, tenant counters)
carry no partition tag and are only ever touched one key at a time.
"""

from __future__ import annotations

import zlib
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

    def seen(self, partition: int, scope: str, event_id: str) -> str:
        """Dedupe claim for a platform event id within ``scope`` (channel + tenant)."""
        return f"{self._p(partition)}:seen:{scope}:{event_id}"

    def replayed(self, partition: int, entry_id: str) -> str:
        """Claimed by the one replay a dead letter may have."""
        return f"{self._p(partition)}:dead:replayed:{entry_id}"

    def delivered(self, partition: int, idempotency_key: str) -> str:
        return f"{self._p(partition)}:delivered:{idempotency_key}"

    # -- per conversation (inside its partition) ---------------------------------------------
    def conversation_prefix(self, conversation_key: str) -> str:
        return f"{self._p(self.partition(conversation_key))}:c:{conversation_key}:"

    def state(self, conversation_key: str) -> str:
        return self.conversation_prefix(conversation_key) + "state"

    def replies(self, conversation_key: str) -> str:
        return self.conversation_prefix(conversation_key) + "replies"

    def receipts(self, conversation_key: str) -> str:
        return self.conversation_prefix(conversation_key) + "receipts"

    def conversation_record(self, conversation_key: str, name: str) -> str:
        return self.conversation_prefix(conversation_key) + name

    def conversation_index(self, tenant: str, conversation_key: str) -> str:
        """The tenant's index entry for a conversation (admin listing), in its partition."""
        return self.conversation_index_prefix(tenant, self.partition(conversation_key)) + (
            conversation_key
        )

    def conversation_index_prefix(self, tenant: str, partition: int) -> str:
        return f"{self._p(partition)}:ix:{tenant}:"

    # -- cluster-wide ----------------------------------------------------------------------------
    def lease(self, role: str, partition: int) -> str:
        return f"{self.prefix}:lease:{role}:{partition}"

    def members(self, role: str) -> str:
        return f"{self.prefix}:members:{role}"

    def web_members(self) -> str:
        """The processes serving requests (``--role web`` or ``all``), for the Health page."""
        return self.members("web")

    def tenant_record(self, tenant: str, name: str) -> str:
        return f"{self.prefix}:t:{tenant}:{name}"

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
        return f"{self.prefix}:personas:version"

    def signature_nonce(self, channel: str, tenant: str, replay_key: str) -> str:
        """Claimed by the one use a signed request may have (the HTTP channel's reply polls)."""
        return f"{self.prefix}:nonce:{channel}:{tenant}:{replay_key}"

    def console_session(self, token_digest: str) -> str:
        """A console sign-in, named by the SHA-256 of its cookie token (never the token)."""
        return f"{self.prefix}:console:session:{token_digest}"

    def console_activity(self) -> str:
        """Bumped by every handoff change outside a worker turn: the console's live pages
        notice operator actions (from any desk or process) without reading every state."""
        return f"{self.prefix}:console:activity"

    def channel_record(self, channel: str, name: str) -> str:
        """Connector-owned records (e.g. IMAP UIDs, cached auth)."""
        return f"{self.prefix}:ch:{channel}:{name}"
