"""Every connector package exports one typed ``SPEC``, and each spec's check turns what would
make two channel blocks ambiguous into a configuration problem: `flowbiz check` names both
blocks and exits 1, and `flowbiz serve` refuses the file the same way, never with a
traceback from a connector's constructor."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.base import ConnectorContext
from connectors.email.emulator import generate_tls_certificate
from connectors.registry import connector_spec, installed_specs
from gateway.channel_config import CONNECTOR_PACKAGES
from gateway.cli import main
from gateway.config import GatewayConfig, channel_kind
from gateway.metrics import Metrics
from gateway.store import Keyspace
from tests.harness import PERSONAS_DIR

SECRET = "env:SPEC_TEST_SECRET"
DEST = "U" + "0f" * 16
SENDER = "whatsapp:+14155238886"
SERVICE = "MG" + "b2" * 16

SLACK = {"kind": "slack", "team_id": "T0001", "bot_token": SECRET, "signing_secret": SECRET}
SLACK_ORG = {
    "kind": "slack",
    "enterprise_id": "E0001",
    "bot_token": SECRET,
    "signing_secret": SECRET,
}
LINE = {
    "kind": "line",
    "destination": DEST,
    "channel_secret": SECRET,
    "channel_access_token": SECRET,
}
WHATSAPP = {
    "kind": "whatsapp",
    "account_sid": "AC" + "a1" * 16,
    "auth_token": SECRET,
    "from_number": SENDER,
    "public_base_url": "https://gateway.example.com",
}
EMAIL = {"kind": "email", "addresses": [{"address": "help@example.com"}], "listener": {"port": 0}}
IMAP = {"host": "imap.example.com", "username": "help", "password": SECRET}
HTTP = {"kind": "http", "api_keys": [SECRET]}

# (tenant acme's blocks, tenant globex's blocks, the second claim's path, the first block)
DUPLICATES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], str, str]] = {
    "slack team": ([SLACK], [SLACK], "tenants.1.channels.0.team_id", "tenants.0.channels.0"),
    "slack org-wide install": (
        [SLACK_ORG],
        [{**SLACK_ORG, "id": "org"}],
        "tenants.1.channels.0.enterprise_id",
        "tenants.0.channels.0",
    ),
    "line destination": (
        [HTTP, LINE],
        [LINE],
        "tenants.1.channels.0.destination",
        "tenants.0.channels.1",
    ),
    "whatsapp number": (
        [WHATSAPP],
        [WHATSAPP],
        "tenants.1.channels.0.from_number",
        "tenants.0.channels.0",
    ),
    "whatsapp messaging service": (
        [{**WHATSAPP, "from_number": None, "messaging_service_sid": SERVICE}],
        [{**WHATSAPP, "messaging_service_sid": SERVICE}],
        "tenants.1.channels.0.messaging_service_sid",
        "tenants.0.channels.0",
    ),
    "email address, any case": (
        [EMAIL],
        [
            {
                **EMAIL,
                "addresses": [{"address": "Other@example.com"}, {"address": "HELP@example.COM"}],
            }
        ],
        "tenants.1.channels.0.addresses.1.address",
        "tenants.0.channels.0",
    ),
    "email address in two blocks of one tenant": (
        [EMAIL, {**EMAIL, "id": "support"}],
        [],
        "tenants.0.channels.1.addresses.0.address",
        "tenants.0.channels.0",
    ),
    "imap mailbox": (
        [{**EMAIL, "listener": None, "imap": IMAP}],
        [
            {
                **EMAIL,
                "addresses": [{"address": "other@example.com"}],
                "listener": None,
                "imap": {**IMAP, "port": 993},
            }
        ],
        "tenants.1.channels.0.imap",
        "tenants.0.channels.0",
    ),
    "http route of one tenant": (
        [HTTP, {**HTTP, "id": "api2"}],
        [],
        "tenants.0.channels.1",
        "tenants.0.channels.0",
    ),
}


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEC_TEST_SECRET", "spec-test-secret")


def _write(tmp_path: Path, acme: list[dict[str, Any]], globex: list[dict[str, Any]]) -> Path:
    def blocks(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in item.items() if v is not None} for item in items]

    data = {
        "personas_dir": str(PERSONAS_DIR),
        "tenants": [
            {"id": "acme", "channels": blocks(acme)},
            {"id": "globex", "channels": blocks(globex)},
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", list(DUPLICATES))
def test_check_names_both_blocks_of_a_duplicate(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    acme, globex, second, first = DUPLICATES[case]
    assert main(["check", str(_write(tmp_path, acme, globex))]) == 1
    err = capsys.readouterr().err
    assert "configuration has 1 problem(s)" in err, err
    line = next(row for row in err.splitlines() if row.strip().startswith(f"{second}:"))
    assert f"already configured at {first} " in line, line


@pytest.mark.parametrize("case", list(DUPLICATES))
def test_serve_refuses_a_duplicate_as_a_configuration_problem(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1 with the problem listed, before anything is built or bound."""
    acme, globex, second, first = DUPLICATES[case]
    path = _write(tmp_path, acme, globex)
    # Free ports, so that a regression serves somewhere harmless instead of refusing.
    assert main(["serve", "--config", str(path), "--port", "0", "--operations-port", "0"]) == 1
    err = capsys.readouterr().err
    assert f"  {second}: " in err, err
    assert first in err
    assert "Traceback" not in err


def test_every_problem_of_a_file_comes_out_of_one_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Core problems, a block that does not validate and the connectors' checks together."""
    path = _write(
        tmp_path,
        [SLACK, LINE, {**WHATSAPP, "public_base_url": None}],
        [SLACK, {**LINE, "channel_secret": "not-an-env-reference"}, LINE | {"id": "second"}],
    )
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["tenants"][1]["plan"] = "platinum"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["check", str(path)]) == 1
    paths = [row.strip().split(": ")[0] for row in capsys.readouterr().err.splitlines()[1:]]
    assert sorted(paths) == sorted(
        [
            "tenants.1.plan",
            "tenants.1.channels.1.channel_secret",
            "tenants.0.channels.2.status_callback",
            "tenants.1.channels.0.team_id",
            "tenants.1.channels.2.destination",
        ]
    )


def test_one_tenant_may_repeat_an_address_within_one_block(tmp_path: Path) -> None:
    """A block listing its own address twice routes both the same way: not a conflict."""
    twice = {**EMAIL, "addresses": [{"address": "help@example.com"}] * 2}
    assert main(["check", str(_write(tmp_path, [twice], [WHATSAPP]))]) == 0


def test_every_package_exports_the_spec_of_its_kind() -> None:
    """The table's kind, the spec, the config model and the built connector agree."""
    specs = installed_specs()
    assert [spec.kind for spec in specs] == list(CONNECTOR_PACKAGES)
    context = ConnectorContext(config=GatewayConfig(), keyspace=Keyspace(), metrics=Metrics())
    commands = argparse.ArgumentParser().add_subparsers()
    for spec in specs:
        assert channel_kind(spec.kind) is spec
        assert spec.config_model.model_fields["kind"].default == spec.kind
        assert spec.factory(context=context, channels=[]).channel is spec.channel
        assert spec.simulator is not None
        assert spec.demo_scene is not None
        spec.simulator(commands)
        assert spec.kind in commands.choices
        assert spec.demo_scene().title


def test_a_package_exporting_another_kinds_spec_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(CONNECTOR_PACKAGES, "sms", "connectors.slack")
    with pytest.raises(TypeError, match="not the ConnectorSpec of 'sms'"):
        channel_kind("sms")
    with pytest.raises(TypeError, match="not the ConnectorSpec of 'sms'"):
        connector_spec("sms")


def test_an_unknown_or_uninstalled_kind_has_no_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(CONNECTOR_PACKAGES, "fax", "connectors.fax")
    assert channel_kind("carrier-pigeon") is None
    assert channel_kind("fax") is None
    assert connector_spec("fax") is None


def test_smtp_listener_tls_that_could_not_serve_is_a_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """STARTTLS required without a certificate (today: silently not required), a certificate
    that does not load (today: a traceback when the listener starts), and one listening
    address asked to serve two different certificates (today: the first one wins)."""
    cert, key = generate_tls_certificate(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n", encoding="utf-8")
    tls = {"port": 2525, "tls_cert_file": str(cert), "tls_key_file": str(key)}
    path = _write(
        tmp_path,
        [
            {**EMAIL, "listener": {"port": 2526, "require_starttls": True}},
            {**EMAIL, "id": "b", "addresses": [{"address": "b@example.com"}], "listener": tls},
        ],
        [
            {**EMAIL, "addresses": [{"address": "c@example.com"}], "listener": {"port": 2525}},
            {
                **EMAIL,
                "id": "d",
                "addresses": [{"address": "d@example.com"}],
                "listener": {"port": 2527, "tls_cert_file": str(garbage)},
            },
            {
                **EMAIL,
                "id": "e",
                "addresses": [{"address": "e@example.com"}],
                "listener": {"port": 2528, "tls_cert_file": str(tmp_path / "missing.pem")},
            },
        ],
    )
    assert main(["check", str(path)]) == 1
    problems = dict(row.strip().split(": ", 1) for row in capsys.readouterr().err.splitlines()[1:])
    assert problems.keys() == {
        "tenants.0.channels.0.listener.require_starttls",
        "tenants.1.channels.0.listener.tls_cert_file",
        "tenants.1.channels.1.listener.tls_cert_file",
        "tenants.1.channels.2.listener.tls_cert_file",
    }
    assert "tenants.0.channels.1 " in problems["tenants.1.channels.0.listener.tls_cert_file"]
    assert "STARTTLS can use" in problems["tenants.1.channels.1.listener.tls_cert_file"]
    assert "not base64" not in problems["tenants.1.channels.1.listener.tls_cert_file"]
    assert "cannot read" in problems["tenants.1.channels.2.listener.tls_cert_file"]
    # The same listener, asked for the same STARTTLS everywhere, is fine.
    same = _write(
        tmp_path,
        [{**EMAIL, "listener": tls}],
        [{**EMAIL, "addresses": [{"address": "c@example.com"}], "listener": tls}],
    )
    assert main(["check", str(same)]) == 0
