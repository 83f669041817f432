"""The primary SIGKILLed mid-run under Redis Sentinel; the sentinels promote its replica.

The gateway reaches Redis only through three sentinels (``redis+sentinel://``) and takes
a steady load (:mod:`tests.ha.failover_load`). A third of the way through, the primary is
SIGKILLed while its replica lags behind (what it took in its last moments is on the primary
only; see ``_fail_over``). Once the sentinels have promoted the replica, the dead node
comes back as the new primary's replica (as a replacement would), so that writes can again
be confirmed by a replica.

- With ``store.replica_acks: 1``: every message the edge acknowledged is answered exactly
  once, in order per conversation.
- With replica acknowledgement off, what the promoted replica never received is lost; the
  test counts and reports those messages (printed, and as the ``acknowledged_lost`` and
  ``answered_twice`` properties of the test's JUnit record) rather than assert zero.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.http_api.emulator import CallbackReceiver
from tests.conftest import redis_command, start_redis_server
from tests.ha.failover_load import LAG_SECONDS, run_failover
from tests.ha.redis_ha import Replicated, SentinelGroup, info

BALLAST = "ha-test:ballast"  # the test's own key, not the gateway's


def _fail_over(replicated: Replicated, sentinels: SentinelGroup) -> None:
    """Let the replica fall behind, SIGKILL the primary, wait for the sentinels to promote
    the replica, and start the dead node again as the new primary's replica.

    Falling behind: the replica is stopped (SIGSTOP) and the primary given a write larger
    than the sockets between them hold, so what it takes for the next ``LAG_SECONDS`` stays
    in its own output buffer, which dies with it. (A dropped link is no use: a replica
    reconnects at once and catches up from the backlog.)"""
    old, replica = replicated.primary, replicated.replicas[0]
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        assert redis_command(old.port, "SET", BALLAST, "x" * (32 << 20), timeout=10) == b"+OK"
        time.sleep(LAG_SECONDS)
        old.kill()
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while (port := sentinels.master_port()) in (None, old.port):
        if time.monotonic() > deadline:
            pytest.fail("the sentinels did not promote the replica")
        time.sleep(0.05)
    assert port == replica.port
    assert info(port).get("role") == "master"
    replicated.primary = replica
    follower = ["--replicaof", "127.0.0.1", str(port), "--repl-diskless-sync-delay", "0"]
    (old.directory / "redis.log").unlink(missing_ok=True)
    replicated.replicas[0] = start_redis_server(old.directory, port=old.port, extra=follower)


# redis-py now and then drops, unclosed, a connection it opened while the primary moved and
# the gateway stopped: a failed node leaves its cache while one of its connections is in
# use, and nothing closes that connection later (ResourceWarnings when collected, which
# the ha conftest makes happen within this test). The sockets are the client's.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function (StreamWriter|AbstractConnection|ClusterNode"
    "|_SelectorTransport)"
    ":pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("replica_acks", [1, 0], ids=["replica-acks", "no-replica-acks"])
async def test_primary_killed_under_sentinel(
    replica_acks: int,
    replicated: Replicated,
    sentinels: SentinelGroup,
    receiver: CallbackReceiver,
    bot_personas: Path,
    channel_env_on: None,
    record_property: Callable[[str, object], None],
) -> None:
    store = {"url": sentinels.url(), "replica_acks": replica_acks, "replica_ack_timeout_ms": 300}
    outcome = await run_failover(
        store,
        receiver=receiver,
        personas=bot_personas,
        fail_over=lambda: _fail_over(replicated, sentinels),
        expect_all=bool(replica_acks),
    )
    outcome.report(f"sentinel failover, replica_acks={replica_acks}", record_property)
    if replica_acks:
        outcome.assert_each_answered_once_in_order()
