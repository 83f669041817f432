"""One master of a 3-master Redis Cluster (a replica each) SIGKILLed mid-run; the cluster
promotes its replica by itself.

The same load and checks as the Sentinel test (:mod:`tests.ha.failover_load`), on
``store.cluster: true``. The killed master is the one serving the first conversation's
partition; its replica is made to lag first (stopped, and the master given a write larger
than the sockets between them hold), so what the master takes in its last ``LAG_SECONDS``
dies with it. The cluster (node timeout 1 s) fails the shard over to the replica; the dead
node then restarts from its ``nodes.conf`` and rejoins as the new master's replica.

With ``store.replica_acks: 1`` every acknowledged message is answered exactly once, in
order per conversation: the ``WAIT`` after a write goes to the master that took it (one
per master in a batch). Without, the loss is counted and reported, not asserted.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.http_api.emulator import CallbackReceiver
from gateway.models import conversation_key_of
from gateway.store import Keyspace
from tests.conftest import redis_command
from tests.ha.failover_load import LAG_SECONDS, run_failover
from tests.ha.redis_ha import ReplicatedCluster, info, wait_until
from tests.harness import base_config


def _fail_over(cluster: ReplicatedCluster) -> None:
    """Kill the master serving conversation ``c0``'s partition after letting its replica
    fall behind; wait for the replica's promotion; restart the dead node."""
    keyspace = Keyspace(partitions=base_config("")["store"]["partitions"])
    partition = keyspace.partition(conversation_key_of("acme", "http", "c0", None))
    inbox = keyspace.inbox(partition)
    master = cluster.master_of_key(inbox)
    replica = cluster.replica_of(master)
    ballast = f"ha-test:{{p{partition}}}:ballast"  # the test's own key, in the same slot
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        reply = redis_command(master.port, "SET", ballast, "x" * (32 << 20), timeout=10)
        assert reply == b"+OK", reply
        time.sleep(LAG_SECONDS)
        master.kill()
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    wait_until(lambda: info(replica.port).get("role") == "master", "no replica took over", 20)
    cluster.restart(master)
    cluster.wait_ok()


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
@pytest.mark.timeout(150)
@pytest.mark.parametrize("replica_acks", [1, 0], ids=["replica-acks", "no-replica-acks"])
async def test_master_killed_in_a_replicated_cluster(
    replica_acks: int,
    replicated_cluster: ReplicatedCluster,
    receiver: CallbackReceiver,
    bot_personas: Path,
    channel_env_on: None,
    record_property: Callable[[str, object], None],
) -> None:
    store = {
        "url": replicated_cluster.url,
        "cluster": True,
        "replica_acks": replica_acks,
        "replica_ack_timeout_ms": 300,
    }
    outcome = await run_failover(
        store,
        receiver=receiver,
        personas=bot_personas,
        fail_over=lambda: _fail_over(replicated_cluster),
        expect_all=bool(replica_acks),
    )
    outcome.report(f"cluster failover, replica_acks={replica_acks}", record_property)
    if replica_acks:
        outcome.assert_each_answered_once_in_order()
