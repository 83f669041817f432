"""``gateway.yaml``, ``.env.example`` and the personas of a new project.

Guarantees: the configuration is built as data and written by ``yaml.safe_dump``, so no
answer becomes YAML structure; it uses the keys of each connector's own configuration model
and holds every credential as ``env:NAME`` only. :func:`secrets` lists every such name, and
``.env.example`` names each of them with where its value comes from. The personas are the
package's own ``core`` persona file, copied byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import yaml

from gateway.scaffold.mail_dns import dkim_key_path
from gateway.scaffold.options import EmailOptions, InitOptions, env_prefix

__all__ = [
    "DEFAULT_PERSONA",
    "LINE_CHANNEL_ID",
    "EnvVar",
    "config_data",
    "env_example",
    "gateway_yaml",
    "persona_files",
    "secrets",
]

DEFAULT_PERSONA = "core"
LINE_CHANNEL_ID = "line"  # the block's name, part of its own webhook path
HTTP_PORT = 8080

_YAML_HEADER = """\
# FlowBiz Gateway configuration, made by `flowbiz init`.
# Secrets are never written here: `env:NAME` reads them from the environment
# (.env.example names every one). SETUP.md says what to paste where on each platform.
#   flowbiz check gateway.yaml
#   flowbiz serve --config gateway.yaml
"""


@dataclass(frozen=True, slots=True)
class EnvVar:
    name: str
    what: str  # where the value comes from
    value: str = ""  # an example value; shell syntax, as `. ./.env` reads it


def secrets(options: InitOptions) -> dict[str, list[EnvVar]]:
    """The environment variables gateway.yaml reads, by channel."""
    p = env_prefix(options.tenant)
    found: dict[str, list[EnvVar]] = {}
    if "http" in options.channels:
        found["http"] = [
            EnvVar(
                f"{p}_HTTP_API_KEY",
                "the key HTTP clients send (Authorization: Bearer …); "
                "make one with: openssl rand -hex 32",
            ),
            EnvVar(
                f"{p}_HTTP_SIGNING_SECRET",
                "the secret clients sign requests with "
                "(X-FlowBiz-Signature); make one with: openssl rand -hex 32",
            ),
        ]
    if "slack" in options.channels:
        found["slack"] = [
            EnvVar(f"{p}_SLACK_SIGNING_SECRET", "Slack app → Basic Information → Signing Secret"),
            EnvVar(
                f"{p}_SLACK_BOT_TOKEN",
                "Slack app → OAuth & Permissions → Bot User OAuth Token (xoxb-…)",
            ),
        ]
    if "line" in options.channels:
        found["line"] = [
            EnvVar(
                f"{p}_LINE_CHANNEL_SECRET",
                "LINE Developers console → the channel → Basic settings → Channel secret",
            ),
            EnvVar(
                f"{p}_LINE_ACCESS_TOKEN",
                "LINE Developers console → the channel → Messaging "
                "API → Channel access token (long-lived)",
            ),
        ]
    if "whatsapp" in options.channels:
        found["whatsapp"] = [
            EnvVar(f"{p}_TWILIO_AUTH_TOKEN", "Twilio console → Account Info → Auth Token"),
        ]
    if options.email is not None:
        key_file = dkim_key_path(options.email).as_posix()
        found["email"] = [
            EnvVar(
                f"{p}_DKIM_PRIVATE_KEY",
                f"the PEM text of {key_file} (made by flowbiz init)",
                f'"$(cat {key_file})"',
            ),
        ]
        if not options.email.relay.loopback:
            found["email"].append(
                EnvVar(
                    f"{p}_SMTP_PASSWORD",
                    f"the password of {options.email.address} on {options.email.relay.host}",
                )
            )
    return found


def _env(name: str) -> str:
    return f"env:{name}"


def _channel_blocks(options: InitOptions) -> list[dict[str, Any]]:
    env = {
        var.name.removeprefix(env_prefix(options.tenant) + "_"): _env(var.name)
        for group in secrets(options).values()
        for var in group
    }
    blocks: list[dict[str, Any]] = []
    if "http" in options.channels:
        blocks.append(
            {
                "kind": "http",
                "api_keys": [env["HTTP_API_KEY"]],
                "signing_secrets": [env["HTTP_SIGNING_SECRET"]],
            }
        )
    if "slack" in options.channels:
        blocks.append(
            {
                "kind": "slack",
                "team_id": options.slack_team_id,
                "signing_secret": env["SLACK_SIGNING_SECRET"],
                "bot_token": env["SLACK_BOT_TOKEN"],
            }
        )
    if "line" in options.channels:
        blocks.append(
            {
                "kind": "line",
                "id": LINE_CHANNEL_ID,
                "destination": options.line_bot_user_id,
                "channel_secret": env["LINE_CHANNEL_SECRET"],
                "channel_access_token": env["LINE_ACCESS_TOKEN"],
            }
        )
    if "whatsapp" in options.channels:
        blocks.append(
            {
                "kind": "whatsapp",
                "account_sid": options.twilio_account_sid,
                "auth_token": env["TWILIO_AUTH_TOKEN"],
                "from_number": f"whatsapp:{options.whatsapp_number}",
                "public_base_url": options.public_url,  # exactly what Twilio signs
                "status_callback": True,
            }
        )
    if options.email is not None:
        blocks.append(_email_block(options.email, env))
    return blocks


def _email_block(email: EmailOptions, env: dict[str, str]) -> dict[str, Any]:
    relay = email.relay
    outbound: dict[str, Any] = {"host": relay.host, "port": relay.port}
    if relay.loopback:
        outbound["security"] = "none"  # a local MTA on this machine relays onwards
    else:
        outbound["security"] = "tls" if relay.port == 465 else "starttls"
        outbound["username"] = email.address
        outbound["password"] = env["SMTP_PASSWORD"]
    return {
        "kind": "email",
        "addresses": [{"address": email.address}],
        "listener": {"host": "0.0.0.0", "port": email.smtp_port, "hostname": email.mx_host},  # noqa: S104 - the MX must reach it
        "outbound": outbound,
        "dkim": {
            "selector": email.selector,
            "domain": email.domain,
            "private_key": env["DKIM_PRIVATE_KEY"],
        },
    }


def config_data(options: InitOptions) -> dict[str, Any]:
    """The configuration, as the data ``gateway.yaml`` holds."""
    return {
        "store": {"url": options.store_url, "partitions": 8},
        "http": {
            "host": "127.0.0.1",  # behind the TLS proxy that answers on the public URL
            "port": HTTP_PORT,
            "public_base_url": options.public_url,
        },
        "personas_dir": "personas",
        "routing": {"default_persona": DEFAULT_PERSONA},
        "tenants": [
            {
                "id": options.tenant,
                "name": options.name,
                "plan": "free",
                "default_persona": DEFAULT_PERSONA,
                "channels": _channel_blocks(options),
            }
        ],
    }


def gateway_yaml(options: InitOptions) -> str:
    body = yaml.safe_dump(
        config_data(options), sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    return _YAML_HEADER + "\n" + body


def env_example(options: InitOptions) -> str:
    lines = [
        "# The secrets gateway.yaml reads (env:NAME). Copy to .env, fill in, never commit .env.",
        "# Load it, from this folder, into the shell that runs the gateway:",
        "#   set -a; . ./.env; set +a",
        "# (shell syntax: the DKIM key is read from its file by $(cat …), which a container",
        "# runtime's env-file does not run; give such a runtime the file's text instead)",
        "",
    ]
    for channel, group in secrets(options).items():
        lines.append(f"# -- {channel}")
        for var in group:
            lines.append(f"# {var.what}")
            lines.append(f"{var.name}={var.value}")
        lines.append("")
    lines += [
        "# -- logs: the key conversation references in the logs are hashed with (any random",
        "# string, the same for every process); make one with: openssl rand -hex 32",
        "FLOWBIZ_LOG_HASH_KEY=",
        "",
    ]
    return "\n".join(lines)


def persona_files() -> dict[str, bytes]:
    """The personas folder: file name → content."""
    source = files("agents").joinpath("personas", f"{DEFAULT_PERSONA}.yaml")
    return {f"{DEFAULT_PERSONA}.yaml": source.read_bytes()}
