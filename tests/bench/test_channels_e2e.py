"""The per-channel end-to-end rows' plumbing: each case, a few messages, one reply each.

Real processes (redis-server, ``flowbiz serve --role all``) and the platform emulators, as in
``python -m bench --cases e2e.slack,...``; nothing here looks at how fast anything was.
"""

import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bench import channels_e2e
from bench.cases import RunContext
from bench.procs import Placement

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.timeout(60),
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunContext]:
    context = RunContext(workdir=tmp_path_factory.mktemp("bench"), placement=Placement.choose())
    yield context
    if context.redis is not None:
        context.redis.stop()


def test_every_channel_has_a_row_key():
    """`python -m bench --list` names e2e.slack, e2e.line, e2e.whatsapp and e2e.email."""
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--list"], capture_output=True, text=True, check=True
    )
    keys = out.stdout.split()
    assert {"e2e.slack", "e2e.line", "e2e.whatsapp", "e2e.email", "e2e.redis"} <= set(keys)


@pytest.mark.parametrize("key", [c.key for c in channels_e2e.CHANNELS])
def test_each_message_gets_exactly_one_reply_at_the_emulator(ctx, key):
    """Warm-up and run are accepted and each answered once, at the platform's emulator."""
    if key == "email" and shutil.which("openssl") is None:
        pytest.skip("the DKIM key is made with openssl")
    result, notes = channels_e2e.fixed_rate(ctx, channels_e2e.BY_KEY[key], rate=100, seconds=0.2)
    assert result.sent == 20
    assert result.failed_posts == 0
    assert (result.delivered, result.lost) == (20, 0)
    assert result.extra_replies == 0
    if key == "line":
        assert notes == ["120 by reply token, 0 by push (warm-up included)"]
    if key == "email":
        assert notes == ["first reply's DKIM signature verified"]


def test_replies_pair_with_messages_by_where_they_go():
    """The k-th reply to a key answers the k-th message accepted for it; extras are counted."""
    replies: list[tuple[str, float]] = []
    ledger = channels_e2e._Ledger(lambda start: replies[start:])
    first, second, other = ledger.accept("D1"), ledger.accept("D1"), ledger.accept("D2")
    replies += [("D2", 1.0), ("D1", 2.0), ("D1", 3.0), ("D1", 4.0)]
    assert ledger.update() == 4
    arrived = ledger.arrived
    assert arrived[other] < arrived[first] < arrived[second]
    assert ledger.extra() == 1
