"""Each platform's setup page, with the exact values to paste, and the Slack app manifest.

Guarantees: every URL on these pages is the project's public URL followed by a path the
gateway serves for that platform (``tests/scaffold`` holds them to the routes of the app
built from the generated configuration); the Slack manifest asks for exactly the bot scopes
and events the Slack connector uses (docs/connectors/slack.md, "What to set up"); the
environment variable names are the ones ``gateway.yaml`` reads.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.scaffold.mail_dns import DnsRecord, dkim_key_path
from gateway.scaffold.options import InitOptions
from gateway.scaffold.project import LINE_CHANNEL_ID, EnvVar, secrets

__all__ = [
    "HTTP_MESSAGES_PATH",
    "LINE_WEBHOOK_PATH",
    "SLACK_BOT_EVENTS",
    "SLACK_BOT_SCOPES",
    "SLACK_COMMANDS_PATH",
    "SLACK_EVENTS_PATH",
    "SLACK_INTERACTIVITY_PATH",
    "WHATSAPP_STATUS_PATH",
    "WHATSAPP_WEBHOOK_PATH",
    "setup_pages",
    "slack_manifest",
]

SLACK_EVENTS_PATH = "/slack/events"
SLACK_COMMANDS_PATH = "/slack/commands"
SLACK_INTERACTIVITY_PATH = "/slack/interactivity"
LINE_WEBHOOK_PATH = "/line/webhook/{tenant}/{channel}"  # only this channel's secret is tried
WHATSAPP_WEBHOOK_PATH = "/whatsapp/webhook"
WHATSAPP_STATUS_PATH = "/whatsapp/status"
HTTP_MESSAGES_PATH = "/v1/channels/http/{tenant}/messages"

SLACK_BOT_SCOPES = (
    "app_mentions:read",  # app_mention
    "channels:history",  # message.channels: thread follow-ups without a mention
    "chat:write",  # chat.postMessage, chat.postEphemeral
    "chat:write.customize",  # the persona's name and icon on each post
    "commands",  # the slash command
    "groups:history",  # message.groups
    "im:history",  # message.im: direct messages
    "mpim:history",  # message.mpim
    "users:read",  # users.info: each writer's name (agents, desk signatures)
    "users:read.email",  # users.info's profile email: contacts linked on a verified address
)
SLACK_BOT_EVENTS = (
    "app_mention",
    "message.channels",
    "message.groups",
    "message.im",
    "message.mpim",
)
_SLACK_APP_NAME_MAX = 35  # Slack's limit on an app's name
_SLACK_BOT_NAME_MAX = 80


def _line_webhook(options: InitOptions) -> str:
    return options.url(LINE_WEBHOOK_PATH.format(tenant=options.tenant, channel=LINE_CHANNEL_ID))


def slack_manifest(options: InitOptions) -> dict[str, Any]:
    """The Slack app manifest (JSON form) for the project's public URL."""
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": options.name[:_SLACK_APP_NAME_MAX].strip(),
            "description": f"{options.name} assistant, served by FlowBiz Gateway"[:140],
        },
        "features": {
            "app_home": {
                "home_tab_enabled": False,
                "messages_tab_enabled": True,  # people write to the bot directly
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": options.name[:_SLACK_BOT_NAME_MAX], "always_online": True},
            "slash_commands": [
                {
                    "command": options.slack_command,
                    "url": options.url(SLACK_COMMANDS_PATH),
                    "description": "Talk to the assistant, or switch persona",
                    "usage_hint": "[persona name]",
                    "should_escape": False,
                }
            ],
        },
        "oauth_config": {"scopes": {"bot": list(SLACK_BOT_SCOPES)}},
        "settings": {
            "event_subscriptions": {
                "request_url": options.url(SLACK_EVENTS_PATH),
                "bot_events": list(SLACK_BOT_EVENTS),
            },
            "interactivity": {
                "is_enabled": True,
                "request_url": options.url(SLACK_INTERACTIVITY_PATH),
            },
            "org_deploy_enabled": False,
            "socket_mode_enabled": False,
            "token_rotation_enabled": False,
        },
    }


def slack_manifest_json(options: InitOptions) -> str:
    return json.dumps(slack_manifest(options), indent=2, ensure_ascii=False) + "\n"


def _env_lines(group: list[EnvVar]) -> str:
    return "\n".join(f"- `{var.name}`: {var.what}" for var in group)


def _overview(options: InitOptions, env: dict[str, list[EnvVar]]) -> str:
    pages = "\n".join(f"- [{channel}](setup/{channel}.md)" for channel in options.channels)
    return f"""# Setting up {options.name}

This folder was made by `flowbiz init` for tenant `{options.tenant}`, reachable at
`{options.public_url}`.

| file | what it is |
|---|---|
| `gateway.yaml` | the configuration (`flowbiz check` reads it; secrets only as `env:NAME`) |
| `.env.example` | every secret the configuration reads, and where each value comes from |
| `personas/` | the personas that answer (one YAML file each; see the gateway's docs/agents.md) |
| `setup/` | one page per platform with the values to paste, and the Slack app manifest |
{"| `dkim/` | the DKIM private key (mode 0600; never commit it) |" if options.email else ""}

## 1. Secrets

```sh
cp .env.example .env      # fill in every value; .gitignore keeps .env out of git
set -a; . ./.env; set +a
```

## 2. Check and run

```sh
flowbiz check gateway.yaml
flowbiz serve --config gateway.yaml
```

The gateway listens on `127.0.0.1:8080`. Put your TLS proxy in front of it so that
`{options.public_url}` reaches that port (platforms only call `https://` URLs), and check it
with `curl {options.public_url}/healthz` → `{{"status": "ok"}}`. `/readyz`, `/metrics` and
the operators' console stay on the operations listener, `127.0.0.1:9090`.

## 3. Each platform

{pages}

Environment variables, {sum(len(g) for g in env.values())} in all, are listed in `.env.example`.
"""


def _http_page(options: InitOptions, env: list[EnvVar]) -> str:
    url = options.url(HTTP_MESSAGES_PATH.format(tenant=options.tenant))
    return f"""# HTTP API channel

Your website or app posts each customer message to

```
POST {url}
Authorization: Bearer $API_KEY
Content-Type: application/json

{{"conversation_id": "web-alice", "user": {{"id": "alice"}}, "text": "hello"}}
```

and reads the replies from
`GET {options.public_url}/v1/channels/http/{options.tenant}/conversations/<conversation_id>/replies`
(long-poll with `wait=`), or signs requests instead of sending the key
(`X-FlowBiz-Signature`, see the gateway's docs/connectors/http.md).

Secrets:

{_env_lines(env)}
"""


def _slack_page(options: InitOptions, env: list[EnvVar]) -> str:
    scopes = ", ".join(f"`{s}`" for s in SLACK_BOT_SCOPES)
    events = ", ".join(f"`{e}`" for e in SLACK_BOT_EVENTS)
    return f"""# Slack

1. <https://api.slack.com/apps> → **Create New App** → **From an app manifest** → pick the
   workspace `{options.slack_team_id}` → paste `setup/slack-app-manifest.json` (JSON tab).
2. **Install to Workspace**, then copy the secrets below into `.env`.
3. When the gateway runs, open **Event Subscriptions** and let Slack verify the request URL.

What the manifest sets, should you enter it by hand:

| setting | value |
|---|---|
| Event Subscriptions → Request URL | `{options.url(SLACK_EVENTS_PATH)}` |
| Subscribe to bot events | {events} |
| Interactivity & Shortcuts → Request URL | `{options.url(SLACK_INTERACTIVITY_PATH)}` |
| Slash Commands → `{options.slack_command}` → Request URL | `{options.url(SLACK_COMMANDS_PATH)}` |
| OAuth & Permissions → Bot Token Scopes | {scopes} |
| App Home → Messages Tab | on, people may send messages |

Secrets:

{_env_lines(env)}
"""


def _line_page(options: InitOptions, env: list[EnvVar]) -> str:
    return f"""# LINE

In the LINE Developers console, open the Messaging API channel of the bot
`{options.line_bot_user_id}` (Basic settings → Your user ID):

| setting | value |
|---|---|
| Messaging API → Webhook URL | `{_line_webhook(options)}` |
| Messaging API → Use webhook | on |
| Messaging API → Webhook redelivery | on (redeliveries are deduplicated) |
| LINE Official Account Manager → Auto-reply messages | off (the gateway answers) |
| LINE Official Account Manager → Greeting message | as you like |

Press **Verify** once the gateway runs: it answers LINE's empty test request with 200.

Secrets:

{_env_lines(env)}
"""


def _whatsapp_page(options: InitOptions, env: list[EnvVar]) -> str:
    incoming = f"`{options.url(WHATSAPP_WEBHOOK_PATH)}`, HTTP POST"
    status = f"`{options.url(WHATSAPP_STATUS_PATH)}`, HTTP POST"
    return f"""# WhatsApp through Twilio

Twilio console → Messaging → Senders → WhatsApp senders → `whatsapp:{options.whatsapp_number}`
(account `{options.twilio_account_sid}`):

| setting | value |
|---|---|
| Webhook URL for incoming messages ("When a message comes in") | {incoming} |
| Status callback URL | {status} |

The gateway also asks for status callbacks on every message it sends, so the second setting
is optional. Twilio signs each request over the exact URL it calls: a proxy in front of the
gateway must not change the scheme, host or path of `{options.public_url}`.

Secrets:

{_env_lines(env)}
"""


def _email_page(options: InitOptions, env: list[EnvVar], records: list[DnsRecord]) -> str:
    email = options.email
    assert email is not None
    rows = "\n".join(f"| `{r.name}` | {r.type} | `{r.value}` | {r.why} |" for r in records)
    relay = email.relay
    return f"""# Email

The gateway answers mail to `{email.address}`. It receives on its SMTP listener (port
{email.smtp_port} on every interface) and sends replies through `{relay.host}:{relay.port}`,
DKIM-signed with `{dkim_key_path(email).as_posix()}` (selector `{email.selector}`).

Mail for the domain arrives on port 25 of `{email.mx_host}`: forward that port to
{email.smtp_port}, or run the listener on 25 (edit `listener.port`).

## DNS records for `{email.domain}`

| name | type | value | why |
|---|---|---|---|
{rows}

A domain has one SPF record and one DMARC record: if it already has them, add the mechanism
to the SPF record you have rather than adding a second one. DMARC starts at `p=none`
(reports only); move it to `p=quarantine` once the reports show the mail passing.

The same records in zone-file form are in `setup/email-dns.zone`; DNS forms that take the
value whole split the long DKIM key themselves.

Secrets:

{_env_lines(env)}
"""


def setup_pages(options: InitOptions, records: list[DnsRecord]) -> dict[str, str]:
    """Relative path → text of every setup file."""
    env = secrets(options)
    pages = {"SETUP.md": _overview(options, env)}
    if "http" in options.channels:
        pages["setup/http.md"] = _http_page(options, env["http"])
    if "slack" in options.channels:
        pages["setup/slack.md"] = _slack_page(options, env["slack"])
        pages["setup/slack-app-manifest.json"] = slack_manifest_json(options)
    if "line" in options.channels:
        pages["setup/line.md"] = _line_page(options, env["line"])
    if "whatsapp" in options.channels:
        pages["setup/whatsapp.md"] = _whatsapp_page(options, env["whatsapp"])
    if options.email is not None:
        pages["setup/email.md"] = _email_page(options, env["email"], records)
        zone = [f"; DNS records for {options.email.domain}, made by flowbiz init"]
        zone += [record.zone_line() for record in records]
        pages["setup/email-dns.zone"] = "\n".join(zone) + "\n"
    return pages
