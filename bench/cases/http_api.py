"""(b) The HTTP API channel's ingest path on each store, as ``flowbiz serve --role web``.

``--role web`` runs the edge only (verify the v2 HMAC signature, parse, dedupe, durable append,
202) so that workers do not compete for the core; the end-to-end run uses ``--role all``.
Every request carries a fresh event id and its own signature (made before the run; the
channel's replay window is set to an hour so they stay valid).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial

from bench import gateway
from bench.cases import RunContext, ThroughputCase
from bench.procs import Server
from bench.wrk import RawRequest
from gateway.signing import SIGNATURE_HEADER, sign_request

CONVERSATIONS = 1000
TEXTS = ("hello", "what are your opening hours?", "pricing please", "where is order #1234?")


def message_body(n: int, tag: str) -> bytes:
    return json.dumps(
        {
            "conversation_id": f"conv-{n % CONVERSATIONS}",
            "event_id": f"{tag}-{n}",
            "user": {"id": f"user-{n % CONVERSATIONS}", "name": "Bench User"},
            "text": TEXTS[n % len(TEXTS)],
        },
        separators=(",", ":"),
    ).encode()


def signed_messages(count: int, tag: str) -> Iterator[RawRequest]:
    """``count`` messages with unique event ids, each signed as a website would sign it."""
    target = f"/v1/channels/http/{gateway.TENANT}/messages"
    for n in range(count):
        body = message_body(n, tag)
        yield RawRequest(
            method="POST",
            target=target,
            headers=(
                ("Content-Type", "application/json"),
                (SIGNATURE_HEADER, sign_request([gateway.SIGNING_SECRET], "POST", target, body)),
            ),
            body=body,
        )


def _start(ctx: RunContext, *, store: str) -> Server:
    where = ctx.scratch(f"ingest-{store}")
    url = ctx.store_url(store, where)
    data = gateway.config(url)
    data["store"] |= ctx.store_options(store)
    server = gateway.start(
        f"ingest-{store}",
        data,
        workdir=where,
        cores=ctx.placement.server,
        role="web",
    )
    server.extra["store_url"] = url
    return server


def _check(ctx: RunContext, server: Server) -> str:
    url = server.extra["store_url"]
    return f"inbox holds {gateway.count_inbox(url)} entries"


def cases() -> list[ThroughputCase]:
    return [
        ThroughputCase(
            key="http.memory",
            label="(b) http ingest, memory store (reference)",
            requests=signed_messages,
            start=partial(_start, store="memory"),
        ),
        ThroughputCase(
            key="http.sqlite",
            label="(b) http ingest, sqlite",
            requests=signed_messages,
            start=partial(_start, store="sqlite"),
            check=_check,
        ),
        ThroughputCase(
            key="http.redis",
            label="(b) http ingest, redis",
            requests=signed_messages,
            start=partial(_start, store="redis"),
            check=_check,
            needs=("redis-server",),
        ),
        ThroughputCase(
            key="http.redis-always",
            label="(b) http ingest, redis, appendfsync always",
            requests=signed_messages,
            start=partial(_start, store="redis-always"),
            check=_check,
            needs=("redis-server",),
        ),
        ThroughputCase(
            key="http.redis-replica",
            label="(b) http ingest, redis + 1 replica, replica_acks 1",
            requests=signed_messages,
            start=partial(_start, store="redis-replica"),
            check=_check,
            needs=("redis-server",),
        ),
    ]
