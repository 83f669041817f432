"""The email channel's DKIM key and the DNS records that make its mail deliverable.

Guarantees: :func:`dkim_key` gives a 2048-bit RSA key in PKCS#8 PEM (what the email
connector's ``dkim.private_key`` accepts), reusing a readable key already in the project so
that a record published earlier stays valid; :func:`mail_records` gives the DKIM TXT record
whose ``p=`` is that key's public half (base64 DER SubjectPublicKeyInfo, as receivers read
it), one SPF record and one DMARC record for the domain, and the MX record; the zone-file
form splits long TXT values into strings of at most 255 characters, as DNS requires.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from gateway.scaffold.options import EmailOptions

__all__ = ["DKIM_KEY_BITS", "DnsRecord", "dkim_key", "dkim_key_path", "mail_records"]

DKIM_KEY_BITS = 2048  # what receivers expect today; 1024 is the minimum they accept
_TXT_CHUNK = 255  # the longest character-string a TXT record holds


@dataclass(frozen=True, slots=True)
class DnsRecord:
    name: str  # fully qualified, no trailing dot
    type: str
    value: str  # as a DNS provider's form takes it (TXT: unquoted, whole)
    why: str

    def zone_line(self) -> str:
        """The record in zone-file syntax (BIND and most exports)."""
        if self.type != "TXT":
            return f"{self.name}.\t3600\tIN\t{self.type}\t{self.value}"
        chunks = [self.value[i : i + _TXT_CHUNK] for i in range(0, len(self.value), _TXT_CHUNK)]
        quoted = " ".join(f'"{chunk}"' for chunk in chunks)
        return f"{self.name}.\t3600\tIN\tTXT\t( {quoted} )"


def dkim_key_path(email: EmailOptions) -> Path:
    """Where the project keeps the private key, relative to its folder."""
    return Path("dkim") / f"{email.selector}._domainkey.{email.domain}.pem"


def dkim_key(existing: Path | None) -> tuple[bytes, bool]:
    """The PEM of the project's DKIM key and whether it was reused from ``existing``.

    A key that cannot be read as an unencrypted RSA key of at least 1024 bits is replaced.
    """
    if existing is not None and existing.is_file():
        try:
            key = load_pem_private_key(existing.read_bytes(), password=None)
        except (ValueError, TypeError):
            key = None
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 1024:
            return existing.read_bytes(), True
    fresh = rsa.generate_private_key(public_exponent=65537, key_size=DKIM_KEY_BITS)
    pem = fresh.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return pem, False


def _dkim_value(private_pem: bytes) -> str:
    key = load_pem_private_key(private_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("the project's DKIM key is RSA")
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode("ascii")


def mail_records(email: EmailOptions, private_pem: bytes) -> list[DnsRecord]:
    """DKIM, SPF, DMARC and MX for the channel's domain."""
    relay = email.relay
    # The gateway's own host sends when the relay is on this machine: the MX host covers it.
    senders = "mx" if relay.loopback else f"mx {_spf_mechanism(relay.host)}"
    return [
        DnsRecord(
            f"{email.selector}._domainkey.{email.domain}",
            "TXT",
            _dkim_value(private_pem),
            "DKIM: the public key receivers check the gateway's signatures with",
        ),
        DnsRecord(
            email.domain,
            "TXT",
            f"v=spf1 {senders} ~all",
            "SPF: the hosts allowed to send mail for the domain",
        ),
        DnsRecord(
            f"_dmarc.{email.domain}",
            "TXT",
            f"v=DMARC1; p=none; adkim=r; aspf=r; rua=mailto:postmaster@{email.domain}",
            "DMARC: what receivers do with mail failing both; reports to postmaster@",
        ),
        DnsRecord(
            email.domain,
            "MX",
            f"10 {email.mx_host}.",
            "MX: where mail for the domain is delivered (the gateway's SMTP listener)",
        ),
    ]


def _spf_mechanism(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"a:{host}"
    return f"ip{address.version}:{address}"
