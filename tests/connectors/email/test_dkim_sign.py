"""DKIM signing through OpenSSL: dkimpy's bytes, dkimpy's verifier, keys checked at load.

Every signature here is checked with ``dkim.verify`` (dkimpy) against the published record;
RSA signatures are compared byte for byte with ``dkim.sign`` for the same ``t=``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.util import parse_tag_value

from connectors.email.dkim_sign import DKIM_HEADERS, DkimSigner
from connectors.email.emulator import Smarthost, dkim_dns_record, dkim_verify, generate_dkim_key
from gateway.config import parse_config
from gateway.errors import ConfigError
from tests.connectors.email.conftest import (
    DKIM_ENV,
    DOCS,
    DOMAIN,
    SELECTOR,
    SUPPORT,
    EmailWorld,
    email_world,
)
from tests.harness import base_config

JANE = "jane@customer.example"


def pem(key: Any, passphrase: bytes | None = None) -> bytes:
    pkcs = serialization.PrivateFormat.PKCS8
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if passphrase is not None:
        encryption = serialization.BestAvailableEncryption(passphrase)
    return bytes(key.private_bytes(serialization.Encoding.PEM, pkcs, encryption))


def dkimpy_signature(message: bytes, key_pem: bytes, *, c: tuple[bytes, bytes]) -> bytes:
    header: bytes = dkim.sign(
        message,
        SELECTOR.encode(),
        DOMAIN.encode(),
        key_pem,
        canonicalize=c,
        include_headers=list(DKIM_HEADERS),
    )
    return header


def stamp(header: bytes) -> int:
    return int(parse_tag_value(header.split(b":", 1)[1])[b"t"])


def split_signature(data: bytes) -> tuple[bytes, bytes]:
    """The leading DKIM-Signature header (with its folded lines) and the message after it."""
    assert data.startswith(b"DKIM-Signature:")
    end = data.index(b"\r\n") + 2
    while data[end : end + 1] in (b" ", b"\t"):
        end = data.index(b"\r\n", end) + 2
    return data[:end], data[end:]


def config_with_key(tmp_path: Path) -> dict[str, Any]:
    channel = {
        "kind": "email",
        "addresses": [{"address": SUPPORT}],
        "listener": {"host": "127.0.0.1", "port": 0},
        "dkim": {"selector": SELECTOR, "domain": DOMAIN, "private_key": f"env:{DKIM_ENV}"},
    }
    tenant = {"id": "acme", "name": "Acme Corp", "channels": [channel]}
    return base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[tenant])


async def test_sent_reply_is_signed_with_the_bytes_dkimpy_would_write(
    world: EmailWorld, dkim_key: bytes, dkim_record: bytes
) -> None:
    """The reply on the wire carries exactly dkimpy's header for the same message and t=."""
    await world.sender.send(
        world.sender.compose(from_addr=JANE, from_name="Jane", to=SUPPORT, subject="hi", text="x")
    )
    [relayed] = await world.smarthost.wait_for(1)
    assert dkim_verify(relayed.data, dns_record=dkim_record)
    header, message = split_signature(relayed.data)
    signer = DkimSigner.from_pem(selector=SELECTOR, domain=DOMAIN, private_key=dkim_key)
    assert signer.signature_header(message, timestamp=stamp(header)) == header
    reference = dkimpy_signature(message, dkim_key, c=(b"relaxed", b"relaxed"))
    assert signer.signature_header(message, timestamp=stamp(reference)) == reference


async def test_every_address_of_a_channel_shares_one_signer_with_the_key_parsed_once(
    world: EmailWorld,
) -> None:
    """The PEM is parsed when the connector is built, not per message."""
    support, docs = world.connector.mailbox(SUPPORT), world.connector.mailbox(DOCS)
    assert support is not None
    assert docs is not None
    assert support.signer is not None
    assert support.signer is docs.signer
    assert isinstance(support.signer.key, rsa.RSAPrivateKey)


async def test_ed25519_key_signs_ed25519_sha256_replies_dkimpy_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Ed25519 key in the dkim block gives RFC 8463 signatures, verified by dkimpy."""
    key = pem(ed25519.Ed25519PrivateKey.generate())
    monkeypatch.setenv(DKIM_ENV, key.decode())
    record = dkim_dns_record(key)
    assert record.startswith(b"v=DKIM1; k=ed25519; p=")
    smarthost = await Smarthost().start()
    try:
        async with email_world(f"sqlite:///{tmp_path}/gw.db", smarthost) as world:
            await world.sender.send(
                world.sender.compose(
                    from_addr=JANE, from_name="Jane", to=SUPPORT, subject="hi", text="prices?"
                )
            )
            [relayed] = await world.smarthost.wait_for(1)
    finally:
        await smarthost.stop()
    assert b"a=ed25519-sha256;" in relayed.data.replace(b"\r\n ", b"").replace(b" ", b"")
    assert dkim_verify(relayed.data, dns_record=record)
    forged = relayed.data.replace(b"Subject: Re: hi", b"Subject: Re: pay now", 1)
    assert forged != relayed.data
    assert not dkim_verify(forged, dns_record=record)


NOT_A_KEY, PEM_END = b"bm90IGEga2V5IGF0IGFsbA==\n", b"-----END PRIVATE KEY-----\n"
UNUSABLE_KEYS: dict[str, tuple[Callable[[], bytes], str]] = {
    # cryptography will not make a 512-bit key; openssl still does.
    "rsa512": (lambda: generate_dkim_key(512), "512 bits"),
    "ecdsa": (lambda: pem(ec.generate_private_key(ec.SECP256R1())), "RSA or Ed25519"),
    "encrypted": (lambda: pem(ed25519.Ed25519PrivateKey.generate(), b"pw"), "encrypted"),
    "garbage": (lambda: b"-----BEGIN PRIVATE KEY-----\n" + NOT_A_KEY + PEM_END, "not a PEM"),
}


@pytest.mark.parametrize("kind", list(UNUSABLE_KEYS))
def test_attack_weak_or_unusable_dkim_key_refused_at_config_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A 512-bit RSA key is factorable (anyone could sign mail as our domain); an ECDSA,
    encrypted or broken key cannot sign at all. Each is a config error naming the dkim block
    when the file is read, not a failure on every reply, and the message never shows the key."""
    make_key, problem = UNUSABLE_KEYS[kind]
    key = make_key()
    monkeypatch.setenv(DKIM_ENV, key.decode())
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with_key(tmp_path))
    [(path, message)] = caught.value.problems
    assert path.endswith("dkim.private_key"), path
    assert problem in message
    body = b"".join(key.strip().splitlines()[1:-1]).decode()
    assert body[:16] not in str(caught.value)
