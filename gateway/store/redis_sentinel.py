"""Connecting the Redis store through Redis Sentinel (``store.url: redis+sentinel://…``).

URL: ``redis+sentinel://[[user]:password@]host:port[,host:port…]/master-name[/db]``
(``rediss+sentinel://`` for TLS to the sentinels and the data nodes). Every ``host:port``
is a sentinel; ``master-name`` is the name the sentinels monitor (``sentinel monitor
<master-name> …``); ``db`` defaults to 0. The credentials, if any, are used for the data
nodes and the sentinels alike (most deployments give them one password).

Guarantees: the store talks to whichever node the sentinels name as the master, through
redis-py's :class:`redis.asyncio.sentinel.Sentinel`. Every new connection asks the
sentinels first, so after a failover the next command reaches the promoted replica. A
connection still open to the old master fails its command (a ``READONLY`` answer from a
demoted master, or a dropped socket) with a :class:`StoreError` and is dropped, never
resent: command retries stay off, as on one server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from gateway.errors import ConfigError

__all__ = ["SENTINEL_SCHEMES", "SentinelUrl", "parse_sentinel_url"]

SENTINEL_SCHEMES = frozenset({"redis+sentinel", "rediss+sentinel"})
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def _credentials(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.username:
            found["username"] = self.username
        if self.password:
            found["password"] = self.password
        return found

    def connect(
        self, *, connect_timeout: float, socket_timeout: float | None
    ) -> tuple[Sentinel, Redis]:
        """The sentinels' client and a client of the master they name (connects lazily)."""
        credentials = self._credentials()
        sentinel_options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": connect_timeout,
            **credentials,
        }
        if self.tls:
            sentinel_options["ssl"] = True
        sentinel = Sentinel(list(self.sentinels), sentinel_kwargs=sentinel_options)
        master = sentinel.master_for(
            self.master,
            redis_class=Redis,
            db=self.db,
            decode_responses=False,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            ssl=self.tls,
            **credentials,
        )
        return sentinel, master


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Read a ``redis+sentinel://`` URL; a malformed one is a :class:`ConfigError`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SENTINEL_SCHEMES:
        raise _bad(f"not a sentinel url (scheme {scheme!r})")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    sentinels: list[tuple[str, int]] = []
    for address in filter(None, hosts.split(",")):
        host, port = _host_port(address)
        sentinels.append((host, port))
    if not sentinels:
        raise _bad("name at least one sentinel as host:port")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise _bad("the path must be /master-name or /master-name/db")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise _bad(f"the database must be a number, not {path[1]!r}")
        db = int(path[1])
    return SentinelUrl(
        sentinels=tuple(sentinels),
        master=path[0],
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=scheme == "rediss+sentinel",
    )


def _host_port(address: str) -> tuple[str, int]:
    if address.startswith("["):  # [ipv6]:port
        host, _, rest = address[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = address.rpartition(":") if ":" in address else (address, "", "")
    if not host:
        raise _bad(f"sentinel address {address!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad(f"sentinel address {address!r} has no valid port")
    return host, int(port_text)


def _bad(problem: str) -> ConfigError:
    return ConfigError([("store.url", f"redis+sentinel url: {problem}")])
