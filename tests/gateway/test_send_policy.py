"""The kernel's send policy: Retry-After in both RFC 9110 forms, the failure codes, and
the record-until-stored loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import DeliveryFailure, StoreError
from gateway.send_policy import (
    MAX_RETRY_AFTER_SECONDS,
    record_until_stored,
    retry_after_seconds,
)

NOW = datetime(2026, 12, 5, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),  # surrounding whitespace is not part of the value
        ("0", 0.0),
        ("0.25", 0.25),  # not RFC, but sent by some servers; it means what it says
        ("Sat, 05 Dec 2026 03:00:30 GMT", 30.0),  # IMF-fixdate
        ("Saturday, 05-Dec-26 03:01:00 GMT", 60.0),  # obsolete RFC 850 form
        ("Sat Dec  5 03:00:10 2026", 10.0),  # obsolete asctime form (GMT by definition)
        ("Sat, 05 Dec 2026 03:00:10 -0000", 10.0),  # zone unknown: read as GMT
        ("Sat, 05 Dec 2026 04:00:05 +0100", 5.0),  # a zone other than GMT is honoured
    ],
)
def test_both_forms_are_read(value: str, seconds: float) -> None:
    assert retry_after_seconds(value, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        "Sat, 05 Dec 2026 02:59:00 GMT",  # a minute ago
        "Sun, 06 Nov 1994 08:49:37 GMT",  # long ago
    ],
)
def test_a_date_in_the_past_means_now(value: str) -> None:
    assert retry_after_seconds(value, now=NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        "86400000",  # a thousand days
        "99999999999999999999999999999999",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ],
)
def test_a_huge_wait_is_clamped(value: str) -> None:
    assert retry_after_seconds(value, now=NOW) == MAX_RETRY_AFTER_SECONDS
    assert retry_after_seconds(value, now=NOW, cap=30.0) == 30.0


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "-5",  # delta-seconds has no sign
        "-0.5",
        "+5",
        "soon",
        "1e3",
        "nan",
        "inf",
        "0x10",
        "5 seconds",
        "Mon, 32 Nov 2026 08:49:37 GMT",  # no such day
        "1" * 100,  # longer than any date: not even parsed
        "\x00\xff",
    ],
)
def test_garbage_is_ignored(value: str | None) -> None:
    assert retry_after_seconds(value, now=NOW) is None


def test_without_now_a_date_counts_from_the_clock() -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=100)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    seconds = retry_after_seconds(soon)
    assert seconds is not None
    assert 95 <= seconds <= 100


def test_failure_codes_are_one_closed_set_and_say_whether_to_retry() -> None:
    assert {f for f in DeliveryFailure if f.retryable} == {
        DeliveryFailure.NETWORK,
        DeliveryFailure.RATE_LIMITED,
        DeliveryFailure.PLATFORM_UNAVAILABLE,
        DeliveryFailure.STOPPING,
    }
    assert DeliveryFailure("network") is DeliveryFailure.NETWORK
    assert f"{DeliveryFailure.OUTCOME_UNKNOWN}" == "outcome_unknown"  # a label as it is


async def test_a_record_is_written_again_until_the_store_takes_it() -> None:
    outcomes: list[Exception | None] = [StoreError("down"), StoreError("still down"), None]
    tries = 0

    async def write() -> None:
        nonlocal tries
        tries += 1
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    await asyncio.wait_for(record_until_stored(write, event="test.record_retry"), timeout=5)
    assert tries == 3


async def test_only_store_errors_are_retried() -> None:
    async def write() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await record_until_stored(write, event="test.record_retry")
