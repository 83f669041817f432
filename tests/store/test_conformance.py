"""One suite, three stores: memory (the reference), SQLite and Redis must agree.

Every test in the first part runs once per store through the ``store`` fixture. Entry ids
are opaque, so tests compare them only with ids the store itself returned. TTLs are short
(a few tenths of a second) and the sleeps leave a margin either way.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster as RedisClusterClient

from gateway.errors import ConfigError, CursorError, StoreError
from gateway.store import Admission, Commit, LogAppend, StateWrite, Store, open_store
from gateway.store.cursors import MAX_LOG_ID
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore
from tests.conftest import free_port, redis_reply, start_redis_cluster, start_redis_server
from tests.harness import eventually

P0 = "t:{p0}"
P1 = "t:{p1}"
INBOX = f"{P0}:inbox"
OUTBOX = f"{P0}:outbox"


async def payloads(store: Store, stream: str) -> list[bytes]:
    return [e.payload for e in await store.range(stream, count=10_000)]


# -- ingest ------------------------------------------------------------------------------------
async def test_ping_answers(store: Store) -> None:
    """A freshly opened store is reachable."""
    await store.ping()


async def test_admit_appends_new_keys_and_skips_duplicates(store: Store) -> None:
    """A new dedupe key appends; a claimed one (even within the same call) returns None."""
    first = await store.admit(
        [
            Admission(f"{P0}:seen:a", INBOX, b"a"),
            Admission(f"{P0}:seen:b", INBOX, b"b"),
            Admission(f"{P0}:seen:a", INBOX, b"a-again"),
        ],
        dedupe_ttl=60,
    )
    assert first[0] is not None
    assert first[1] is not None
    assert first[2] is None
    again = await store.admit([Admission(f"{P0}:seen:b", INBOX, b"b-again")], dedupe_ttl=60)
    assert again == [None]
    entries = await store.range(INBOX)
    assert [(e.id, e.payload) for e in entries] == [(first[0], b"a"), (first[1], b"b")]
    assert await store.admit([], dedupe_ttl=60) == []


async def test_admit_dedupe_expires(store: Store) -> None:
    """Once the dedupe TTL passes, the same key is admitted again."""
    item = Admission(f"{P0}:seen:x", INBOX, b"x")
    assert (await store.admit([item], dedupe_ttl=0.2))[0] is not None
    assert await store.admit([item], dedupe_ttl=0.2) == [None]
    await asyncio.sleep(0.35)
    assert (await store.admit([item], dedupe_ttl=0.2))[0] is not None
    assert await payloads(store, INBOX) == [b"x", b"x"]


async def test_concurrent_admits_append_each_key_once(store: Store) -> None:
    """200 concurrent admits of 50 keys over two partitions append exactly 50 entries."""

    async def one(n: int) -> str | None:
        key = n % 50
        part = P0 if key % 2 else P1
        (result,) = await store.admit(
            [Admission(f"{part}:seen:{key}", f"{part}:inbox", str(key).encode())], dedupe_ttl=60
        )
        return result

    results = await asyncio.gather(*(one(n) for n in range(200)))
    assert sum(r is not None for r in results) == 50
    odd = await payloads(store, f"{P0}:inbox")
    even = await payloads(store, f"{P1}:inbox")
    assert sorted(odd + even, key=int) == [str(k).encode() for k in range(50)]
    assert all(int(p) % 2 == 1 for p in odd)


async def test_admit_one_call_spanning_partitions(store: Store) -> None:
    """One admit with items for several streams appends each to its own stream, in order."""
    ids = await store.admit(
        [
            Admission(f"{P0}:seen:1", f"{P0}:inbox", b"p0-1"),
            Admission(f"{P1}:seen:1", f"{P1}:inbox", b"p1-1"),
            Admission(f"{P0}:seen:2", f"{P0}:inbox", b"p0-2"),
            # outside any partition, but one admission's two keys share a hash tag (the
            # Store protocol asks it: a Redis Cluster runs each admission in one slot)
            Admission("other:{x}:seen", "other:{x}:inbox", b"u"),
        ],
        dedupe_ttl=60,
    )
    assert all(i is not None for i in ids)
    assert [e.id for e in await store.range(f"{P0}:inbox")] == [ids[0], ids[2]]
    assert await payloads(store, f"{P0}:inbox") == [b"p0-1", b"p0-2"]
    assert await payloads(store, f"{P1}:inbox") == [b"p1-1"]
    assert await payloads(store, "other:{x}:inbox") == [b"u"]


async def test_claim_is_set_if_absent_with_expiry(store: Store) -> None:
    """claim() succeeds once, fails while held, and succeeds again after its TTL."""
    assert await store.claim("t:claim", ttl=0.2) is True
    assert await store.claim("t:claim", ttl=0.2) is False
    await asyncio.sleep(0.35)
    assert await store.claim("t:claim", ttl=0.2) is True


async def test_claim_keeps_who_holds_it(store: Store) -> None:
    """The holder a claim was made with is what get_record reads, until it expires; a claim
    that lost changes nothing."""
    assert await store.claim("t:held", ttl=60, holder=b"first") is True
    assert await store.claim("t:held", ttl=60, holder=b"second") is False
    assert await store.get_record("t:held") == b"first"


# -- streams -------------------------------------------------------------------------------
async def test_append_returns_increasing_ids_and_trims_with_maxlen(store: Store) -> None:
    """Appends come back in order with the ids append() returned; maxlen drops the oldest."""
    ids = [await store.append(OUTBOX, str(n).encode()) for n in range(5)]
    assert len(set(ids)) == 5
    assert [e.id for e in await store.range(OUTBOX)] == ids
    await store.append(OUTBOX, b"5", maxlen=3)
    assert await payloads(store, OUTBOX) == [b"3", b"4", b"5"]


async def test_read_group_hands_each_entry_to_one_consumer(store: Store) -> None:
    """Within a group every entry goes to exactly one consumer, in stream order."""
    await store.ensure_group(INBOX, "g")
    await store.ensure_group(INBOX, "g")  # idempotent
    ids = [await store.append(INBOX, str(n).encode()) for n in range(10)]
    a = await store.read_group([INBOX], group="g", consumer="a", count=4, block=0)
    b = await store.read_group([INBOX], group="g", consumer="b", count=100, block=0)
    assert [e.id for _, e in a] == ids[:4]
    assert [e.id for _, e in b] == ids[4:]
    assert all(s == INBOX and e.deliveries == 1 for s, e in a + b)
    assert [e.payload for _, e in a + b] == [str(n).encode() for n in range(10)]
    assert await store.read_group([INBOX], group="g", consumer="a", count=10, block=0) == []
    # Another group sees everything again.
    other = await store.read_group([INBOX], group="h", consumer="a", count=100, block=0)
    assert [e.id for _, e in other] == ids


async def test_read_group_over_several_streams(store: Store) -> None:
    """One read covers several streams, capping each at ``count`` and keeping each in order."""
    s1, s2 = f"{P0}:inbox", f"{P1}:inbox"
    for n in range(3):
        await store.append(s1, f"a{n}".encode())
        await store.append(s2, f"b{n}".encode())
    got = await store.read_group([s1, s2], group="g", consumer="c", count=2, block=0)
    assert [e.payload for s, e in got if s == s1] == [b"a0", b"a1"]
    assert [e.payload for s, e in got if s == s2] == [b"b0", b"b1"]
    rest = await store.read_group([s1, s2], group="g", consumer="c", count=2, block=0)
    assert sorted((s, e.payload) for s, e in rest) == [(s1, b"a2"), (s2, b"b2")]


async def test_read_group_creates_missing_group_from_stream_start(store: Store) -> None:
    """Reading with a group nobody created delivers the stream from its first entry."""
    await store.append(INBOX, b"old")
    got = await store.read_group([INBOX], group="new", consumer="c", count=10, block=0)
    assert [e.payload for _, e in got] == [b"old"]


async def test_read_group_block_returns_early_on_append(store: Store) -> None:
    """A blocked read wakes up as soon as another task appends, long before its timeout."""
    await store.ensure_group(INBOX, "g")

    async def append_later() -> str:
        await asyncio.sleep(0.2)
        return await store.append(INBOX, b"late")

    started = time.monotonic()
    got, entry_id = await asyncio.gather(
        store.read_group([INBOX], group="g", consumer="c", count=10, block=10), append_later()
    )
    assert [(e.id, e.payload) for _, e in got] == [(entry_id, b"late")]
    assert time.monotonic() - started < 2


async def test_read_group_block_wakes_on_any_of_several_streams(store: Store) -> None:
    """A read blocked on several streams (on a cluster: several slots) returns as soon as
    one gets an entry; one appended to another stream later is handed out by the next read,
    once, with nothing left pending unseen."""
    s1, s2 = f"{P0}:inbox", f"{P1}:inbox"
    for stream in (s1, s2):
        await store.ensure_group(stream, "g")

    async def append_later(stream: str, payload: bytes) -> str:
        await asyncio.sleep(0.2)
        return await store.append(stream, payload)

    started = time.monotonic()
    got, first = await asyncio.gather(
        store.read_group([s1, s2], group="g", consumer="c", count=10, block=10),
        append_later(s2, b"one"),
    )
    assert [(s, e.id, e.payload) for s, e in got] == [(s2, first, b"one")]
    assert time.monotonic() - started < 2
    started = time.monotonic()
    got, second = await asyncio.gather(
        store.read_group([s1, s2], group="g", consumer="c", count=10, block=10),
        append_later(s1, b"two"),
    )
    assert [(s, e.id, e.payload) for s, e in got] == [(s1, second, b"two")]
    assert time.monotonic() - started < 2
    assert await store.read_group([s1, s2], group="g", consumer="c", count=10, block=0.2) == []
    assert await store.backlog(s1, "g") == await store.backlog(s2, "g") == 1  # pending on c
    assert await store.ack(s1, "g", [second]) == await store.ack(s2, "g", [first]) == 1


async def test_read_group_of_fewer_streams_leaves_the_others_to_other_readers(
    store: Store,
) -> None:
    """Once a consumer reads fewer streams (a partition given up), a later entry of a stream
    it no longer names goes to whoever reads that stream, not to a read left over from before
    (on a cluster, a blocked read of the dropped slot is ended, not kept)."""
    s1, s2 = f"{P0}:inbox", f"{P1}:inbox"
    for stream in (s1, s2):
        await store.ensure_group(stream, "g")
    await store.append(s2, b"one")
    got = await store.read_group([s1, s2], group="g", consumer="c", count=10, block=5)
    assert [e.payload for _, e in got] == [b"one"]
    assert await store.read_group([s2], group="g", consumer="c", count=10, block=0.2) == []
    later = await store.append(s1, b"later")
    await asyncio.sleep(0.1)
    other = await store.read_group([s1], group="g", consumer="other", count=10, block=1)
    assert [(s, e.id) for s, e in other] == [(s1, later)]


async def test_cancelled_read_group_takes_nothing(store: Store) -> None:
    """A blocked read over several streams that is cancelled (its consumer stopping) takes
    no entry appended afterwards: the next reader gets it."""
    s1, s2 = f"{P0}:inbox", f"{P1}:inbox"
    for stream in (s1, s2):
        await store.ensure_group(stream, "g")
    reading = asyncio.create_task(
        store.read_group([s1, s2], group="g", consumer="c", count=10, block=5)
    )
    await asyncio.sleep(0.2)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    later = await store.append(s1, b"later")
    await asyncio.sleep(0.2)
    other = await store.read_group([s1], group="g", consumer="other", count=10, block=1)
    assert [(s, e.id) for s, e in other] == [(s1, later)]


async def test_read_group_block_times_out_empty(store: Store) -> None:
    """With nothing to read, a blocked read returns [] after about ``block`` seconds."""
    await store.ensure_group(INBOX, "g")
    started = time.monotonic()
    assert await store.read_group([INBOX], group="g", consumer="c", count=10, block=0.3) == []
    assert 0.25 <= time.monotonic() - started < 2


async def test_pending_until_ack_then_claimed_by_another_consumer(store: Store) -> None:
    """Unacked entries stay pending; after min_idle another consumer claims them."""
    await store.ensure_group(INBOX, "g")
    ids = [await store.append(INBOX, str(n).encode()) for n in range(3)]
    await store.read_group([INBOX], group="g", consumer="a", count=10, block=0)
    assert await store.ack(INBOX, "g", [ids[0]]) == 1
    assert await store.ack(INBOX, "g", [ids[0]]) == 0  # already acknowledged
    not_yet = await store.claim_pending(INBOX, group="g", consumer="b", min_idle=5, count=10)
    assert not_yet == []
    await asyncio.sleep(0.25)
    claimed = await store.claim_pending(INBOX, group="g", consumer="b", min_idle=0.2, count=10)
    assert [(e.id, e.payload, e.deliveries) for e in claimed] == [
        (ids[1], b"1", 2),
        (ids[2], b"2", 2),
    ]
    # The claim reset their idle time: a third consumer cannot take them right away.
    assert await store.claim_pending(INBOX, group="g", consumer="c", min_idle=0.2, count=10) == []
    again = await store.claim_pending(INBOX, group="g", consumer="c", min_idle=0, count=1)
    assert [(e.id, e.deliveries) for e in again] == [(ids[1], 3)]
    assert await store.ack(INBOX, "g", ids) == 2
    assert await store.backlog(INBOX, "g") == 0


async def test_claim_pending_drops_deleted_entries(store: Store) -> None:
    """A pending entry deleted from the stream is dropped by the claim, not handed out."""
    await store.ensure_group(INBOX, "g")
    ids = [await store.append(INBOX, str(n).encode()) for n in range(3)]
    await store.read_group([INBOX], group="g", consumer="a", count=10, block=0)
    assert await store.delete_entries(INBOX, [ids[1]]) == 1
    claimed = await store.claim_pending(INBOX, group="g", consumer="b", min_idle=0, count=10)
    assert [e.id for e in claimed] == [ids[0], ids[2]]
    assert await store.backlog(INBOX, "g") == 2
    assert (
        await store.claim_pending(INBOX, group="nogroup", consumer="b", min_idle=0, count=5) == []
    )


async def test_backlog_counts_undelivered_plus_pending(store: Store) -> None:
    """backlog = entries never delivered + delivered but unacknowledged."""
    assert await store.backlog("t:nothing", "g") == 0
    ids = [await store.append(INBOX, str(n).encode()) for n in range(5)]
    assert await store.backlog(INBOX, "g") == 5  # no group yet: everything is waiting
    await store.ensure_group(INBOX, "g")
    await store.read_group([INBOX], group="g", consumer="a", count=2, block=0)
    assert await store.backlog(INBOX, "g") == 5
    await store.ack(INBOX, "g", ids[:2])
    assert await store.backlog(INBOX, "g") == 3
    # Deleting an undelivered entry shrinks the backlog (Redis then reports no lag).
    assert await store.delete_entries(INBOX, [ids[3]]) == 1
    assert await store.backlog(INBOX, "g") == 2


async def test_trim_acknowledged_drops_only_what_the_group_is_done_with(store: Store) -> None:
    """Trimming removes delivered, acknowledged entries older than the oldest pending one."""
    assert await store.trim_acknowledged("t:nothing", "g") == 0
    ids = [await store.append(INBOX, str(n).encode()) for n in range(6)]
    await store.ensure_group(INBOX, "g")
    await store.read_group([INBOX], group="g", consumer="a", count=4, block=0)
    await store.ack(INBOX, "g", [ids[0], ids[1], ids[3]])
    assert await store.trim_acknowledged(INBOX, "g") == 2  # ids[2] is still pending
    assert [e.id for e in await store.range(INBOX)] == ids[2:]
    assert await store.backlog(INBOX, "g") == 3  # 1 pending + 2 never delivered
    await store.ack(INBOX, "g", [ids[2]])
    assert await store.trim_acknowledged(INBOX, "g") == 2  # ids[2] and ids[3]
    assert [e.id for e in await store.range(INBOX)] == ids[4:]  # never delivered: kept
    # What remains is still handed out in order, and the backlog still counts it.
    got = await store.read_group([INBOX], group="g", consumer="a", count=5, block=0)
    assert [e.id for _, e in got] == ids[4:]
    await store.ack(INBOX, "g", ids[4:])
    assert await store.trim_acknowledged(INBOX, "g") == 2
    assert await store.range(INBOX) == []
    assert await store.backlog(INBOX, "g") == 0
    later = await store.append(INBOX, b"later")
    got = await store.read_group([INBOX], group="g", consumer="a", count=5, block=0)
    assert [e.id for _, e in got] == [later]


async def test_range_get_entry_and_delete_entries(store: Store) -> None:
    """range() is exclusive of ``after`` and honours count; deleted entries vanish."""
    ids = [await store.append(OUTBOX, str(n).encode()) for n in range(5)]
    assert [e.id for e in await store.range(OUTBOX, after=ids[1])] == ids[2:]
    assert [e.id for e in await store.range(OUTBOX, after=ids[0], count=2)] == ids[1:3]
    assert await store.range(OUTBOX, after=ids[4]) == []
    assert await store.range("t:missing") == []
    entry = await store.get_entry(OUTBOX, ids[2])
    assert entry is not None
    assert (entry.id, entry.payload) == (ids[2], b"2")
    assert await store.delete_entries(OUTBOX, [ids[2], ids[3]]) == 2
    assert await store.delete_entries(OUTBOX, [ids[2]]) == 0
    assert await store.get_entry(OUTBOX, ids[2]) is None
    assert await payloads(store, OUTBOX) == [b"0", b"1", b"4"]


# -- logs --------------------------------------------------------------------------------------
LOG = f"{P0}:c:x:replies"


async def log_payloads(store: Store, key: str, after: str | None = None) -> list[bytes]:
    return [e.payload for e in await store.read_log(key, after=after, count=10_000)]


async def test_log_keeps_the_newest_cap_entries_in_order(store: Store) -> None:
    """Ids increase; the cap drops the oldest; payloads come back byte for byte."""
    odd = b'{"text": "a:b"}\x00\xff:'
    ids = [await store.append_log(LOG, odd + str(n).encode(), cap=3) for n in range(5)]
    assert len(set(ids)) == 5
    assert await log_payloads(store, LOG) == [odd + b"2", odd + b"3", odd + b"4"]
    assert [e.id for e in await store.read_log(LOG)] == ids[2:]
    assert await log_payloads(store, LOG, after=ids[0]) == [odd + b"2", odd + b"3", odd + b"4"]
    assert [e.id for e in await store.read_log(LOG, after=ids[2], count=1)] == [ids[3]]
    assert await store.read_log("t:{p0}:missing") == []


async def test_log_reads_after_a_cursor_with_count(store: Store) -> None:
    """``after`` is exclusive; an id that was trimmed away reads from the oldest kept entry,
    so a poller never misses what is still there; one past the end reads nothing."""
    ids = [await store.append_log(LOG, str(n).encode(), cap=4) for n in range(6)]
    assert await log_payloads(store, LOG, after=ids[3]) == [b"4", b"5"]
    assert [e.id for e in await store.read_log(LOG, after=ids[2], count=2)] == ids[3:5]
    assert await store.read_log(LOG, after=ids[5]) == []
    assert await log_payloads(store, LOG, after=ids[0]) == [str(n).encode() for n in range(2, 6)]
    assert await store.read_log(LOG, after=str(MAX_LOG_ID)) == []


# Not ids in any store: other scripts' digits (str.isdigit() takes them), signs, spaces,
# floats, hex, and numbers past what Redis, SQLite or a Lua number can hold.
MALFORMED_CURSORS = [
    "not-an-id", "", "-1", "+1", " 1", "1 ", "1.5", "1e3", "0x10", "\u00b2", "\u0661\u0662",
    "1-2-3", "9" * 21, str(2**64), "1\x00",
]  # fmt: skip


@pytest.mark.parametrize("cursor", [*MALFORMED_CURSORS, str(MAX_LOG_ID + 1)])
async def test_attack_malformed_log_cursor_refused_alike_by_every_store(
    store: Store, cursor: str
) -> None:
    """A client's malformed ``after=`` is a CursorError (400 bad_cursor) in every store,
    never a store failure (503, retried forever) nor a silent read from the start."""
    await store.append_log(LOG, b"kept", cap=10)
    with pytest.raises(CursorError) as refused:
        await store.read_log(LOG, after=cursor)
    assert (refused.value.status, refused.value.reason) == (400, "bad_cursor")
    assert await log_payloads(store, LOG) == [b"kept"]


@pytest.mark.parametrize("cursor", MALFORMED_CURSORS)
async def test_attack_malformed_stream_id_refused_alike_by_every_store(
    store: Store, cursor: str
) -> None:
    """``range`` refuses a malformed ``after`` with CursorError; looking up or deleting an
    entry by a malformed id finds nothing (a dead-letter handle that names nothing: 404)."""
    await store.append(OUTBOX, b"kept")
    with pytest.raises(CursorError):
        await store.range(OUTBOX, after=cursor)
    assert await store.get_entry(OUTBOX, cursor) is None
    assert await store.delete_entries(OUTBOX, [cursor]) == 0
    assert await payloads(store, OUTBOX) == [b"kept"]


async def test_commit_and_admit_append_to_logs(store: Store) -> None:
    """A log append rides in a commit (with the state) and in an admission (with its claim);
    a refused commit or a duplicate admission appends nothing."""
    key = f"{P0}:c:x:state"
    assert (
        await store.commit(Commit(state=StateWrite(key, b"s", 0), logs=[LogAppend(LOG, b"a", 2)]))
        == 1
    )
    assert (
        await store.commit(Commit(state=StateWrite(key, b"s", 0), logs=[LogAppend(LOG, b"x", 2)]))
        is None
    )
    item = Admission(f"{P0}:seen:log:1", LOG, b"b", log_cap=2)
    first = await store.admit([item, Admission(f"{P0}:seen:in:1", INBOX, b"in")], dedupe_ttl=60)
    assert None not in first
    assert await store.admit([item], dedupe_ttl=60) == [None]
    await store.commit(Commit(logs=[LogAppend(LOG, b"c", 2)]))
    assert await log_payloads(store, LOG) == [b"b", b"c"]
    assert await payloads(store, INBOX) == [b"in"]
    assert await store.delete([LOG]) == 1
    assert await store.read_log(LOG) == []


# -- state and records ---------------------------------------------------------------------
async def test_state_versions_start_at_one_and_compare_and_set(store: Store) -> None:
    """The first write is version 1; a write with a stale version is refused."""
    key = f"{P0}:c:x:state"
    assert await store.get_state(key) is None
    assert await store.commit(Commit(state=StateWrite(key, b"v1", 0))) == 1
    assert await store.commit(Commit(state=StateWrite(key, b"nope", 0))) is None
    assert await store.commit(Commit(state=StateWrite(key, b"v2", 1))) == 2
    assert await store.commit(Commit(state=StateWrite(key, b"nope", 1))) is None
    state = await store.get_state(key)
    assert state is not None
    assert (state.value, state.version) == (b"v2", 2)


async def test_state_ttl_expires_and_restarts_versions(store: Store) -> None:
    """An expired state reads as absent and is written again from version 1."""
    key = f"{P0}:c:y:state"
    assert await store.commit(Commit(state=StateWrite(key, b"a", 0, ttl=0.2))) == 1
    await asyncio.sleep(0.35)
    assert await store.get_state(key) is None
    assert await store.commit(Commit(state=StateWrite(key, b"b", 0))) == 1
    await asyncio.sleep(0.25)  # no TTL this time: it stays
    state = await store.get_state(key)
    assert state is not None
    assert (state.value, state.version) == (b"b", 1)


async def test_commit_applies_everything(store: Store) -> None:
    """A successful commit writes state, appends, records, acks and deletes together."""
    await store.ensure_group(INBOX, "g")
    entry_id = await store.append(INBOX, b"in")
    await store.read_group([INBOX], group="g", consumer="w", count=1, block=0)
    await store.put_record(f"{P0}:old", b"old")
    version = await store.commit(
        Commit(
            state=StateWrite(f"{P0}:c:z:state", b"s", 0),
            appends=[(OUTBOX, b"out1"), (OUTBOX, b"out2")],
            records=[(f"{P0}:rec", b"r", None), (f"{P0}:rec-ttl", b"t", 0.2)],
            acks=[(INBOX, "g", entry_id)],
            deletes=[f"{P0}:old"],
        )
    )
    assert version == 1
    assert await payloads(store, OUTBOX) == [b"out1", b"out2"]
    assert await store.get_record(f"{P0}:rec") == b"r"
    assert await store.get_record(f"{P0}:rec-ttl") == b"t"
    assert await store.get_record(f"{P0}:old") is None
    assert await store.backlog(INBOX, "g") == 0
    await asyncio.sleep(0.35)
    assert await store.get_record(f"{P0}:rec-ttl") is None
    assert await store.commit(Commit(appends=[(OUTBOX, b"out3")])) == 0  # no state: 0


async def test_commit_with_stale_version_applies_nothing(store: Store) -> None:
    """A failed version check leaves streams, pending entries and records untouched."""
    key = f"{P0}:c:w:state"
    await store.commit(Commit(state=StateWrite(key, b"v1", 0)))
    await store.ensure_group(INBOX, "g")
    entry_id = await store.append(INBOX, b"in")
    await store.read_group([INBOX], group="g", consumer="w", count=1, block=0)
    await store.put_record(f"{P0}:keep", b"keep")
    result = await store.commit(
        Commit(
            state=StateWrite(key, b"v2", 0),
            appends=[(OUTBOX, b"out")],
            records=[(f"{P0}:rec", b"r", None)],
            acks=[(INBOX, "g", entry_id)],
            deletes=[f"{P0}:keep"],
        )
    )
    assert result is None
    assert await store.range(OUTBOX) == []
    assert await store.get_record(f"{P0}:rec") is None
    assert await store.get_record(f"{P0}:keep") == b"keep"
    assert await store.backlog(INBOX, "g") == 1  # still pending
    state = await store.get_state(key)
    assert state is not None
    assert (state.value, state.version) == (b"v1", 1)


async def test_commit_adds_counters_with_the_rest_and_only_then(store: Store) -> None:
    """Counters in a commit are added as incr_many adds them, and not at all on a conflict.

    The usage keys live outside the partition's hash tag, as the worker's do: on a cluster
    they are another slot's, which the store adds right after the rest.
    """
    key = f"{P0}:c:u:state"
    day, other = "t:usage:acme:inbound", "t:usage:acme:agent_ms"
    first = await store.commit(
        Commit(
            state=StateWrite(key, b"v1", 0),
            appends=[(OUTBOX, b"out")],
            counters=[(day, 1, 60.0), (other, 40, None)],
        )
    )
    assert first == 1
    assert (
        await store.commit(
            Commit(state=StateWrite(key, b"v2", 1), counters=[(day, 1, 60.0), (other, 2, None)])
        )
        == 2
    )
    stale = await store.commit(Commit(state=StateWrite(key, b"v3", 1), counters=[(day, 5, 60.0)]))
    assert stale is None
    assert await store.incr_many([(day, 0, None), (other, 0, None)]) == [2, 42]
    assert await payloads(store, OUTBOX) == [b"out"]


async def test_records_with_and_without_ttl(store: Store) -> None:
    """Records read back until their TTL; a rewrite replaces value and TTL."""
    await store.put_record("t:r1", b"one", ttl=0.2)
    await store.put_record("t:r2", b"two")
    assert await store.get_record("t:r1") == b"one"
    await store.put_record("t:r2", b"two-b", ttl=0.2)
    await store.put_record("t:r2", b"two-c")  # no TTL again
    await asyncio.sleep(0.35)
    assert await store.get_record("t:r1") is None
    assert await store.get_record("t:r2") == b"two-c"
    assert await store.get_record("t:never") is None


async def test_delete_and_scan(store: Store) -> None:
    """scan() lists live keys of each kind under a prefix; delete() removes and counts them."""
    await store.put_record("t:x:rec", b"1")
    await store.put_record("t:x:gone", b"1", ttl=0.1)
    await store.commit(Commit(state=StateWrite("t:x:state", b"s", 0)))
    await store.append("t:x:stream", b"e")
    await store.incr("t:x:count")
    await store.put_record("t:y:other", b"1")
    await asyncio.sleep(0.25)
    expected = ["t:x:count", "t:x:rec", "t:x:state", "t:x:stream"]
    assert sorted(await store.scan("t:x:")) == expected
    assert len(await store.scan("t:x:", limit=2)) == 2
    assert await store.delete(["t:x:rec", "t:x:state", "t:x:stream", "t:x:missing"]) == 3
    assert await store.delete([]) == 0
    assert await store.scan("t:x:") == ["t:x:count"]
    assert await store.range("t:x:stream") == []
    assert await store.get_state("t:x:state") is None
    assert await store.get_record("t:y:other") == b"1"


async def test_scan_of_a_partition_prefix_lists_that_partition_only(store: Store) -> None:
    """A prefix carrying a partition's hash tag lists that partition's keys (on a cluster
    they all live on the node owning its slot) and none of another partition's."""
    await store.put_record(f"{P0}:c:a:rec", b"1")
    await store.append(f"{P0}:c:a:log", b"e")
    await store.put_record(f"{P1}:c:a:rec", b"1")
    assert sorted(await store.scan(f"{P0}:c:")) == [f"{P0}:c:a:log", f"{P0}:c:a:rec"]
    assert await store.scan(f"{P1}:c:") == [f"{P1}:c:a:rec"]


async def test_scan_prefix_with_an_empty_hash_tag_lists_every_slot(store: Store) -> None:
    """``{}`` is no hash tag (Redis then hashes the whole key), so keys under such a prefix
    lie in many slots (on a cluster: on every master), and all of them are listed."""
    keys = [f"s:{{}}:a}}{n}" for n in range(12)]
    for key in keys:
        await store.put_record(key, b"1")
    assert sorted(await store.scan("s:{}:a}")) == sorted(keys)


async def test_scan_prefix_is_literal(store: Store) -> None:
    """Glob characters in the prefix match themselves only."""
    await store.put_record("t:[a]*?\\1", b"1")
    await store.put_record("t:a1", b"1")
    await store.put_record("t:[a]x", b"1")
    assert await store.scan("t:[a]*?\\") == ["t:[a]*?\\1"]
    assert sorted(await store.scan("t:[a]")) == ["t:[a]*?\\1", "t:[a]x"]


# -- counters, buckets, leases -------------------------------------------------------------
async def test_incr_sets_ttl_only_on_creation(store: Store) -> None:
    """incr() counts from 0; its TTL starts at creation and is not extended by later calls."""
    assert await store.incr("t:n") == 1
    assert await store.incr("t:n", 5) == 6
    assert await store.incr("t:n", -2) == 4
    assert await store.incr("t:ttl", ttl=0.4) == 1
    await asyncio.sleep(0.25)
    assert await store.incr("t:ttl", ttl=0.4) == 2
    await asyncio.sleep(0.25)  # 0.5 s after creation: gone, although 0.25 s after the 2nd
    assert await store.incr("t:ttl", ttl=0.4) == 1


async def test_incr_many_counts_each_key_like_incr(store: Store) -> None:
    """incr_many() returns each counter's new value, repeats of a key included, in order."""
    assert await store.incr_many([]) == []
    assert await store.incr("t:m:a", 10) == 10
    values = await store.incr_many(
        [("t:m:a", 1, None), ("t:m:b", 5, 60.0), ("t:m:a", -3, None), ("t:m:c", 0, None)]
    )
    assert values == [11, 5, 8, 0]
    assert await store.incr_many([("t:m:a", 0, None), ("t:m:b", 2, 60.0)]) == [8, 7]
    assert sorted(await store.scan("t:m:")) == ["t:m:a", "t:m:b", "t:m:c"]


async def test_incr_many_sets_ttl_only_on_creation(store: Store) -> None:
    """incr_many() gives a counter its TTL when it creates it and never extends it."""
    assert await store.incr_many([("t:mt", 1, 0.4), ("t:keep", 1, None)]) == [1, 1]
    await asyncio.sleep(0.25)
    assert await store.incr_many([("t:mt", 1, 0.4), ("t:keep", 1, 0.4)]) == [2, 2]
    await asyncio.sleep(0.25)  # 0.5 s after creation: gone; the TTL-less one stays
    assert await store.incr_many([("t:mt", 1, 0.4), ("t:keep", 1, 0.4)]) == [1, 3]


async def test_concurrent_incr_many_loses_no_count(store: Store) -> None:
    """50 concurrent incr_many() calls on shared counters add up exactly."""
    await asyncio.gather(
        *(store.incr_many([("t:cc:a", 1, 60.0), ("t:cc:b", n, 60.0)]) for n in range(50))
    )
    assert await store.incr_many([("t:cc:a", 0, None), ("t:cc:b", 0, None)]) == [50, 1225]


async def test_token_bucket_burst_deny_and_refill(store: Store) -> None:
    """A full bucket allows ``burst`` takes, then denies with retry_after, then refills."""
    results = [await store.take_tokens("t:b", rate=10, burst=3) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert results[0].retry_after == 0.0
    assert 1.9 <= results[0].remaining <= 2.01
    denied = results[3]
    assert denied.remaining < 1
    assert 0 < denied.retry_after <= 0.1 + 1e-9
    assert abs(denied.retry_after - (1 - denied.remaining) / 10) < 1e-6
    await asyncio.sleep(0.25)
    assert (await store.take_tokens("t:b", rate=10, burst=3)).allowed
    costly = await store.take_tokens("t:b2", rate=1, burst=2, cost=5)
    assert not costly.allowed
    assert 2.9 <= costly.retry_after <= 3.01


async def test_leases_are_exclusive_renewable_and_expire(store: Store) -> None:
    """One owner at a time; the owner renews; others take over after expiry or release."""
    assert await store.acquire_lease("t:lease", "a", ttl=0.3) is True
    assert await store.acquire_lease("t:lease", "b", ttl=0.3) is False
    await asyncio.sleep(0.2)
    assert await store.acquire_lease("t:lease", "a", ttl=0.3) is True  # renewal
    await asyncio.sleep(0.2)  # past the first TTL, within the renewed one
    assert await store.acquire_lease("t:lease", "b", ttl=0.3) is False
    await store.release_lease("t:lease", "b")  # not b's: no effect
    assert await store.acquire_lease("t:lease", "b", ttl=0.3) is False
    await store.release_lease("t:lease", "a")
    assert await store.acquire_lease("t:lease", "b", ttl=0.2) is True
    await asyncio.sleep(0.35)
    assert await store.acquire_lease("t:lease", "c", ttl=1) is True


async def test_a_lease_is_renewed_only_while_held_without_a_gap(store: Store) -> None:
    """renew_lease extends the holder's live lease and nothing else: not another owner's, not
    a free key, and not a lapsed lease of its own, even when nobody took it meanwhile."""
    assert await store.renew_lease("t:renew", "a", ttl=0.3) is False  # never taken
    assert await store.acquire_lease("t:renew", "a", ttl=0.3) is True
    assert await store.renew_lease("t:renew", "b", ttl=0.3) is False  # not b's
    await asyncio.sleep(0.2)
    assert await store.renew_lease("t:renew", "a", ttl=0.3) is True
    await asyncio.sleep(0.2)  # past the first TTL, within the renewed one
    assert await store.acquire_lease("t:renew", "b", ttl=0.3) is False
    await asyncio.sleep(0.2)  # past the renewed TTL: lapsed, though nobody took it
    assert await store.renew_lease("t:renew", "a", ttl=0.3) is False
    assert await store.acquire_lease("t:renew", "b", ttl=0.3) is True
    assert await store.renew_lease("t:renew", "a", ttl=0.3) is False
    await store.release_lease("t:renew", "b")
    assert await store.renew_lease("t:renew", "b", ttl=0.3) is False  # released


async def test_heartbeat_membership_expires(store: Store) -> None:
    """heartbeat() lists members alive now, sorted; silent members drop out after their TTL."""
    assert await store.heartbeat("t:members", "b", ttl=0.2) == ["b"]
    assert await store.heartbeat("t:members", "a", ttl=5) == ["a", "b"]
    await asyncio.sleep(0.35)
    assert await store.heartbeat("t:members", "a", ttl=5) == ["a"]
    assert await store.heartbeat("t:members", "c", ttl=5) == ["a", "c"]


async def test_members_lists_the_live_set_without_changing_it(store: Store) -> None:
    """members() reports who heartbeat() counts as alive, with the time each has left; it
    joins, renews and purges nothing (an observer is not a member)."""
    assert await store.members("t:members") == []
    assert await store.scan("t:members") == []  # reading created nothing
    await store.heartbeat("t:members", "b", ttl=0.3)
    await store.heartbeat("t:members", "a", ttl=5)
    alive = await store.members("t:members")
    assert [m.owner for m in alive] == ["a", "b"]
    assert 4.5 < alive[0].expires_in <= 5
    assert 0 < alive[1].expires_in <= 0.3
    for _ in range(3):  # reading again and again renews nobody
        await asyncio.sleep(0.15)
        await store.members("t:members")
    # b is past its TTL and nobody has beaten since (so nothing purged it): not reported.
    assert [m.owner for m in await store.members("t:members")] == ["a"]
    assert await store.heartbeat("t:members", "c", ttl=5) == ["a", "c"]
    assert [m.owner for m in await store.members("t:members")] == ["a", "c"]
    await store.heartbeat("t:members", "c", ttl=0)  # leaving at once, as heartbeat allows
    assert [m.owner for m in await store.members("t:members")] == ["a"]


async def test_lease_holders_agree_with_acquire_and_release(store: Store) -> None:
    """lease_holders() shows each lease's holder and time left, None for a free or expired
    one; reading takes, renews and frees nothing."""

    async def owners(keys: list[str]) -> dict[str, str | None]:
        return {k: h and h.owner for k, h in (await store.lease_holders(keys)).items()}

    async def left(key: str) -> float:
        held = (await store.lease_holders([key]))[key]
        assert held is not None
        return held.expires_in

    keys = ["t:lease:1", "t:lease:2", "t:lease:3"]
    assert await store.lease_holders(keys) == dict.fromkeys(keys)
    assert await store.lease_holders([]) == {}
    assert await store.acquire_lease(keys[0], "a", ttl=0.3)
    assert await store.acquire_lease(keys[1], "b", ttl=5)
    assert await owners(keys) == {keys[0]: "a", keys[1]: "b", keys[2]: None}
    assert list(await store.lease_holders(keys)) == keys
    assert 0 < await left(keys[0]) <= 0.3
    assert 4.5 < await left(keys[1]) <= 5
    # Reading took nothing: the free lease is still free, the held one still refused.
    assert await store.acquire_lease(keys[2], "c", ttl=5)
    assert not await store.acquire_lease(keys[0], "b", ttl=0.3)
    await asyncio.sleep(0.2)
    assert await store.acquire_lease(keys[0], "a", ttl=0.3)  # a renewal shows at once
    assert await left(keys[0]) > 0.2
    await store.release_lease(keys[1], "a")  # not a's: still b's
    assert (await owners(keys))[keys[1]] == "b"
    await store.release_lease(keys[1], "b")
    for _ in range(3):  # reading again and again renews nothing
        await asyncio.sleep(0.15)
        await store.lease_holders(keys)
    # keys[0] expired, though nobody has taken it over yet; keys[1] was released.
    assert await owners(keys) == {keys[0]: None, keys[1]: None, keys[2]: "c"}
    assert await store.acquire_lease(keys[0], "b", ttl=5)
    assert await owners([keys[0], keys[0]]) == {keys[0]: "b"}


# -- SQLite only -----------------------------------------------------------------------------
async def test_sqlite_data_survives_reopen(tmp_path: Path) -> None:
    """Everything acknowledged is still there after closing and reopening the file."""
    url = f"sqlite:///{tmp_path}/durable.db"
    first = await open_store(url)
    try:
        ids = await first.admit([Admission("t:seen:1", INBOX, b"m")], dedupe_ttl=60)
        await first.read_group([INBOX], group="g", consumer="a", count=1, block=0)
        await first.commit(Commit(state=StateWrite("t:state", b"s", 0)))
    finally:
        await first.aclose()
    second = await open_store(url)
    try:
        assert await second.admit([Admission("t:seen:1", INBOX, b"m")], dedupe_ttl=60) == [None]
        assert [e.id for e in await second.range(INBOX)] == ids
        assert await second.backlog(INBOX, "g") == 1
        state = await second.get_state("t:state")
        assert state is not None
        assert state.version == 1
        assert await second.append(INBOX, b"next") != ids[0]
    finally:
        await second.aclose()


async def test_sqlite_two_instances_share_dedupe_and_streams(tmp_path: Path) -> None:
    """Two stores on one file (two processes) share claims, streams and consumer groups."""
    url = f"sqlite://{tmp_path}/shared.db"
    one, two = await open_store(url), await open_store(url)
    try:
        items = [Admission(f"t:seen:{n % 20}", INBOX, str(n % 20).encode()) for n in range(60)]
        results = await asyncio.gather(
            *(s.admit([item], dedupe_ttl=60) for item in items for s in (one, two))
        )
        assert sum(r[0] is not None for r in results) == 20
        assert len(await two.range(INBOX)) == 20
        await one.ensure_group(INBOX, "g")
        got_one = await one.read_group([INBOX], group="g", consumer="a", count=15, block=0)
        got_two = await two.read_group([INBOX], group="g", consumer="b", count=15, block=0)
        assert len(got_one) == 15
        assert len(got_two) == 5
        assert {e.id for _, e in got_one}.isdisjoint({e.id for _, e in got_two})

        # A read blocked in one process sees the other's append by polling.
        async def append_later() -> str:
            await asyncio.sleep(0.2)
            return await one.append(INBOX, b"late")

        started = time.monotonic()
        got, entry_id = await asyncio.gather(
            two.read_group([INBOX], group="g", consumer="b", count=5, block=10), append_later()
        )
        assert [e.id for _, e in got] == [entry_id]
        assert time.monotonic() - started < 2
    finally:
        await one.aclose()
        await two.aclose()


async def test_sqlite_url_options(tmp_path: Path) -> None:
    """The URL may choose synchronous=normal; unknown options are configuration errors."""
    store = await SqliteStore.open(f"sqlite:///{tmp_path}/n.db?synchronous=normal")
    try:
        await store.put_record("t:k", b"v")
        assert await store.get_record("t:k") == b"v"
    finally:
        await store.aclose()
    with pytest.raises(ConfigError):
        await SqliteStore.open(f"sqlite:///{tmp_path}/n.db?bogus=1")
    closed = await SqliteStore.open(f"sqlite:///{tmp_path}/n.db")
    await closed.aclose()
    with pytest.raises(StoreError):
        await closed.get_record("t:k")


# -- Redis only ------------------------------------------------------------------------------
@pytest.mark.redis
async def test_redis_two_processes_race_admits_once_each(redis_url: str) -> None:
    """Two RedisStore instances admitting the same keys concurrently admit each key once."""
    one, two = await RedisStore.open(redis_url), await RedisStore.open(redis_url)
    try:
        items = [
            Admission(f"t:{{p{k % 4}}}:seen:{k}", f"t:{{p{k % 4}}}:inbox", str(k).encode())
            for k in range(100)
        ]
        results = await asyncio.gather(
            *(
                s.admit([item], dedupe_ttl=60)
                for _ in range(3)
                for item in items
                for s in (one, two)
            )
        )
        assert sum(r[0] is not None for r in results) == 100
        admitted: list[bytes] = []
        for p in range(4):
            admitted += await payloads(one, f"t:{{p{p}}}:inbox")
        assert sorted(admitted, key=int) == [str(k).encode() for k in range(100)]
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.redis
async def test_redis_survives_script_flush(redis_url: str) -> None:
    """Scripts evicted from the server (restart, SCRIPT FLUSH) are reloaded transparently."""
    store = await RedisStore.open(redis_url)
    try:
        assert await store.commit(Commit(state=StateWrite("t:s", b"1", 0))) == 1
        await store._client.script_flush()
        ids = await store.admit([Admission("t:seen", INBOX, b"x")], dedupe_ttl=60)
        assert ids[0] is not None
        assert await store.commit(Commit(state=StateWrite("t:s", b"2", 1))) == 2
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_redis_unreachable_raises_store_error() -> None:
    """Opening a store on a port where nothing listens fails with StoreError."""
    with pytest.raises(StoreError):
        await RedisStore.open("redis://127.0.0.1:1/0")


@pytest.mark.redis
async def test_redis_server_gone_raises_store_error(tmp_path: Path) -> None:
    """When the server dies, calls fail fast with StoreError instead of hanging."""
    server = start_redis_server(tmp_path)
    store = await RedisStore.open(server.url)
    try:
        await store.put_record("t:k", b"v")
        server.kill()
        with pytest.raises(StoreError):
            await store.admit([Admission("t:seen", INBOX, b"x")], dedupe_ttl=60)
        with pytest.raises(StoreError):
            await store.ping()
        with pytest.raises(StoreError):
            await store.read_group([INBOX], group="g", consumer="c", count=1, block=0.1)
        with pytest.raises(StoreError):
            await store.take_tokens("t:b", rate=1, burst=1)
    finally:
        await store.aclose()
        server.stop()


@pytest.mark.redis
async def test_redis_with_aof_keeps_acknowledged_admits_across_a_crash(tmp_path: Path) -> None:
    """With appendfsync always, an acknowledged admit survives SIGKILL of the server."""
    server = start_redis_server(tmp_path, appendonly=True)
    try:
        store = await RedisStore.open(server.url)
        try:
            ids = await store.admit([Admission("t:seen", INBOX, b"x")], dedupe_ttl=60)
        finally:
            await store.aclose()
        server.kill()
        server = start_redis_server(tmp_path, appendonly=True, port=server.port)
        store = await RedisStore.open(server.url)
        try:
            assert [e.id for e in await store.range(INBOX)] == ids
            assert await store.admit([Admission("t:seen", INBOX, b"x")], dedupe_ttl=60) == [None]
        finally:
            await store.aclose()
    finally:
        server.stop()


# -- Redis Cluster only ----------------------------------------------------------------------
@pytest.mark.redis
async def test_cluster_call_spanning_slots_fails_alone(redis_cluster_url: str) -> None:
    """A commit or admission whose keys lie in two slots is refused with StoreError; the
    calls sharing its pipeline (other partitions, other callers) are applied all the same."""
    store = await RedisStore.open(redis_cluster_url, cluster=True)
    try:
        spanning = Commit(
            state=StateWrite(f"{P0}:c:x:state", b"s", 0), appends=[(f"{P1}:outbox", b"x")]
        )
        results = await asyncio.gather(
            store.commit(spanning),
            store.admit([Admission(f"{P0}:seen:split", f"{P1}:inbox", b"x")], dedupe_ttl=60),
            store.admit([Admission(f"{P1}:seen:1", f"{P1}:inbox", b"ok")], dedupe_ttl=60),
            store.commit(Commit(state=StateWrite(f"{P0}:c:y:state", b"s", 0))),
            store.put_record("t:elsewhere", b"r"),
            return_exceptions=True,
        )
        assert isinstance(results[0], StoreError)
        assert isinstance(results[1], StoreError)
        assert "slots" in str(results[0])
        assert results[2:] == [[results[2][0]], 1, None]  # type: ignore[index]
        assert await payloads(store, f"{P1}:inbox") == [b"ok"]
        assert await store.range(f"{P1}:outbox") == []
        assert await store.get_state(f"{P0}:c:x:state") is None
        assert await store.get_record("t:elsewhere") == b"r"
        assert await store.claim(f"{P0}:seen:split", ttl=60)  # the refused admit claimed nothing
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_cluster_partitions_spread_over_the_masters(redis_cluster_url: str) -> None:
    """The store really is on a cluster: the partitions' keys live on different masters."""
    store = await RedisStore.open(redis_cluster_url, cluster=True)
    try:
        client = store._client
        assert isinstance(client, RedisClusterClient)
        nodes = {client.get_node_from_key(f"{{p{p}}}").name for p in range(8)}
        assert len(nodes) == 3
        for p in range(8):
            await store.append(f"t:{{p{p}}}:inbox", b"e")
        for node in client.get_primaries():
            assert 0 < await client.dbsize(target_nodes=node) < 8  # type: ignore[no-untyped-call]
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_cluster_unreachable_raises_store_error() -> None:
    """Opening a cluster store where nothing listens fails with StoreError, and a cluster
    store on a non-Redis URL is a config error."""
    with pytest.raises(StoreError):
        await RedisStore.open("redis://127.0.0.1:1/0", cluster=True)
    with pytest.raises(ConfigError):
        await open_store("sqlite:///nowhere.db", cluster=True)


@pytest.mark.redis
async def test_cluster_blocking_read_over_many_partitions(redis_cluster_url: str) -> None:
    """One process may read hundreds of partitions (``store.partitions`` goes to 1024): a
    blocking read over 400 slots (more per master than redis-py's default pool of 100) waits
    and wakes like any other."""
    store = await RedisStore.open(redis_cluster_url, cluster=True)
    try:
        streams = [f"t:{{p{p}}}:inbox" for p in range(400)]
        for stream in streams:
            await store.ensure_group(stream, "g")
        quiet = await store.read_group(streams, group="g", consumer="c", count=1, block=0.3)
        assert quiet == []
        entry_id = await store.append(streams[123], b"x")
        got = await store.read_group(streams, group="g", consumer="c", count=1, block=5)
        assert [(s, e.id) for s, e in got] == [(streams[123], entry_id)]
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_cluster_ping_needs_every_master_but_no_replica(tmp_path: Path) -> None:
    """``ping`` (``/readyz``) fails while a master is down, not while only a replica is."""
    cluster = start_redis_cluster(tmp_path)
    folder = tmp_path / "replica"
    folder.mkdir()
    replica = start_redis_server(
        folder, extra=["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
    )
    try:
        first = cluster.masters[0]
        master_id = redis_reply(first.port, "CLUSTER", "MYID").split(b"\r\n")[1].decode()
        bus_port = cluster.options[0][cluster.options[0].index("--cluster-port") + 1]
        assert replica.command("CLUSTER", "MEET", "127.0.0.1", str(first.port), bus_port) == b"+OK"
        assert first.command("CONFIG", "SET", "repl-diskless-sync-delay", "0") == b"+OK"
        # A replica is listed in the slot map once its master has heard of its first write.
        await eventually(
            lambda: replica.command("CLUSTER", "REPLICATE", master_id) == b"+OK", timeout=10
        )

        def listed() -> bool:
            first.command("SET", "{p3}:written", "1")  # {p3} lies on the first master
            return str(replica.port).encode() in redis_reply(first.port, "CLUSTER", "SLOTS")

        await eventually(listed, timeout=15, interval=0.05)
        store = await RedisStore.open(cluster.url, cluster=True)
        try:
            client = store._client
            assert isinstance(client, RedisClusterClient)
            assert [n.port for n in client.get_replicas()] == [replica.port]
            await store.ping()
            replica.kill()
            await store.ping()
            cluster.masters[2].kill()
            with pytest.raises(StoreError):
                await store.ping()
        finally:
            await store.aclose()
    finally:
        replica.stop()
        cluster.stop()
