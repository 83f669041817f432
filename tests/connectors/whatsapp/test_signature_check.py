"""The edge's own X-Twilio-Signature check gives twilio's ``RequestValidator.validate`` verdict,
and a genuine request costs it one HMAC."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from connectors.whatsapp import signature
from connectors.whatsapp.signature import form_pairs, signature_matches

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_pairs = st.lists(
    st.tuples(st.sampled_from(["Body", "From", "To", "NumMedia", "a", "B"]) | _text, _text),
    max_size=8,
)
_ports = st.sampled_from(["", ":80", ":443", ":8443"])


@st.composite
def _urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https"]))
    host = draw(st.sampled_from(["wa.example.test", "127.0.0.1", "[::1]"]))
    path = draw(st.sampled_from(["", "/whatsapp/webhook", "/p/whatsapp/status"]))
    query = draw(st.sampled_from(["", "?tenant=acme&ob=01H", "?a=1&a=2"]))
    return f"{scheme}://{host}{draw(_ports)}{path}{query}"


def _variant(url: str, port: str) -> str:
    """``url`` with its port replaced by ``port``."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit(":", 1)[0] if parts.port is not None else parts.netloc
    return urlunsplit(parts._replace(netloc=host + port))


@given(
    token=st.text(min_size=1, max_size=30),
    url=_urls(),
    signed_port=st.none() | _ports,
    pairs=_pairs,
    tamper=st.booleans(),
)
def test_the_check_gives_the_sdk_verdict(
    token: str, url: str, signed_port: str | None, pairs: list[tuple[str, str]], tamper: bool
) -> None:
    """Signed over the URL, another port of it, or a tampered form: the same answer as
    RequestValidator, repeated names and values included."""
    validator = RequestValidator(token)
    signed_over = url if signed_port is None else _variant(url, signed_port)
    header = validator.compute_signature(signed_over, MultiDict(pairs))
    received = [*pairs, ("Extra", "1")] if tamper else pairs
    ours = signature_matches(token.encode(), url, received, header)
    assert ours == validator.validate(url, MultiDict(received), header)


@given(token=st.text(min_size=1, max_size=30), url=_urls(), header=st.text(max_size=40))
def test_any_header_text_is_judged_without_error(token: str, url: str, header: str) -> None:
    pairs = [("Body", "hi"), ("From", "whatsapp:+14155550100")]
    ours = signature_matches(token.encode(), url, pairs, header)
    assert ours == RequestValidator(token).validate(url, MultiDict(pairs), header)


def test_a_genuine_request_costs_one_hmac(monkeypatch: pytest.MonkeyPatch) -> None:
    """The URL as rebuilt is tried first; its port variants only once it has failed
    (RequestValidator.validate computes two signatures for every request)."""
    calls: list[bytes] = []
    digest = hmac.digest

    def counting(key: bytes, msg: bytes, algorithm: str) -> bytes:
        calls.append(msg)
        return digest(key, msg, algorithm)

    monkeypatch.setattr(signature.hmac, "digest", counting)
    url, pairs = "https://wa.example.test/whatsapp/webhook", [("Body", "hi"), ("To", "x")]
    header = RequestValidator("token").compute_signature(url, dict(pairs))
    assert signature_matches(b"token", url, pairs, header)
    assert len(calls) == 1
    calls.clear()
    with_port = RequestValidator("token").compute_signature(_variant(url, ":443"), dict(pairs))
    assert signature_matches(b"token", url, pairs, with_port)
    assert len(calls) == 2  # the URL as rebuilt, then with :443
    calls.clear()
    assert not signature_matches(b"token", url, pairs, "forged")
    assert len(calls) == 2


_form_text = st.lists(
    st.sampled_from(["&", "=", "+", "%", "%2B", "%3A", "%e2%82%ac", "%ff", "%zz", "a", "Body"])
    | st.text(max_size=6),
    max_size=30,
).map("".join)


def _outcome(parse: Callable[[str], object], text: str) -> object:
    """The pairs, or the kind of refusal."""
    try:
        return parse(text)
    except (UnicodeDecodeError, ValueError) as exc:
        return type(exc)


def _stdlib(text: str) -> object:
    return parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=500)


@given(text=_form_text)
def test_the_form_parse_is_the_stdlibs(text: str) -> None:
    """The same pairs as parse_qsl, or the same refusal (bad UTF-8 behind a percent sign)."""
    assert _outcome(form_pairs, text) == _outcome(_stdlib, text)


@pytest.mark.parametrize("count", [499, 500, 501])
def test_the_field_limit_is_the_stdlibs(count: int) -> None:
    text = "&".join(["a=1"] * count)
    assert _outcome(form_pairs, text) == _outcome(_stdlib, text)
