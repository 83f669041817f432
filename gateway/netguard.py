"""The outbound URL guard (SSRF): where the gateway may connect on a configured URL's behalf.

Every URL the gateway calls that a tenant, a persona or a bot author writes — the HTTP
channel's ``callback_url``, a tenant's ``notify_url``, the webhook agent's ``url``, the LLM
agent's ``base_url`` — goes through this module, twice:

- **when the configuration is read** (:func:`check_url`): the scheme is http(s) and a host
  that is an address literal, in any spelling (``127.0.0.1``, ``2130706433``, ``0177.1``,
  ``0x7f.0.0.1``, ``[::ffff:127.0.0.1]``, ``[2002:7f00:1::]``…), is judged at once;
- **where we connect** (:func:`guarded_session`): the session's resolver refuses a DNS
  answer naming a refused address, and its socket factory refuses every address a socket is
  about to connect to (literals, redirects and cached answers included), so a name that
  resolves differently after validation (DNS rebinding) is caught too.

An address is refused when it is loopback, link-local, private, reserved, multicast,
unspecified or otherwise not globally routable — and so is an IPv6 address that carries
such an IPv4 address: IPv4-mapped (``::ffff:0:0/96``), IPv4-compatible (``::/96``), 6to4
(``2002::/16``), Teredo (``2001::/32``, server and client) and NAT64 (``64:ff9b::/96`` and
the local-use ``64:ff9b:1::/48``).

An operator who means to reach a private address says so per URL (``allow_private: true``
beside it); such a URL gets an ordinary session.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

__all__ = [
    "IpAddress",
    "TargetRefusedError",
    "check_url",
    "guarded_session",
    "literal_address",
    "refusal",
    "refusal_reason",
    "refused_by_guard",
    "session_for",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# What inet_aton accepts beyond dotted decimal: 1 to 4 parts, each decimal, octal or hex.
_LEGACY_IPV4 = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}")


class TargetRefusedError(OSError):
    """The guard refused an address this URL leads to."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address stands for, each with the name of the mapping."""
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address.ipv4_mapped is not None:
        found.append(("IPv4-mapped", address.ipv4_mapped))
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found += [("Teredo client", client), ("Teredo server", server)]
    if address in _NAT64 or address in _NAT64_LOCAL:
        # RFC 6052: with a /96 prefix the IPv4 address is the last 32 bits.
        found.append(("NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # not :: or ::1
        found.append(("IPv4-compatible", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    return found


def _own_reason(address: IpAddress) -> str | None:
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    )
    return next((label for label, hit in checks if hit), None)


def refusal_reason(address: IpAddress) -> str | None:
    """Why the guard refuses ``address``, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        for mapping, ipv4 in _embedded_ipv4(address):
            reason = _own_reason(ipv4)
            if reason is not None:
                # ::ffff:a.b.c.d is a.b.c.d itself; the other forms are worth naming.
                return reason if mapping == "IPv4-mapped" else f"{reason} ({mapping} of {ipv4})"
        if address in _NAT64_LOCAL:
            return "not globally routable (local-use NAT64)"
    return _own_reason(address)


def literal_address(host: str) -> IpAddress | None:
    """The address ``host`` spells, if it is a literal in any form a resolver would take.

    ``getaddrinfo`` (and so aiohttp) reads ``2130706433``, ``0177.0.0.1`` and ``0x7f.1`` as
    127.0.0.1; ``ipaddress`` does not, so those spellings go through ``inet_aton`` here.
    """
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # a zone id names no other host
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host) is None:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def refusal(url: str) -> str | None:
    """Why the guard refuses ``url`` before any lookup, or None (a name is judged later)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an absolute http(s) URL"
    address = literal_address(parts.hostname)
    if address is None:
        return None
    reason = refusal_reason(address)
    return None if reason is None else f"a {reason} address"


def check_url(
    url: str, *, allow_private: bool, field: str = "URL", opt_out: str = "allow_private"
) -> str:
    """``url`` if it may be used; else ValueError (for a configuration validator)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the {field} must be an absolute http(s) URL")
    if allow_private:
        return url
    reason = refusal(url)
    if reason is not None:
        raise ValueError(
            f"the {field} points at {reason}; set {opt_out}: true beside it if you mean it"
        )
    return url


def _check_address(host: str, address: str) -> None:
    reason = refusal_reason(ipaddress.ip_address(address.split("%", 1)[0]))
    if reason is not None:
        raise TargetRefusedError(f"{host} leads to a {reason} address")


class _GuardedResolver(AbstractResolver):
    """Resolves like the system, then refuses the whole answer if any address is refused."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            _check_address(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


def _guarded_socket(addr_info: Any) -> socket.socket:
    """The last gate: every address a socket is about to connect to, whatever led there."""
    family, type_, proto, _, sockaddr = addr_info
    _check_address(str(sockaddr[0]), str(sockaddr[0]))
    return socket.socket(family=family, type=type_, proto=proto)


def guarded_session(**kwargs: Any) -> aiohttp.ClientSession:
    """A client session that can reach public addresses only (see the module docstring)."""
    connector = aiohttp.TCPConnector(resolver=_GuardedResolver(), socket_factory=_guarded_socket)
    return aiohttp.ClientSession(connector=connector, **kwargs)


def session_for(*, allow_private: bool, **kwargs: Any) -> aiohttp.ClientSession:
    """A guarded session, or an ordinary one for a URL marked ``allow_private``."""
    return aiohttp.ClientSession(**kwargs) if allow_private else guarded_session(**kwargs)


def refused_by_guard(exc: BaseException) -> TargetRefusedError | None:
    """The guard's refusal behind an aiohttp connection error, if that is what it was."""
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(
        exc.os_error, TargetRefusedError
    ):
        return exc.os_error
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, TargetRefusedError):
        return cause
    return None
