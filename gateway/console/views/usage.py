"""Usage and quotas: per tenant, day, channel and persona, as charts and tables, and the
quota used against the plan.

The numbers are the admin API's own: :func:`gateway.usage.read_usage` (``getTenantUsage``)
and :meth:`gateway.quotas.QuotaPolicy.status` (``getTenantQuota``), asked per tenant. A
tenant the caller's key may not read answers like one that does not exist (404), so a
tenant-scoped key sees its own tenant only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from aiohttp import web

from gateway.console.charts import Chart, bars
from gateway.console.web import PAGES, Ctx, Page, page
from gateway.models import utcnow
from gateway.usage import METRICS, UsageRow, read_usage

__all__ = ["PAGE", "add_routes"]

PAGE = Page(path="/console/usage", title="Usage", operation="getTenantUsage")
DEFAULT_DAYS = 30
MAX_DAYS = 400  # the counters' retention (gateway.usage.USAGE_TTL_SECONDS)
LABELS: Mapping[str, str] = {
    "inbound": "inbound",
    "outbound": "outbound",
    "line_pushes": "pushes",
    "agent_ms": "agent time (s)",
    "dead_letters": "dead letters",
    "over_quota": "over quota",
    "rate_limited": "rate limited",
    "reply_capped": "reply capped",
}


@dataclass(slots=True)
class Totals:
    """The counts of one group of rows (a day, a channel, a persona)."""

    name: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRICS, 0))

    def add(self, row: UsageRow) -> None:
        for metric in METRICS:
            self.counts[metric] += getattr(row, metric)

    def shown(self, metric: str) -> str:
        value = self.counts[metric]
        return f"{value / 1000:.1f}" if metric == "agent_ms" else str(value)


def _group(rows: Iterable[UsageRow], key: str, names: Iterable[str] = ()) -> list[Totals]:
    groups = {name: Totals(name) for name in names}
    for row in rows:
        name = str(getattr(row, key))
        groups.setdefault(name, Totals(name)).add(row)
    return sorted(groups.values(), key=lambda t: t.name)


def _day(raw: str | None, default: date) -> date:
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise web.HTTPBadRequest(text="since and until are days: YYYY-MM-DD") from None


def _period(ctx: Ctx) -> tuple[date, date]:
    today = utcnow().date()
    until = _day(ctx.request.query.get("until"), today)
    since = _day(ctx.request.query.get("since"), until - timedelta(days=DEFAULT_DAYS - 1))
    if since > until or (until - since).days >= MAX_DAYS:
        raise web.HTTPBadRequest(text=f"since must be before until, at most {MAX_DAYS} days")
    return since, until


def _charts(days: list[Totals], channels: list[Totals], personas: list[Totals]) -> list[Chart]:
    names = [d.name[5:] for d in days]  # MM-DD under the axis; the table has the full day
    return [
        bars(
            "Messages per day",
            names,
            {LABELS[m]: [d.counts[m] for d in days] for m in ("inbound", "outbound")},
        ),
        bars(
            "Pushes and dead letters per day",
            names,
            {LABELS[m]: [d.counts[m] for d in days] for m in ("line_pushes", "dead_letters")},
        ),
        bars(
            "Agent time per day (s)",
            names,
            {LABELS["agent_ms"]: [d.counts["agent_ms"] // 1000 for d in days]},
        ),
        bars(
            "Messages per channel",
            [c.name for c in channels],
            {LABELS[m]: [c.counts[m] for c in channels] for m in ("inbound", "outbound")},
        ),
        bars(
            "Messages per persona",
            [p.name for p in personas],
            {LABELS[m]: [p.counts[m] for p in personas] for m in ("inbound", "outbound")},
        ),
    ]


@page
async def usage(ctx: Ctx) -> web.StreamResponse:
    tenants = ctx.tenants("getTenantUsage")
    tenant = ctx.request.query.get("tenant") or (tenants[0] if tenants else "")
    if tenants and tenant not in tenants:
        raise web.HTTPNotFound(text="no such tenant")
    since, until = _period(ctx)
    rows = (
        await read_usage(ctx.store, ctx.keyspace, tenant=tenant, since=since, until=until)
        if tenant
        else []
    )
    quota = (
        await ctx.runtime.quotas.status(tenant)
        if tenant and ctx.runtime.quotas is not None and ctx.may("getTenantQuota", tenant)
        else None
    )
    every_day = [(since + timedelta(days=n)).isoformat() for n in range((until - since).days + 1)]
    days = _group(rows, "day", every_day)
    channels = _group(rows, "channel")
    personas = _group(rows, "persona")
    charts = _charts(days, channels, personas)
    total = Totals("total")
    for row in rows:
        total.add(row)
    return ctx.render(
        "usage.html",
        title="Usage",
        tenants=tenants,
        tenant=tenant,
        since=since.isoformat(),
        until=until.isoformat(),
        quota=quota,
        sections=[
            ("Per day", days, charts[0:3]),
            ("Per channel", channels, charts[3:4]),
            ("Per persona", personas, charts[4:5]),
        ],
        rows=rows,
        total=total,
        metrics=METRICS,
        labels=LABELS,
    )


def add_routes(router: web.UrlDispatcher) -> None:
    PAGES.append(PAGE)
    router.add_get(PAGE.path, usage)
