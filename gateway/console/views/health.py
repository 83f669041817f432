"""Health: every live process of the deployment and its roles, who holds each partition's
leases, queue depths, the store.

The verdicts are the operations endpoints' own: :func:`gateway.admin.routes.health_of`
(what ``/v1/health`` answers) and :func:`gateway.operations.readiness_problems` (why
``/readyz`` would refuse). Processes (the partition consumers' and the ``web`` membership
sets) and leases are read from the store with the read-only
:meth:`~gateway.store.Store.members` and :meth:`~gateway.store.Store.lease_holders`, so
looking never joins a membership set or takes a lease: the page shows the processes of
every host sharing the store, not only the one serving it. Queue depths are the store's
backlog of each partition's inbox (the workers' group) and outbox (the dispatchers' group),
the numbers the partition owners report as ``flowbiz_queue_depth``.

The page needs ``getHealth`` (any role). A tenant-scoped key sees the processes, partitions
and leases (they describe the deployment, not any tenant) but not the queue depths: those
count every tenant's messages, so they would show one tenant another's traffic.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from gateway.admin.routes import health_of
from gateway.console.web import PAGES, Ctx, Page, page
from gateway.deadletters import OUTBOX_GROUP
from gateway.errors import StoreError
from gateway.ingest import INBOX_GROUP
from gateway.readiness import readiness_problems
from gateway.store import Holding

__all__ = ["PAGE", "add_routes"]

PAGE = Page(path="/console/health", title="Health", operation="getHealth")

# The roles that lease partitions: gateway.app starts one PartitionConsumer of each.
ROLES = ("worker", "dispatcher")
# Processes serving requests (--role web or all): a membership heartbeat, no partitions.
WEB = "web"


@dataclass(frozen=True, slots=True)
class PartitionRow:
    partition: int
    inbox: int | None  # None: not shown to this caller, or the store did not answer
    outbox: int | None
    holders: dict[str, Holding | None]  # per role; None: nobody holds the lease


@dataclass(frozen=True, slots=True)
class ProcessRow:
    process: str
    role: str
    partitions: list[int]
    heartbeat: float | None  # seconds its membership has left; None: not in the set
    this: bool  # the process serving this page


@dataclass(frozen=True, slots=True)
class Deployment:
    processes: list[ProcessRow]
    partitions: list[PartitionRow]
    unheld: dict[str, list[int]]  # per role, the partitions nobody holds
    error: str | None  # the store did not answer: leases and processes unknown


async def _backlogs(ctx: Ctx) -> list[tuple[int | None, int | None]]:
    async def one(p: int) -> tuple[int | None, int | None]:
        try:
            return (
                await ctx.store.backlog(ctx.keyspace.inbox(p), INBOX_GROUP),
                await ctx.store.backlog(ctx.keyspace.outbox(p), OUTBOX_GROUP),
            )
        except StoreError:
            return None, None

    return list(await asyncio.gather(*(one(p) for p in range(ctx.keyspace.partitions))))


async def _role(ctx: Ctx, role: str) -> tuple[list[Holding], dict[int, Holding | None]]:
    """The role's live members and each partition's lease holder."""
    keys = {p: ctx.keyspace.lease(role, p) for p in range(ctx.keyspace.partitions)}
    members = await ctx.store.members(ctx.keyspace.members(role))
    holders = await ctx.store.lease_holders(list(keys.values()))
    return members, {p: holders[key] for p, key in keys.items()}


async def _deployment(ctx: Ctx, *, depths: bool) -> Deployment:
    count = ctx.keyspace.partitions
    backlogs = await _backlogs(ctx) if depths else [(None, None)] * count
    try:
        roles = dict(zip(ROLES, await asyncio.gather(*(_role(ctx, r) for r in ROLES)), strict=True))
        web = await ctx.store.members(ctx.keyspace.web_members())
    except StoreError as exc:
        rows = [PartitionRow(p, *backlogs[p], holders={}) for p in range(count)]
        return Deployment(processes=[], partitions=rows, unheld={}, error=str(exc)[:500])
    processes: list[ProcessRow] = []
    for role, (members, holders) in roles.items():
        held: dict[str, list[int]] = {m.owner: [] for m in members}
        for p, holder in holders.items():
            if holder is not None:  # a holder whose heartbeat lapsed is listed all the same
                held.setdefault(holder.owner, []).append(p)
        beats = {m.owner: m.expires_in for m in members}
        processes += [
            ProcessRow(name, role, sorted(parts), beats.get(name), name == ctx.runtime.consumer_id)
            for name, parts in sorted(held.items())
        ]
    processes += [
        ProcessRow(m.owner, WEB, [], m.expires_in, m.owner == ctx.runtime.consumer_id) for m in web
    ]
    rows = [
        PartitionRow(p, *backlogs[p], holders={r: roles[r][1][p] for r in ROLES})
        for p in range(count)
    ]
    unheld = {r: [p for p, h in roles[r][1].items() if h is None] for r in ROLES}
    return Deployment(processes=processes, partitions=rows, unheld=unheld, error=None)


@page
async def health(ctx: Ctx) -> web.StreamResponse:
    rt = ctx.runtime
    report = await health_of(rt)
    depths = ctx.caller.key.tenant is None
    deployment = await _deployment(ctx, depths=depths)
    known = [r for r in deployment.partitions if r.inbox is not None and r.outbox is not None]
    return ctx.render(
        "health.html",
        title="Health",
        report=report,
        problems=await readiness_problems(rt),
        process=rt.consumer_id,
        running={c.role: c.running for c in rt.consumers},
        operations_url=rt.operations_url,
        roles=ROLES,
        process_roles=(*ROLES, WEB),
        deployment=deployment,
        depths=depths,
        inbox_total=sum(r.inbox or 0 for r in known),
        outbox_total=sum(r.outbox or 0 for r in known),
        lease_seconds=rt.config.pipeline.lease_seconds,
        store_kind=rt.config.store.url.split(":", 1)[0],
    )


def add_routes(router: web.UrlDispatcher) -> None:
    PAGES.append(PAGE)
    router.add_get(PAGE.path, health)
