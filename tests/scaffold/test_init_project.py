"""What ``flowbiz init`` writes: a project ``flowbiz check`` passes and ``flowbiz serve`` runs,
setup pages whose URLs are the gateway's own routes, and a DKIM record for the written key."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import dkim
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
    load_pem_private_key,
)

from agents.persona import load_personas
from gateway.app import create_app
from gateway.config import load_config
from tests.conftest import free_port
from tests.scaffold.conftest import ALL_CHANNELS, PUBLIC_URL, project_env, run_flowbiz

_URL = re.compile(re.escape(PUBLIC_URL) + r"[^\s`\"|)]*")


def test_the_project_has_every_file_and_no_secret(all_channels: Path) -> None:
    written = sorted(p.relative_to(all_channels).as_posix() for p in all_channels.rglob("*"))
    assert written == [
        ".env.example",
        ".gitignore",
        "SETUP.md",
        "dkim",
        "dkim/s2026._domainkey.acme.example.pem",
        "gateway.yaml",
        "personas",
        "personas/core.yaml",
        "setup",
        "setup/email-dns.zone",
        "setup/email.md",
        "setup/http.md",
        "setup/line.md",
        "setup/slack-app-manifest.json",
        "setup/slack.md",
        "setup/whatsapp.md",
    ]
    config = (all_channels / "gateway.yaml").read_text()
    referenced = set(re.findall(r"^\s*(?:[a-z_]+: |- )env:([A-Z0-9_]+)$", config, re.M))
    named = set(re.findall(r"^([A-Z0-9_]+)=", (all_channels / ".env.example").read_text(), re.M))
    assert referenced == named - {"FLOWBIZ_LOG_HASH_KEY"}
    assert "PRIVATE KEY" not in config


def test_check_passes_with_the_variables_env_example_names(all_channels: Path) -> None:
    config = str(all_channels / "gateway.yaml")
    unset = run_flowbiz("check", config)
    assert unset.returncode == 1
    assert "ACME_SLACK_BOT_TOKEN is not set" in unset.stderr

    done = run_flowbiz("check", config, env=project_env(all_channels))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 1 tenant(s), 5 channel(s), 1 persona(s): core")


def test_serve_runs_the_project(tmp_path: Path) -> None:
    project, port, ops_port = tmp_path / "bot", free_port(), free_port()
    made = run_flowbiz(
        "init", str(project), *ALL_CHANNELS, "--non-interactive",
        "--store", f"sqlite:///{tmp_path}/gateway.db", "--smtp-port", str(free_port()),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    # No platform is reachable from a test: the Slack client's auth.test at start-up goes to
    # a closed port instead of slack.com, fails at once, and is logged.
    closed = f"http://127.0.0.1:{free_port()}"
    env = {**project_env(project), "HTTPS_PROXY": closed, "HTTP_PROXY": closed}
    server = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(project / "gateway.yaml"),
         "--port", str(port), "--operations-port", str(ops_port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert _get(f"http://127.0.0.1:{port}/healthz", server) == {"status": "ok"}
        assert _get(f"http://127.0.0.1:{ops_port}/readyz", server)["status"] == "ready"
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr.decode()[-2000:]
    assert (tmp_path / "gateway.db").exists()


def _get(url: str, server: subprocess.Popen[bytes]) -> dict[str, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, server.stderr.read().decode()[-2000:]
        try:
            with opener.open(url, timeout=2) as response:
                answer: dict[str, str] = json.loads(response.read())
                return answer
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def test_every_url_on_the_setup_pages_is_a_route_of_the_gateway(
    all_channels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in project_env(all_channels).items():
        monkeypatch.setenv(name, value)
    config = load_config(all_channels / "gateway.yaml")
    app = create_app(config, role="web", personas=load_personas(config.personas_dir))
    routes = [resource.get_info() for resource in app.router.resources()]

    def served(path: str) -> bool:
        return any(
            re.fullmatch(info["pattern"], path) if "pattern" in info else info["path"] == path
            for info in routes
        )

    pages = [*sorted((all_channels / "setup").glob("*.md")), all_channels / "SETUP.md"]
    urls = {url for page in pages for url in _URL.findall(page.read_text())}
    paths = {url.removeprefix(PUBLIC_URL).replace("<conversation_id>", "c1") for url in urls}
    paths.discard("")  # the base URL itself, named on SETUP.md
    assert {
        "/healthz",
        "/slack/events",
        "/slack/commands",
        "/slack/interactivity",
        "/line/webhook/acme/line",
        "/whatsapp/webhook",
        "/whatsapp/status",
        "/v1/channels/http/acme/messages",
        "/v1/channels/http/acme/conversations/c1/replies",
    } <= paths
    assert [path for path in sorted(paths) if not served(path)] == []


def test_the_slack_manifest_names_the_gateway_urls_and_scopes(all_channels: Path) -> None:
    manifest = json.loads((all_channels / "setup/slack-app-manifest.json").read_text())
    settings = manifest["settings"]
    assert settings["event_subscriptions"]["request_url"] == f"{PUBLIC_URL}/slack/events"
    assert settings["interactivity"] == {
        "is_enabled": True,
        "request_url": f"{PUBLIC_URL}/slack/interactivity",
    }
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/persona"
    assert command["url"] == f"{PUBLIC_URL}/slack/commands"
    assert set(settings["event_subscriptions"]["bot_events"]) >= {"app_mention", "message.im"}
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert scopes >= {"chat:write", "chat:write.customize", "app_mentions:read", "im:history"}
    assert scopes >= {"commands", "users:read", "channels:history"}
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert manifest["display_information"]["name"] == "Acme Corp"


def test_the_dkim_record_publishes_the_written_key(
    all_channels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = all_channels / "dkim/s2026._domainkey.acme.example.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    private = load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048

    page = (all_channels / "setup/email.md").read_text()
    [(name, record)] = re.findall(r"\| `([^`]*_domainkey[^`]*)` \| TXT \| `([^`]*)` \|", page)
    assert name == "s2026._domainkey.acme.example"
    tags = dict(tag.strip().split("=", 1) for tag in record.split(";"))
    assert (tags["v"], tags["k"]) == ("DKIM1", "rsa")
    public = load_der_public_key(base64.b64decode(tags["p"]))
    der = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert public.public_bytes(*der) == private.public_key().public_bytes(*der)
    # The zone file holds the same value, split into strings of at most 255 characters.
    zone = (all_channels / "setup/email-dns.zone").read_text()
    line = next(x for x in zone.splitlines() if x.startswith("s2026._domainkey.acme.example."))
    strings = re.findall(r'"([^"]*)"', line)
    assert "".join(strings) == record
    assert max(len(s) for s in strings) <= 255
    assert "v=spf1 mx ~all" in page
    assert "v=DMARC1; p=none" in page

    # The channel, configured as the project says, signs mail the published record verifies.
    for env_name, value in project_env(all_channels).items():
        monkeypatch.setenv(env_name, value)
    [email] = load_config(all_channels / "gateway.yaml").channels_of_kind("email")
    signer = email[1].dkim.signer()
    message = b"From: support@acme.example\r\nTo: a@b.example\r\nSubject: hi\r\n\r\nhello\r\n"
    signed = signer.sign(message)
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record.encode())
    assert not dkim.verify(signed + b"tampered", dnsfunc=lambda name, timeout=5: record.encode())


def test_the_configuration_is_the_data_it_was_given(all_channels: Path) -> None:
    data = yaml.safe_load((all_channels / "gateway.yaml").read_text())
    [tenant] = data["tenants"]
    assert (tenant["id"], tenant["name"]) == ("acme", "Acme Corp")
    kinds = {block["kind"]: block for block in tenant["channels"]}
    assert list(kinds) == ["http", "slack", "line", "whatsapp", "email"]
    assert kinds["whatsapp"]["from_number"] == "whatsapp:+14155238886"
    assert kinds["whatsapp"]["public_base_url"] == PUBLIC_URL
    assert kinds["email"]["dkim"]["private_key"] == "env:ACME_DKIM_PRIVATE_KEY"
    assert data["http"]["public_base_url"] == PUBLIC_URL


def test_a_remote_relay_is_logged_in_to_and_allowed_by_spf(tmp_path: Path) -> None:
    project = tmp_path / "bot"
    flags = [*ALL_CHANNELS, "--smtp-relay", "smtp.provider.example", "--channels", "email"]
    done = run_flowbiz("init", str(project), *flags, "--non-interactive")
    assert done.returncode == 0, done.stderr
    [tenant] = yaml.safe_load((project / "gateway.yaml").read_text())["tenants"]
    [email] = tenant["channels"]
    assert email["outbound"] == {
        "host": "smtp.provider.example",
        "port": 587,
        "security": "starttls",
        "username": "support@acme.example",
        "password": "env:ACME_SMTP_PASSWORD",
    }
    assert "ACME_SMTP_PASSWORD=" in (project / ".env.example").read_text()
    assert "`v=spf1 mx a:smtp.provider.example ~all`" in (project / "setup/email.md").read_text()
    checked = run_flowbiz("check", str(project / "gateway.yaml"), env=project_env(project))
    assert checked.returncode == 0, checked.stderr


def test_an_http_only_project_needs_no_platform_answers(tmp_path: Path) -> None:
    project = tmp_path / "bot"
    flags = ["--tenant", "shop-1", "--public-url", "https://api.shop.example:8443/gw/"]
    done = run_flowbiz("init", str(project), *flags, "--non-interactive")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (project / "setup").iterdir()) == ["http.md"]
    assert not (project / "dkim").exists()
    data = yaml.safe_load((project / "gateway.yaml").read_text())
    assert data["http"]["public_base_url"] == "https://api.shop.example:8443/gw"
    assert (
        "https://api.shop.example:8443/gw/v1/channels/http/shop-1/messages"
        in (project / "setup/http.md").read_text()
    )
    env = project_env(project)
    assert set(env) == {"SHOP_1_HTTP_API_KEY", "SHOP_1_HTTP_SIGNING_SECRET", "FLOWBIZ_LOG_HASH_KEY"}
    checked = run_flowbiz("check", str(project / "gateway.yaml"), env=env)
    assert checked.returncode == 0, checked.stderr
