"""A gateway process whose link to Redis is black-holed loses its partitions to a live one.

Two gateway processes (``all`` roles) share one redis-server; process A reaches it through
a :class:`~tests.faults.tcp_proxy.TcpFaultProxy`, B directly. When A's link goes into a
black hole, A cannot renew its leases nor its membership: they expire, B takes every worker
and dispatcher partition over, claims what A left pending and answers it, and the messages
platforms post meanwhile (to B, the process the load balancer still sees ready) are
answered too. A's ``/readyz`` names the store all along. Once the link heals A learns it
lost its partitions, the two share them again, and every acknowledged message has been
answered exactly once, in order per conversation.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from gateway.partitions import PartitionConsumer
from tests.conftest import RedisServer
from tests.faults.conftest import SECRETS, dead_letters
from tests.faults.tcp_proxy import TcpFaultProxy
from tests.faults.test_redis_link_faults import (
    Conversations,
    assert_answered_once_in_order,
    gateway_data,
    proxied_url,
    readyz,
)
from tests.harness import RunningGateway, eventually, running_gateway

PARTITIONS = 4


def holdings(gw: RunningGateway) -> dict[str, list[int]]:
    return {c.role: c.owned_partitions for c in gw.runtime.consumers}


def owns_all(gw: RunningGateway) -> bool:
    return all(len(owned) == PARTITIONS for owned in holdings(gw).values())


def shares(a: RunningGateway, b: RunningGateway) -> bool:
    """Both hold partitions of both roles, and no partition is held twice."""
    for role in ("worker", "dispatcher"):
        held_a, held_b = holdings(a)[role], holdings(b)[role]
        if not held_a or not held_b or set(held_a) & set(held_b):
            return False
    return True


@pytest.mark.slow
@pytest.mark.redis
async def test_black_holed_process_loses_its_partitions_to_a_live_one(
    redis_url: str,
    redis_server: RedisServer,
    receiver: CallbackReceiver,
    echo_personas: Path,
    short_store_timeout: None,
) -> None:
    """B answers A's partitions while A's link is a black hole; nothing lost or repeated."""
    proxy = await TcpFaultProxy(redis_server.port).start()
    data_a = gateway_data(proxied_url(proxy), receiver, echo_personas)
    data_b = gateway_data(redis_url, receiver, echo_personas)
    try:
        async with (
            running_gateway(data_b) as gw_b,
            running_gateway(data_a) as gw_a,
            aiohttp.ClientSession() as session,
        ):
            await eventually(lambda: shares(gw_a, gw_b), timeout=20)
            client_a, client_b = (
                HttpChannelClient(
                    session=session,
                    base_url=gw.url,
                    tenant="acme",
                    signing_secret=SECRETS["T_SIGN"],
                )
                for gw in (gw_a, gw_b)
            )
            before = Conversations(client_a, "before")  # admitted by A, answered by both
            await before.run(4, 3)
            await receiver.wait_for(before.total, timeout=20)
            held_by_a = holdings(gw_a)

            proxy.blackhole()
            during = Conversations(client_b, "during")
            await asyncio.wait_for(during.run(8, 4), timeout=60)
            # Answered although A held some of their partitions when the fault began.
            await eventually(lambda: owns_all(gw_b), timeout=20)
            await receiver.wait_for(before.total + during.total, timeout=30)
            status, problems = await readyz(session, gw_a)
            assert status == 503
            assert any(problem.startswith("store") for problem in problems), problems
            assert await readyz(session, gw_b) == (200, [])

            await proxy.heal()
            await eventually(lambda: shares(gw_a, gw_b), timeout=30)
            await eventually(lambda: _ready(session, gw_a), timeout=30)
            after = Conversations(client_a, "after")
            await asyncio.wait_for(after.run(8, 3), timeout=60)
            await assert_answered_once_in_order(receiver, before, during, after)
            assert await dead_letters(gw_b) == []
            assert all(held_by_a.values()), "A held no partition to lose"
            assert all(_consumer(gw, role).running for gw in (gw_a, gw_b) for role in held_by_a)
    finally:
        await proxy.stop()


async def _ready(session: aiohttp.ClientSession, gw: RunningGateway) -> bool:
    return (await readyz(session, gw)) == (200, [])


def _consumer(gw: RunningGateway, role: str) -> PartitionConsumer:
    return next(c for c in gw.runtime.consumers if c.role == role)
