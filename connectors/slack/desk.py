"""Slack threads the gateway names, and the names of the people who write in them.

The operators' desk (:mod:`gateway.handoff`) names each customer's thread itself
(``handoff-<hash>``); Slack names a thread by its parent's ``ts``. :class:`ThreadMap` keeps
both directions in the connector's channel records, per tenant and Slack channel, so that

- a message to post into our thread goes into the same Slack thread every time (the first
  one starts it at the channel's top level), and
- a reply in that Slack thread comes back under our thread name — and only in that channel:
  the same ``thread_ts`` anywhere else maps to nothing.

The records have no expiry: one per customer handed off to a Slack desk, and a customer's
later handoffs continue the same thread.

(The names of the people who write there come from ``users.info`` through the store's
name cache, :mod:`gateway.contacts.names`, as for every Slack message.)
"""

from __future__ import annotations

import re

from connectors.base import ConnectorContext

__all__ = ["ThreadMap", "is_slack_ts"]

_SLACK_TS = re.compile(r"^[0-9]+\.[0-9]+$")


def is_slack_ts(thread: str) -> bool:
    """A Slack message timestamp (``1712345678.000100``), as opposed to a name of ours."""
    return _SLACK_TS.match(thread) is not None


class ThreadMap:
    """Our thread name ↔ Slack ``thread_ts``, per tenant and Slack channel."""

    def __init__(self, context: ConnectorContext) -> None:
        self.context = context

    def _ts_key(self, tenant: str, channel_id: str, thread: str) -> str:
        return self.context.keyspace.slack_desk_thread(tenant, channel_id, thread)

    def _name_key(self, tenant: str, channel_id: str, thread_ts: str) -> str:
        return self.context.keyspace.slack_desk_thread_of(tenant, channel_id, thread_ts)

    async def thread_ts(self, tenant: str, channel_id: str, thread: str) -> str | None:
        """The Slack thread started for our ``thread``, if one was."""
        raw = await self.context.store.get_record(self._ts_key(tenant, channel_id, thread))
        return raw.decode() if raw is not None else None

    async def thread_name(self, tenant: str, channel_id: str, thread_ts: str) -> str | None:
        """Our name for this channel's Slack thread ``thread_ts``, if the gateway started it."""
        raw = await self.context.store.get_record(self._name_key(tenant, channel_id, thread_ts))
        return raw.decode() if raw is not None else None

    async def remember(self, tenant: str, channel_id: str, thread: str, thread_ts: str) -> None:
        """Record the Slack thread just started for our ``thread``, both ways.

        The way back is written first: should the process stop in between, a resend starts
        a second Slack thread, and replies in either still reach the same customer.
        """
        store = self.context.store
        await store.put_record(self._name_key(tenant, channel_id, thread_ts), thread.encode())
        await store.put_record(self._ts_key(tenant, channel_id, thread), thread_ts.encode())
