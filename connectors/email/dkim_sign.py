"""DKIM signatures on outgoing mail: dkimpy's canonicalisation, OpenSSL's signature.

dkimpy is the reference for what a DKIM-Signature header says and which bytes it covers;
its RSA, though, is pure Python (a 2048-bit signature costs ~5 ms of CPU) and it parses the
PEM key on every call. :class:`DkimSigner` keeps every step that decides the signed bytes
with dkimpy — message split (``rfc822_parse``), header selection (``select_headers`` through
``hash_headers``), relaxed/simple canonicalisation (``CanonicalizationPolicy``), tag order
and folding (``fold``, ``RE_BTAG``) — and computes only the signature itself with the
``cryptography`` package (OpenSSL), on a key parsed once when the channel is configured.

Guarantees:

- for an RSA key, the header is byte-identical to ``dkim.sign`` with the same key, selector,
  domain, headers, canonicalisation and ``t=`` (RSASSA-PKCS1-v1_5 is deterministic); the
  property tests check this on arbitrary messages and verify every signature with
  ``dkim.verify``;
- an Ed25519 key signs ``ed25519-sha256`` (RFC 8463) the way dkimpy does: the Ed25519
  signature of the SHA-256 digest of the canonical header data;
- a key that is not an RSA (>= 1024 bits) or Ed25519 private key in PEM is refused with
  :class:`DkimKeyError` when the configuration is read, naming the problem, never the key.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from dkim.canonicalization import CanonicalizationPolicy
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from gateway.config import Secret

__all__ = [
    "DKIM_HEADERS",
    "MIN_RSA_BITS",
    "Canonicalization",
    "DkimConfig",
    "DkimKeyError",
    "DkimSigner",
    "SigningKey",
    "load_signing_key",
]

# Signed headers: the ones a reader trusts and a forger would want to change.
DKIM_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"auto-submitted",
    b"mime-version",
    b"content-type",
)

# dkimpy's verifier (and most receivers) refuse shorter RSA keys by default.
MIN_RSA_BITS = 1024

SigningKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
Canonicalization = Literal["relaxed", "simple"]

_HEADER_NAME = b"DKIM-Signature"
_LINESEP = b"\r\n"
# dkimpy's placeholder: forces b= onto a line of its own, so that writing the real value
# does not refold the tags before it.
_B_PLACEHOLDER = b"0" * 60


class DkimKeyError(ValueError):
    """The configured DKIM key cannot sign (the message never includes key material)."""


def load_signing_key(pem: bytes, *, checked: bool = False) -> SigningKey:
    """The private key in ``pem`` (PKCS#1 or PKCS#8 RSA, or PKCS#8 Ed25519).

    OpenSSL's RSA consistency check (primes, CRT values) costs ~36 ms for 2048 bits;
    ``checked=True`` skips it for a PEM that already passed it (the config validator).
    """
    try:
        key = load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=checked)
    except TypeError as exc:
        raise DkimKeyError("the DKIM key is encrypted; give it without a passphrase") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise DkimKeyError("the DKIM key is not a PEM private key") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise DkimKeyError(
                f"the DKIM RSA key has {key.key_size} bits; receivers need >= {MIN_RSA_BITS}"
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise DkimKeyError(f"a DKIM key is RSA or Ed25519, not {type(key).__name__}")


@dataclass(frozen=True, slots=True)
class DkimSigner:
    """One channel's signer: selector, domain and a parsed key; :meth:`sign` per message."""

    selector: bytes
    domain: bytes
    key: SigningKey
    header_canon: Canonicalization = "relaxed"
    body_canon: Canonicalization = "relaxed"
    include_headers: tuple[bytes, ...] = DKIM_HEADERS

    def __post_init__(self) -> None:
        # The same refusals as dkim.sign, at construction rather than per message.
        if b"from" not in self.include_headers:
            raise ValueError("the From header field must be signed (RFC 6376 §5.4)")
        refused = set(self.include_headers) & set(dkim.DKIM.SHOULD_NOT)
        if refused or any(h != h.lower() for h in self.include_headers):
            raise ValueError(f"headers not to sign, or not lower case: {sorted(refused)}")

    @classmethod
    def from_pem(
        cls,
        *,
        selector: str,
        domain: str,
        private_key: bytes,
        header_canon: Canonicalization = "relaxed",
        body_canon: Canonicalization = "relaxed",
        include_headers: Sequence[bytes] = DKIM_HEADERS,
        key_checked: bool = False,
    ) -> DkimSigner:
        """Raises DkimKeyError when ``private_key`` cannot sign (see load_signing_key)."""
        return cls(
            selector=selector.encode(),
            domain=domain.encode(),
            key=load_signing_key(private_key, checked=key_checked),
            header_canon=header_canon,
            body_canon=body_canon,
            include_headers=tuple(include_headers),
        )

    @property
    def algorithm(self) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return b"ed25519-sha256"
        return b"rsa-sha256"

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """``message`` with its ``DKIM-Signature`` header prepended."""
        return self.signature_header(message, timestamp=timestamp) + message

    def signature_header(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """The ``DKIM-Signature`` header line (CRLF-terminated) for ``message``.

        ``timestamp`` is the ``t=`` value (default now); tests pin it to compare with dkimpy.
        Raises dkim.MessageFormatError for a message dkimpy cannot split into header and body.
        """
        headers, body = dkim.rfc822_parse(message)
        policy = CanonicalizationPolicy.from_c_value(
            f"{self.header_canon}/{self.body_canon}".encode()
        )
        body_hash = base64.b64encode(hashlib.sha256(policy.canonicalize_body(body)).digest())
        stamp = int(time.time()) if timestamp is None else timestamp
        # dkim.DKIM.sign's tags, in its order (no l=: the whole body is signed).
        fields = [
            (b"v", b"1"),
            (b"a", self.algorithm),
            (b"c", policy.to_c_value()),
            (b"d", self.domain),
            (b"i", b"@" + self.domain),
            (b"q", b"dns/txt"),
            (b"s", self.selector),
            (b"t", str(stamp).encode("ascii")),
            (b"h", b" : ".join(self.include_headers)),
            (b"bh", body_hash),
            (b"b", _B_PLACEHOLDER),
        ]
        # The header as it is hashed: folded as it will be sent, with an empty b= (what
        # dkim.DomainSigner.gen_header does before it signs).
        unsigned = dkim.fold(_join(fields), namelen=len(_HEADER_NAME), linesep=_LINESEP)
        unsigned = dkim.RE_BTAG.sub(b"\\1", unsigned)
        digest = hashlib.sha256()
        dkim.hash_headers(
            digest,
            policy,
            policy.canonicalize_headers(headers),
            self.include_headers,
            (_HEADER_NAME, b" " + unsigned),
            dict(fields),
        )
        fields[-1] = (b"b", base64.b64encode(self._signature(digest.digest())))
        value: bytes = dkim.fold(
            _join(fields) + _LINESEP, namelen=len(_HEADER_NAME), linesep=_LINESEP
        )
        return _HEADER_NAME + b": " + value

    def _signature(self, header_digest: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(header_digest)  # RFC 8463 §3: Ed25519 over the SHA-256
        return self.key.sign(header_digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def _join(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    return b"; ".join(b"=".join(field) for field in fields)


class DkimConfig(BaseModel):
    """A channel's ``dkim`` block; a key that cannot sign is refused when the file is read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    selector: str = Field(description="The DNS selector (`<selector>._domainkey.<domain>`).")
    domain: str = Field(description="The signing domain (`d=`).")
    private_key: Secret = Field(
        description="The PEM text: RSA (PKCS#1 or PKCS#8, at least 1024 bits) signs "
        "rsa-sha256, Ed25519 (PKCS#8) signs ed25519-sha256."
    )

    @field_validator("private_key")
    @classmethod
    def _can_sign(cls, value: SecretStr) -> SecretStr:
        load_signing_key(value.get_secret_value().encode())  # DkimKeyError is a ValueError
        return value

    def signer(self) -> DkimSigner:
        """The channel's signer, its key parsed here once (relaxed/relaxed, DKIM_HEADERS)."""
        return DkimSigner.from_pem(
            selector=self.selector,
            domain=self.domain,
            private_key=self.private_key.get_secret_value().encode(),
            key_checked=True,  # _can_sign ran OpenSSL's check on this text
        )
