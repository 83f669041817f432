"""Prometheus metrics, one registry per app (so tests and several apps never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.inbound = Counter(
            "flowbiz_inbound_total",
            "Inbound requests/events by channel and outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.ingest_seconds = Histogram(
            "flowbiz_ingest_seconds",
            "Time from request received to durable append",
            ["channel"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "flowbiz_end_to_end_seconds",
            "Time from inbound received to reply delivered",
            ["channel"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.agent_seconds = Histogram(
            "flowbiz_agent_seconds",
            "Agent answer time by persona",
            ["persona", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "flowbiz_queue_depth",
            "Entries not yet acknowledged, by queue",
            ["queue"],
            registry=r,
        )
        self.deliveries = Counter(
            "flowbiz_deliveries_total",
            "Delivery attempts by channel and outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "flowbiz_delivery_retries_total",
            "Delivery retries scheduled, by channel",
            ["channel"],
            registry=r,
        )
        self.dead_letters = Counter(
            "flowbiz_dead_letters_total",
            "Messages moved to the dead-letter list, by channel and reason",
            ["channel", "reason"],
            registry=r,
        )
        self.partition_entries_left = Counter(
            "flowbiz_partition_entries_left_total",
            "Queued entries a consumer left pending unhandled, because it lost the partition's "
            "lease or was stopping; the partition's next owner claims them",
            ["role"],
            registry=r,
        )
        self.turns = Counter(
            "flowbiz_turns_total",
            "Inbound messages handled by the worker, by outcome",
            ["outcome"],
            registry=r,
        )
        self.channel_events = Counter(
            "flowbiz_channel_events_total",
            "Connector-specific events (unknown events, pushes, status callbacks…)",
            ["channel", "event"],
            registry=r,
        )
        self.quota_events = Counter(
            "flowbiz_quota_events_total",
            "Quota and rate-limit decisions, by limit and outcome",
            ["limit", "outcome"],
            registry=r,
        )
        self.contact_lookups = Counter(
            "flowbiz_contact_lookups_total",
            "Display-name look-ups in the parse step, by channel and outcome "
            "(cached, fetched, unknown, failed)",
            ["channel", "outcome"],
            registry=r,
        )
        self.routing_unreachable = Counter(
            "flowbiz_routing_unreachable_total",
            "Personas routing skipped because they may not answer where the message arrived",
            ["step"],
            registry=r,
        )
        self.admin_errors = Counter(
            "flowbiz_admin_errors_total",
            "Admin API requests refused for bad input or a store outage, by operation and error",
            ["operation", "error"],
            registry=r,
        )
        self.listener_up = Gauge(
            "flowbiz_listener_up",
            "1 while a long-lived listener (socket, SMTP, IMAP) is connected",
            ["listener"],
            registry=r,
        )
        self.replica_acks_short = Counter(
            "flowbiz_store_replica_acks_short_total",
            "Acknowledging store writes failed because fewer replicas than store.replica_acks "
            "confirmed them in time (an admission among them was answered 503)",
            registry=r,
        )

        self.http_guard = Counter(
            "flowbiz_http_guard_total",
            "Connections refused or closed by a listener's guard, by listener and event "
            "(too_many_connections, header_timeout, body_timeout)",
            ["listener", "event"],
            registry=r,
        )
        self.media = Counter(
            "flowbiz_media_total",
            "Files by channel, direction (in: kept from a platform; out: sent) and outcome "
            "(kept, sent, too_large, type_not_allowed, fetch_failed, degraded…)",
            ["channel", "direction", "outcome"],
            registry=r,
        )
        self.typing = Counter(
            "flowbiz_typing_indicators_total",
            "Typing indicators shown while an agent answers, by channel and outcome (shown, "
            "skipped, failed, timeout)",
            ["channel", "outcome"],
            registry=r,
        )
        self.reply_drafts = Counter(
            "flowbiz_reply_drafts_total",
            "Drafts of a reply shown while a streaming agent writes it, by channel and outcome "
            "(shown, skipped, failed, timeout)",
            ["channel", "outcome"],
            registry=r,
        )
        self.media_links = Counter(
            "flowbiz_media_links_total",
            "Requests for kept files through signed links, by outcome (served, bad_link, "
            "expired_or_forged, not_found, store_failed)",
            ["outcome"],
            registry=r,
        )

        self.email_actions = Counter(
            "flowbiz_email_action_links_total",
            "Choice links in mailed replies, by outcome (shown: the confirmation page; "
            "received; duplicate; forged; expired)",
            ["outcome"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
