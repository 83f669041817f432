"""bench.replica_acks: both settings are measured against a real primary and replica."""

import shutil

import pytest

from bench.replica_acks import measure

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def test_both_settings_are_measured(tmp_path):
    found = measure(tmp_path, admissions=20, rounds=1)
    assert set(found) == {"0", "1"}
    for row in found.values():
        assert row["rate"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["cpu_us"] > 0
