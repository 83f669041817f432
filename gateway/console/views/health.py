"""Health: this process and its roles, the partitions it leases, queue depths, the store.

The verdicts are the operations endpoints' own: :func:`gateway.admin.routes.health_of`
(what ``/v1/health`` answers) and :func:`gateway.operations.readiness_problems` (why
``/readyz`` would refuse). Queue depths are the store's backlog of each partition's inbox
(the workers' group) and outbox (the dispatchers' group), the numbers the partition owners
report as ``flowbiz_queue_depth``. The page needs ``getHealth`` (any role).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.admin.routes import health_of
from gateway.console.web import PAGES, Ctx, Page, page
from gateway.deadletters import OUTBOX_GROUP
from gateway.errors import StoreError
from gateway.ingest import INBOX_GROUP
from gateway.readiness import readiness_problems

__all__ = ["PAGE", "add_routes"]

PAGE = Page(path="/console/health", title="Health", operation="getHealth")


@dataclass(frozen=True, slots=True)
class PartitionRow:
    partition: int
    inbox: int | None  # None: the store did not answer
    outbox: int | None
    worker: bool  # this process holds the partition's worker lease
    dispatcher: bool


async def _partitions(ctx: Ctx) -> list[PartitionRow]:
    held = {c.role: set(c.owned_partitions) for c in ctx.runtime.consumers}
    found: list[PartitionRow] = []
    for p in range(ctx.keyspace.partitions):
        inbox: int | None
        outbox: int | None
        try:
            inbox = await ctx.store.backlog(ctx.keyspace.inbox(p), INBOX_GROUP)
            outbox = await ctx.store.backlog(ctx.keyspace.outbox(p), OUTBOX_GROUP)
        except StoreError:
            inbox = outbox = None
        found.append(
            PartitionRow(
                partition=p,
                inbox=inbox,
                outbox=outbox,
                worker=p in held.get("worker", set()),
                dispatcher=p in held.get("dispatcher", set()),
            )
        )
    return found


@page
async def health(ctx: Ctx) -> web.StreamResponse:
    rt = ctx.runtime
    report = await health_of(rt)
    partitions = await _partitions(ctx)
    known = [r for r in partitions if r.inbox is not None and r.outbox is not None]
    return ctx.render(
        "health.html",
        title="Health",
        report=report,
        problems=await readiness_problems(rt),
        process=rt.consumer_id,
        operations_url=rt.operations_url,
        partitions=partitions,
        inbox_total=sum(r.inbox or 0 for r in known),
        outbox_total=sum(r.outbox or 0 for r in known),
        lease_seconds=rt.config.pipeline.lease_seconds,
        store_kind=rt.config.store.url.split(":", 1)[0],
    )


def add_routes(router: web.UrlDispatcher) -> None:
    PAGES.append(PAGE)
    router.add_get(PAGE.path, health)
