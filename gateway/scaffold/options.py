"""The answers ``flowbiz init`` works from, validated before anything is written.

Guarantees: :func:`validate` either returns :class:`InitOptions` in which every value is in
its narrowest form — a tenant id the configuration accepts, an ``https`` URL with no user,
query, fragment or whitespace, DNS names made of letters, digits and hyphens, ids in the
shape each platform gives them — or raises :class:`InitError` naming every faulty answer by
its flag. A validated value can go into YAML, Markdown, JSON, a DNS record or a file name
without escaping anything out of its place: no newline, no ``..``, no quote survives.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from pydantic import ValidationError

from gateway.config import StoreConfig

__all__ = [
    "CHANNELS",
    "DEFAULT_DKIM_SELECTOR",
    "DEFAULT_SLACK_COMMAND",
    "DEFAULT_SMTP_PORT",
    "EmailOptions",
    "InitError",
    "InitOptions",
    "Relay",
    "env_prefix",
    "validate",
]

CHANNELS = ("http", "slack", "line", "whatsapp", "email")
DEFAULT_DKIM_SELECTOR = "flowbiz"
DEFAULT_SLACK_COMMAND = "/persona"  # the routing switch command, which Slack may carry too
DEFAULT_SMTP_PORT = 2525

_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # TenantConfig.id's pattern
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_URL_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)*/?$")
_SLACK_TEAM = re.compile(r"^T[A-Z0-9]{2,20}$")
_SLACK_COMMAND = re.compile(r"^/[a-z0-9_-]{1,31}$")
_LINE_BOT = re.compile(r"^U[0-9a-f]{32}$")
_TWILIO_ACCOUNT = re.compile(r"^AC[0-9a-f]{32}$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_MAX_NAME = 80
_TENANT_RULE = "1-63 lowercase letters, digits, - or _, starting with a letter or digit"

T = TypeVar("T")


class InitError(ValueError):
    """The answers cannot make a project; ``problems`` holds ``(flag, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{flag}: {message}" for flag, message in problems))


@dataclass(frozen=True, slots=True)
class Relay:
    """The outgoing mail server replies go through."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class EmailOptions:
    address: str
    domain: str
    selector: str
    smtp_port: int
    mx_host: str
    relay: Relay


@dataclass(frozen=True, slots=True)
class InitOptions:
    tenant: str
    name: str
    public_url: str  # https://host[:port][/prefix], no trailing slash
    channels: tuple[str, ...]  # in CHANNELS order
    store_url: str
    slack_team_id: str | None = None
    slack_command: str = DEFAULT_SLACK_COMMAND
    line_bot_user_id: str | None = None
    twilio_account_sid: str | None = None
    whatsapp_number: str | None = None  # +E.164
    email: EmailOptions | None = None

    def url(self, path: str) -> str:
        """The public URL of one of the gateway's paths."""
        return self.public_url + path


def env_prefix(tenant: str) -> str:
    """The prefix of the tenant's environment variables: ``acme-eu`` → ``ACME_EU``."""
    prefix = re.sub(r"[^A-Z0-9]", "_", tenant.upper())
    return prefix if prefix[0].isalpha() else f"TENANT_{prefix}"


def _text(value: str, flag: str, problems: list[tuple[str, str]]) -> str:
    if _CONTROL.search(value):
        problems.append((flag, "must be one line of printable text"))
    return value.strip()


def _hostname(value: str) -> bool:
    labels = value.split(".")
    return len(value) <= 253 and len(labels) >= 2 and all(_LABEL.fullmatch(x) for x in labels)


def _public_url(value: str) -> str:
    if _CONTROL.search(value) or any(c.isspace() for c in value):
        raise ValueError("must not contain whitespace or control characters")
    parts = urlsplit(value)
    if parts.scheme != "https":
        raise ValueError("must be an https:// URL (platforms call webhooks over TLS only)")
    if "@" in parts.netloc:
        raise ValueError("must not contain a user name or password")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("must not have a query or fragment: give the base URL only")
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("has an invalid port") from exc
    if not _hostname(host):
        raise ValueError(f"{host or 'the host'!r} is not a DNS name (example: bot.acme.example)")
    if not _URL_PATH.fullmatch(parts.path):
        raise ValueError("its path may hold only letters, digits and . _ ~ - between slashes")
    if any(segment in {".", ".."} for segment in parts.path.split("/")):
        raise ValueError("its path must not contain . or .. segments")
    netloc = host if port is None or port == 443 else f"{host}:{port}"
    return f"https://{netloc}{parts.path.rstrip('/')}"


def _channels(value: str) -> tuple[str, ...]:
    wanted = {c.strip().lower() for c in value.split(",") if c.strip()}
    unknown = sorted(wanted - set(CHANNELS))
    if unknown:
        raise ValueError(f"unknown channel(s) {', '.join(unknown)}; choose from {CHANNELS}")
    if not wanted:
        raise ValueError(f"choose at least one of {', '.join(CHANNELS)}")
    return tuple(c for c in CHANNELS if c in wanted)


def _store(value: str) -> str:
    if value == "sqlite":
        return "sqlite://flowbiz.db"  # beside gateway.yaml: relative to the file
    if _CONTROL.search(value) or any(c.isspace() for c in value):
        raise ValueError("must not contain whitespace or control characters")
    parts = urlsplit(value)
    if parts.scheme not in {"sqlite", "redis", "rediss", "redis+sentinel", "rediss+sentinel"}:
        raise ValueError("give sqlite, sqlite:///path, redis://host:port/db or rediss://…")
    if parts.password:
        raise ValueError("a password in the store URL would be written into gateway.yaml")
    try:
        StoreConfig(url=value)
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"]) from exc
    return value


def _relay(value: str) -> Relay:
    """``host``, ``host:port``, an IP address, or ``[v6 address]:port``."""
    host, port_text = value.lower(), ""
    if host.startswith("[") and "]" in host:
        host, _, rest = host[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif host.count(":") == 1:
        host, _, port_text = host.partition(":")
    if host != "localhost" and not _hostname(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not a host name or an IP address") from None
    default = Relay(host=host, port=25)
    if not port_text:
        # A relay on this machine takes mail on 25; a provider's submission port is 587.
        return default if default.loopback else Relay(host=host, port=587)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("the port must be a number from 1 to 65535")
    return Relay(host=host, port=int(port_text))


class _Refused(ValueError):
    """One answer refused, with the flag it came from."""

    def __init__(self, flag: str, message: str) -> None:
        self.flag = flag
        super().__init__(message)


def _email(answers: Mapping[str, str | None], public_host: str) -> EmailOptions:
    address = (answers.get("email_address") or "").strip().lower()
    domain = (answers.get("email_domain") or "").strip().lower().rstrip(".")
    if not address and not domain:
        raise _Refused("--email-address", "required for the email channel (or --email-domain)")
    if address:
        local, at, address_domain = address.partition("@")
        if not at or not _LOCAL_PART.fullmatch(local):
            raise _Refused("--email-address", f"{address!r} is not a plain address (name@domain)")
        if domain and domain != address_domain:
            raise _Refused("--email-domain", f"the address {address!r} is not in {domain!r}")
        domain = address_domain
    if not _hostname(domain):
        flag = "--email-address" if address else "--email-domain"
        raise _Refused(flag, f"{domain!r} is not a domain name (letters, digits, hyphens, dots)")
    selector = (answers.get("dkim_selector") or DEFAULT_DKIM_SELECTOR).strip().lower()
    if not _LABEL.fullmatch(selector):
        raise _Refused("--dkim-selector", "must be one DNS label (letters, digits, hyphens)")
    mx_host = (answers.get("mx_host") or public_host).strip().lower()
    if not _hostname(mx_host):
        raise _Refused("--mx-host", f"{mx_host!r} is not a DNS name")
    port_text = answers.get("smtp_port") or str(DEFAULT_SMTP_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _Refused("--smtp-port", "must be a number from 1 to 65535")
    try:
        relay = _relay((answers.get("smtp_relay") or "localhost").strip())
    except ValueError as exc:
        raise _Refused("--smtp-relay", str(exc)) from exc
    return EmailOptions(
        address=address or f"support@{domain}",
        domain=domain,
        selector=selector,
        smtp_port=int(port_text),
        mx_host=mx_host,
        relay=relay,
    )


def _parsed(
    value: str, parse: Callable[[str], T], flag: str, problems: list[tuple[str, str]]
) -> T | None:
    try:
        return parse(value)
    except ValueError as exc:
        problems.append((flag, str(exc)))
        return None


def _platform_id(
    answers: Mapping[str, str | None],
    key: str,
    pattern: re.Pattern[str],
    expected: str,
    problems: list[tuple[str, str]],
) -> str | None:
    flag = "--" + key.replace("_", "-")
    value = (answers.get(key) or "").strip()
    if key == "whatsapp_number":
        value = value.removeprefix("whatsapp:")
    if not value:
        problems.append((flag, f"required for the chosen channels: {expected}"))
        return None
    if not pattern.fullmatch(value):
        problems.append((flag, f"{value!r} is not {expected}"))
        return None
    return value


def validate(answers: Mapping[str, str | None]) -> InitOptions:
    """The project's options from the answers (keyed by flag name with ``_``), or InitError
    listing every refused answer."""
    problems: list[tuple[str, str]] = []
    tenant = (answers.get("tenant") or "").strip()
    if not _TENANT.fullmatch(tenant):
        problems.append(("--tenant", _TENANT_RULE))
    name = _text(answers.get("name") or "", "--name", problems) or tenant
    if len(name) > _MAX_NAME:
        problems.append(("--name", f"at most {_MAX_NAME} characters"))
    public_url = None
    if not answers.get("public_url"):
        problems.append(("--public-url", "required: the https:// address platforms call"))
    else:
        public_url = _parsed(answers["public_url"] or "", _public_url, "--public-url", problems)
    channels = _parsed(answers.get("channels") or "http", _channels, "--channels", problems)
    store_url = _parsed((answers.get("store") or "sqlite").strip(), _store, "--store", problems)
    chosen = channels or ()

    def platform_id(key: str, pattern: re.Pattern[str], expected: str) -> str | None:
        return _platform_id(answers, key, pattern, expected, problems)

    slack_team_id = line_bot = twilio_sid = number = None
    slack_command = (answers.get("slack_command") or DEFAULT_SLACK_COMMAND).strip()
    if "slack" in chosen:
        slack_team_id = platform_id("slack_team_id", _SLACK_TEAM, "a Slack team id (T0123ABCD)")
        if not _SLACK_COMMAND.fullmatch(slack_command):
            problems.append(("--slack-command", "a lowercase slash command such as /persona"))
    if "line" in chosen:
        line_bot = platform_id("line_bot_user_id", _LINE_BOT, "a LINE bot user id (U + 32 hex)")
    if "whatsapp" in chosen:
        twilio_sid = platform_id(
            "twilio_account_sid", _TWILIO_ACCOUNT, "a Twilio Account SID (AC + 32 hex)"
        )
        number = platform_id("whatsapp_number", _E164, "an E.164 number such as +14155238886")
    email = None
    if "email" in chosen:
        try:
            email = _email(answers, urlsplit(public_url or "").hostname or "")
        except _Refused as exc:
            problems.append((exc.flag, str(exc)))
    if problems or public_url is None or store_url is None or not channels:
        raise InitError(problems)
    return InitOptions(
        tenant=tenant,
        name=name,
        public_url=public_url,
        channels=channels,
        store_url=store_url,
        slack_team_id=slack_team_id,
        slack_command=slack_command,
        line_bot_user_id=line_bot,
        twilio_account_sid=twilio_sid,
        whatsapp_number=number,
        email=email,
    )
