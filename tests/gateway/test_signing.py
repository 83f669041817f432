"""HMAC webhook signatures: the format both directions of the HTTP channel rely on."""

import pytest

from gateway.errors import VerificationError
from gateway.signing import sign, verify

BODY = b'{"text":"hi"}'


def test_round_trip_returns_timestamp():
    """A header made by sign() verifies with the same secret and yields its timestamp."""
    header = sign(["s1"], BODY, timestamp=1_700_000_000)
    assert verify(header, BODY, ["s1"], now=1_700_000_010) == 1_700_000_000


def test_rotation_accepts_either_secret():
    """During rotation the sender signs with both secrets; a receiver knowing one accepts."""
    header = sign(["new", "old"], BODY, timestamp=100)
    assert verify(header, BODY, ["old"], now=100) == 100
    assert verify(header, BODY, ["new"], now=100) == 100


@pytest.mark.parametrize(
    ("header", "body", "now", "reason"),
    [
        (None, BODY, 100, "missing_signature"),
        ("v1=abc", BODY, 100, "malformed_signature"),
        ("t=100", BODY, 100, "malformed_signature"),
        (sign(["s1"], BODY, timestamp=100), BODY, 100 + 301, "stale_signature"),
        (sign(["s1"], BODY, timestamp=100), BODY, 100 - 301, "stale_signature"),
        (sign(["s1"], BODY, timestamp=100), BODY + b" ", 100, "bad_signature"),
        (sign(["other"], BODY, timestamp=100), BODY, 100, "bad_signature"),
    ],
)
def test_rejections_carry_a_reason(header, body, now, reason):
    """Every way a signature can be wrong is refused with a distinct, stable reason."""
    with pytest.raises(VerificationError) as caught:
        verify(header, body, ["s1"], now=now)
    assert caught.value.reason == reason
    assert caught.value.status == 401


def test_window_edge_is_inclusive():
    """Exactly `tolerance` seconds old still verifies; one more second does not."""
    header = sign(["s1"], BODY, timestamp=1000)
    assert verify(header, BODY, ["s1"], tolerance=300, now=1300) == 1000
    with pytest.raises(VerificationError):
        verify(header, BODY, ["s1"], tolerance=300, now=1301)
