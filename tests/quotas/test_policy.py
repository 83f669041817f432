"""The quota policy on real stores: exact limits under concurrency, pushes, warnings, plans."""

import asyncio

import aiohttp
import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.quotas import QuotaPolicy
from gateway.store import Keyspace, open_store
from gateway.usage import read_usage
from tests.e2e.conftest import http_tenant
from tests.harness import base_config


def _config(store_url, plans, *, notify_url=None):
    tenant = http_tenant(None)
    tenant["plan"] = "metered"
    if notify_url is not None:
        tenant |= {
            "notify_url": notify_url,
            "notify_secrets": ["env:T_NOTIFY"],
            "notify_allow_private": True,  # the test receiver listens on loopback
        }
    data = base_config(store_url, tenants=[tenant])
    data["plans"] = {"metered": plans, "big": {"monthly_outbound_messages": 1000}}
    return parse_config(data)


@pytest.fixture
async def stores(store_url):
    """Two separate connections to one store, as two gateway processes would have."""
    first, second = await open_store(store_url), await open_store(store_url)
    yield first, second
    await first.aclose()
    await second.aclose()


def _policy(config, store, http=None):
    keyspace = Keyspace(prefix=config.store.prefix, partitions=config.store.partitions)
    return QuotaPolicy(config=config, store=store, keyspace=keyspace, metrics=Metrics(), http=http)


async def test_concurrent_reservations_take_exactly_the_limit(store_url, stores):
    """120 concurrent one-message reservations over two connections: exactly 25 succeed."""
    config = _config(store_url, {"monthly_outbound_messages": 25})
    policies = [_policy(config, s) for s in stores]
    results = await asyncio.gather(
        *(policies[n % 2].reserve_outbound("acme", 1) for n in range(120))
    )
    assert sum(results) == 25
    status = await policies[0].status("acme")
    assert status.outbound_messages.used == 25
    assert status.outbound_messages.remaining == 0
    assert await policies[1].outbound_exhausted("acme")


async def test_multi_message_reservation_is_all_or_nothing(store_url, stores):
    """A 3-message reservation that does not fit takes nothing; a 2-message one then fits."""
    config = _config(store_url, {"monthly_outbound_messages": 5})
    policy = _policy(config, stores[0])
    assert await policy.reserve_outbound("acme", 3)
    assert not await policy.reserve_outbound("acme", 3)
    assert await policy.reserve_outbound("acme", 2)
    assert (await policy.status("acme")).outbound_messages.used == 5
    await policy.release_outbound("acme", 2)
    assert (await policy.status("acme")).outbound_messages.used == 3


async def test_paid_push_cap_counts_pushes_and_refuses_past_it(store_url, stores):
    """allow_paid_push allows the plan's pushes, then refuses; usage shows both."""
    config = _config(store_url, {"monthly_line_pushes": 2})
    policy = _policy(config, stores[0])
    answers = [await policy.allow_paid_push("acme") for _ in range(4)]
    assert answers == [True, True, False, False]
    [row] = await read_usage(stores[0], policy.keyspace, tenant="acme")
    assert (row.channel, row.line_pushes, row.over_quota) == ("line", 2, 2)


async def test_soft_limit_warning_is_signed_and_sent_once(store_url, stores, notify_receiver):
    """Crossing 60% of the quota sends one signed webhook per window, however often crossed."""
    config = _config(
        store_url,
        {"monthly_outbound_messages": 10, "soft_limit_ratio": 0.6},
        notify_url=notify_receiver.url,
    )
    async with aiohttp.ClientSession() as http:
        policies = [_policy(config, s, http) for s in stores]
        for n in range(10):
            assert await policies[n % 2].reserve_outbound("acme", 1)
        [warning] = await notify_receiver.wait_for(1)
        for policy in policies:
            await policy.aclose()
    assert warning.signature_valid
    assert warning.payload["type"] == "quota.soft_limit"
    assert (warning.payload["used"], warning.payload["limit"]) == (6, 10)
    assert len(notify_receiver.received) == 1
    assert notify_receiver.rejected == 0


async def test_plan_override_applies_to_every_process(store_url, stores):
    """A plan set through one connection changes the limits seen through another."""
    config = _config(store_url, {"monthly_outbound_messages": 1})
    first, second = (_policy(config, s) for s in stores)
    assert await first.reserve_outbound("acme", 1)
    assert not await first.reserve_outbound("acme", 1)
    await second.set_plan("acme", "big")
    fresh = _policy(config, stores[0])  # no cached plan: what another process would see
    assert await fresh.plan_name("acme") == "big"
    assert await fresh.reserve_outbound("acme", 1)


def test_tenant_plan_must_name_a_declared_plan(tmp_path):
    """A tenant on an undeclared plan, or a notify_url without secrets, is a config error."""
    tenant = http_tenant(None) | {"plan": "gold", "notify_url": "http://127.0.0.1:1/n"}
    data = base_config(f"sqlite:///{tmp_path}/g.db", tenants=[tenant])
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    paths = [path for path, _ in caught.value.problems]
    assert "tenants.0" in paths  # notify_url needs notify_secrets
    tenant.pop("notify_url")
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.problems == [("tenants.0.plan", "unknown plan 'gold'")]


def test_configs_without_plans_keep_working(tmp_path):
    """The built-in plan names exist without limits, so older configs stay valid."""
    tenant = http_tenant(None) | {"plan": "pro"}
    config = parse_config(base_config(f"sqlite:///{tmp_path}/g.db", tenants=[tenant]))
    assert config.plans["pro"].monthly_outbound_messages is None
