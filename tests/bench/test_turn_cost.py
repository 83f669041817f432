"""bench.turn_cost: the in-process worker and dispatcher measure runs and counts what it says."""

import shutil

import pytest

from bench import gateway
from bench.turn_cost import measure

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def test_every_message_is_answered_and_counted(tmp_path, monkeypatch):
    """Each measured message gets its reply delivered; CPU and Redis commands are counted."""
    for name, value in gateway.SECRETS.items():  # set by measure; removed again afterwards
        monkeypatch.setenv(name, value)
    cost = measure(tmp_path, messages=12, warmup=3)
    assert cost.messages == 12
    assert cost.replies == 12  # the rules agent answers each text once, and each is sent
    assert cost.worker_us > 0
    assert cost.dispatcher_us > 0
    # A turn reads the state and commits; a delivery checks its record and commits.
    assert cost.worker_commands >= 2
    assert cost.dispatcher_commands >= 2
