"""HMAC signatures: v1 (body only) for webhooks, v2 (the whole request) for the HTTP channel."""

import hashlib
import hmac

import pytest

from gateway.errors import VerificationError
from gateway.signing import (
    canonical_path,
    canonical_query,
    sign,
    sign_request,
    verify,
    verify_request,
)

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


# -- v2 ----------------------------------------------------------------------------------------
MESSAGES = "/v1/channels/http/acme/messages"
POLL = "/v1/channels/http/acme/conversations/web-alice/replies"
EXAMPLE_BODY = b'{"conversation_id":"web-alice","user":{"id":"alice"},"text":"hello there"}'


def test_worked_examples_in_the_http_channel_guide():
    """The signatures printed in docs/connectors/http.md, from a plain HMAC of the
    documented canonical string, and from sign_request()."""
    post = b"v2\n1700000000\nPOST\n" + MESSAGES.encode() + b"\n\n" + EXAMPLE_BODY
    poll = b"v2\n1700000000\nGET\n" + POLL.encode() + b"\nafter=3&wait=10\n"
    expected = {
        post: "483757d232ca7d47773f6993be703bf9d34fee49197d4ae0aae93cdfa88093a6",
        poll: "d9bfa5a7a841a2433d1b6b35d8271109db50fac61c1483b5646d31e29c8f79df",
    }
    for message, digest in expected.items():
        assert hmac.new(b"demo-signing-secret", message, hashlib.sha256).hexdigest() == digest
    header = sign_request(
        ["demo-signing-secret"], "POST", MESSAGES, EXAMPLE_BODY, timestamp=1_700_000_000
    )
    assert header == f"t=1700000000,v2={expected[post]}"
    header = sign_request(
        ["demo-signing-secret"],
        "GET",
        f"https://gw.example.com{POLL}?wait=10&after=3",
        timestamp=1_700_000_000,
    )
    assert header == f"t=1700000000,v2={expected[poll]}"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("/a/b", "/a/b"),
        ("/a/%7e", "/a/~"),
        ("/a/%7E", "/a/~"),
        ("/a/\u00fc", "/a/%C3%BC"),
        ("/a/%c3%bc", "/a/%C3%BC"),
        ("/a/a b", "/a/a%20b"),
        ("/a/a+b", "/a/a%2Bb"),
        ("/a/50%25", "/a/50%25"),
        ("/a/b%2Fc", "/a/b/c"),
    ],
)
def test_canonical_path_is_one_spelling(raw, canonical):
    """Percent-decoded, then encoded again: every spelling of a path gives one form."""
    assert canonical_path(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("", ""),
        ("wait=10&after=3", "after=3&wait=10"),
        ("b=2&a=1&a=0", "a=0&a=1&b=2"),
        ("q=a+b&r=a%20b", "q=a%20b&r=a%20b"),
        ("x", "x="),
        ("x=%2B&y=~", "x=%2B&y=~"),
        ("k%3D=v%26", "k%3D=v%26"),
    ],
)
def test_canonical_query_sorts_and_encodes_pairs(raw, canonical):
    """Sorted pairs, RFC 3986-encoded, blanks and repeats kept, ``+`` read as a space."""
    assert canonical_query(raw) == canonical


def _check(header, method="POST", path=MESSAGES, query="", body=EXAMPLE_BODY, **kwargs):
    return verify_request(header, method, path, query, body, ["s1"], now=100, **kwargs)


@pytest.mark.parametrize(
    ("method", "path", "query", "body"),
    [
        ("GET", MESSAGES, "", EXAMPLE_BODY),
        ("POST", "/v1/channels/http/globex/messages", "", EXAMPLE_BODY),
        ("POST", MESSAGES, "x=1", EXAMPLE_BODY),
        ("POST", MESSAGES, "", EXAMPLE_BODY + b" "),
    ],
    ids=["method", "path", "query", "body"],
)
def test_v2_signature_binds_method_path_query_and_body(method, path, query, body):
    """Change any signed part of the request and the signature no longer verifies."""
    header = sign_request(["s1"], "POST", MESSAGES, EXAMPLE_BODY, timestamp=100)
    assert _check(header).scheme == "v2"
    with pytest.raises(VerificationError) as caught:
        _check(header, method, path, query, body)
    assert caught.value.reason == "bad_signature"


def test_v2_signature_survives_re_encoding_of_the_url():
    """A client library that re-spells the path or reorders the query breaks nothing."""
    header = sign_request(["s1"], "GET", "/c/%7ex/replies?wait=1&after=2", timestamp=100)
    assert _check(header, "GET", "/c/~x/replies", "after=2&wait=1", b"").timestamp == 100


def test_v2_rotation_and_the_replay_key():
    """Either secret verifies; the replay key names the request, not the secret, so a
    replay that keeps only one entry of a rotation pair is still the same request."""
    header = sign_request(["new", "old"], "POST", MESSAGES, EXAMPLE_BODY, timestamp=100)
    t, new, old = header.split(",")
    by_new = verify_request(t + "," + new, "POST", MESSAGES, "", EXAMPLE_BODY, ["new"], now=100)
    by_old = verify_request(
        t + "," + old, "POST", MESSAGES, "", EXAMPLE_BODY, ["new", "old"], now=100
    )
    assert by_new.replay_key == by_old.replay_key
    later = sign_request(["new"], "POST", MESSAGES, EXAMPLE_BODY, timestamp=101)
    assert _key(later, "new", now=101) != by_new.replay_key


def _key(header, secret, now):
    return verify_request(header, "POST", MESSAGES, "", EXAMPLE_BODY, [secret], now=now).replay_key


def test_v1_only_behind_the_switch():
    """A body-only v1 header is refused with its own reason unless v1 is accepted; a header
    with both entries verifies by v2 either way."""
    legacy = sign(["s1"], EXAMPLE_BODY, timestamp=100)
    with pytest.raises(VerificationError) as caught:
        _check(legacy)
    assert caught.value.reason == "legacy_signature"
    assert _check(legacy, accept_v1=True).scheme == "v1"
    with pytest.raises(VerificationError) as caught:
        _check(sign(["other"], EXAMPLE_BODY, timestamp=100), accept_v1=True)
    assert caught.value.reason == "bad_signature"
    both = sign_request(["s1"], "POST", MESSAGES, EXAMPLE_BODY, timestamp=100, v1=True)
    assert _check(both).scheme == "v2"
    assert verify(both, EXAMPLE_BODY, ["s1"], now=100) == 100  # a v1 receiver still verifies


def test_v2_stale_and_malformed_headers_refused():
    """The window and the header's shape are checked as for v1."""
    header = sign_request(["s1"], "POST", MESSAGES, EXAMPLE_BODY, timestamp=100)
    with pytest.raises(VerificationError) as caught:
        verify_request(header, "POST", MESSAGES, "", EXAMPLE_BODY, ["s1"], now=401)
    assert caught.value.reason == "stale_signature"
    for bad in (None, "t=100", "v2=abc", "t=x,v2=abc"):
        with pytest.raises(VerificationError):
            _check(bad)


@pytest.mark.parametrize(
    "url",
    [
        f"https://gw.example.com{MESSAGES}",
        f"https://gw.example.com{POLL}?wait=10&after=3",
        "http://127.0.0.1:8080/v1/channels/http/acme/conversations/a%20b%7e/replies?x&q=a+b&q=%2F",
    ],
)
def test_the_guides_stdlib_client_signs_what_the_gateway_verifies(url):
    """The Python client printed in docs/connectors/http.md agrees with verify_request."""
    from urllib.parse import urlsplit

    from tests.harness import REPO

    guide = (REPO / "docs" / "connectors" / "http.md").read_text()
    source = next(
        block.split("```", 1)[0]
        for block in guide.split("```python\n")[1:]
        if "def flowbiz_signature" in block
    )
    namespace: dict[str, object] = {}
    exec(source, namespace)  # noqa: S102 - the guide's own example, run to keep it true
    header = namespace["flowbiz_signature"]("s1", "GET", url, b"body")
    parts = urlsplit(url)
    verified = verify_request(header, "GET", parts.path, parts.query, b"body", ["s1"])
    assert verified.scheme == "v2"
