"""The JSON Schema of gateway.yaml: published as the command prints it, and accepting what
the loader accepts — the shipped configs, the configurations shown in the docs — while
refusing what the loader refuses."""

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from gateway.config import GatewayConfig, parse_config
from gateway.config_schema import SCHEMA_ID, config_schema
from gateway.errors import ConfigError
from tests.harness import PERSONAS_DIR

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "docs" / "gateway.schema.json"
_YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _flowbiz(*args: str) -> str:
    done = subprocess.run(  # noqa: S603 — our own argv, no shell
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_published_schema_is_what_the_command_prints():
    """docs/gateway.schema.json cannot drift from the models: regenerate it with
    `flowbiz schema > docs/gateway.schema.json`."""
    printed = _flowbiz("schema")
    assert json.loads(printed)["$id"] == SCHEMA_ID
    assert PUBLISHED.read_text(encoding="utf-8") == printed, "regenerate docs/gateway.schema.json"


def test_published_reference_is_what_the_command_prints():
    """docs/configuration.md cannot drift from the models: regenerate it with
    `flowbiz schema --markdown > docs/configuration.md`."""
    printed = _flowbiz("schema", "--markdown")
    reference = ROOT / "docs" / "configuration.md"
    assert reference.read_text(encoding="utf-8") == printed, "regenerate docs/configuration.md"


def test_reference_states_what_was_only_in_code():
    """Facts users could only learn from the code are on the reference page, each taken from
    the models' descriptions or the generating module."""
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for fact in (
        '`echo` repeats the message after `prefix` (default `"You said: "`)',
        "| `team_id` | string matching `^[A-Z0-9]+$` or null | `null` | The workspace",
        "Required, unless enterprise_id",
        "| `status_callback` | boolean | `true` |",
        "`flowbiz check` refuses the block without one",
        "| `max_replies` | integer (≥ 1) | `5` |",
        "| `per_seconds` | number (> 0) | `3600` |",
        "Written, they replace the built-in `free`, `pro` and `enterprise`",
        "`--host` and `--port` override `http.host` and `http.port`",
        "| `log_level` |",
        "## `pipeline`",
        "| `lease_seconds` |",
        '"event": "dispatch.delivered"',
    ):
        assert fact in page, fact
    # Every key of every section has a meaning: no row ends with an empty description.
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert rows
    assert [row for row in rows if row.endswith("|  |")] == []


def _shipped_configs() -> list[tuple[str, dict]]:
    configs = [
        ("gateway/examples/gateway.yaml", ROOT / "gateway" / "examples" / "gateway.yaml"),
        ("deploy/gateway.compose.yaml", ROOT / "deploy" / "gateway.compose.yaml"),
    ]
    found = [(name, yaml.safe_load(path.read_text())) for name, path in configs]
    configmap = yaml.safe_load((ROOT / "deploy" / "k8s" / "configmap.yaml").read_text())
    found.append(("deploy/k8s/configmap.yaml", yaml.safe_load(configmap["data"]["gateway.yaml"])))
    return found


def _documented_configs() -> list[tuple[str, dict]]:
    """Every YAML block in the docs that is (a part of) a gateway.yaml: a mapping whose keys
    are all top-level keys of the file. Blocks that elide with ``...`` are fragments."""
    keys = set(GatewayConfig.model_fields) - {"source"}
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for n, block in enumerate(_YAML_BLOCK.findall(page.read_text(encoding="utf-8"))):
            if "..." in block:
                continue
            data = yaml.safe_load(block)
            if isinstance(data, dict) and data and set(data) <= keys:
                found.append((f"{page.relative_to(ROOT)} block {n}", data))
    return found


SHIPPED = _shipped_configs()
DOCUMENTED = _documented_configs()


def test_the_docs_show_configurations_of_every_channel_kind():
    """The documented configurations cover every kind, so the next test sees each model."""
    kinds = {
        channel["kind"]
        for _, data in DOCUMENTED
        for tenant in data.get("tenants", [])
        for channel in tenant.get("channels", [])
    }
    assert kinds == {"http", "slack", "line", "whatsapp", "email"}


@pytest.mark.parametrize(("where", "data"), SHIPPED + DOCUMENTED, ids=lambda v: str(v)[:60])
def test_shipped_and_documented_configs_validate_against_the_schema(where, data):
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft202012Validator(config_schema()).iter_errors(data)
    ]
    assert errors == [], where


# Each case: a configuration and whether it is valid. The schema and the loader must agree.
_HTTP = {"kind": "http", "api_keys": ["env:SCHEMA_TEST_KEY"]}


_SLACK = {
    "kind": "slack",
    "api_keys": None,
    "team_id": "T1",
    "signing_secret": "env:SCHEMA_TEST_KEY",
    "bot_token": "env:SCHEMA_TEST_KEY",
}
_SOCKET = {"socket_mode": True, "app_token": "env:SCHEMA_TEST_KEY"}
_WHATSAPP = {
    "kind": "whatsapp",
    "api_keys": None,
    "account_sid": "AC" + "0" * 32,
    "auth_token": "env:SCHEMA_TEST_KEY",
    "from_number": "whatsapp:+14155238886",
    "status_callback": False,
}
_SERVICE = {"messaging_service_sid": "MG" + "0" * 32}
_EMAIL = {
    "kind": "email",
    "api_keys": None,
    "addresses": [{"address": "help@acme.example"}],
    "listener": {"port": 0},
}
_IMAP = {"imap": {"host": "imap.acme.example", "username": "u", "password": "env:SCHEMA_TEST_KEY"}}


def _one_block(**fields):
    """One tenant with one block: the HTTP one, or another kind (a None removes a key)."""
    block = {key: value for key, value in {**_HTTP, **fields}.items() if value is not None}
    return {"tenants": [{"id": "a", "channels": [block]}]}


CASES = [
    ("an env reference", _one_block(), True),
    ("a plain-text secret", _one_block(api_keys=["k"]), False),
    ("an unknown key", {"tenants": [{"id": "a", "colour": "red"}]}, False),
    ("a block without kind", {"tenants": [{"id": "a", "channels": [{"api_keys": []}]}]}, False),
    ("an unknown kind", {"tenants": [{"id": "a", "channels": [{"kind": "fax"}]}]}, False),
    ("a key of another kind", _one_block(team_id="T1"), False),
    ("a tenant id with spaces", {"tenants": [{"id": "Bad Tenant"}]}, False),
    ("the loader's own key", {"source": "/etc/gateway.yaml"}, False),
    ("a bounded number out of range", {"store": {"partitions": 0}}, False),
    ("an http block without auth", _one_block(api_keys=[]), False),
    ("slack without a workspace", _one_block(**{**_SLACK, "team_id": None}), False),
    ("slack on an org", _one_block(**{**_SLACK, "team_id": None, "enterprise_id": "E1"}), True),
    ("slack over HTTP unsigned", _one_block(**{**_SLACK, "signing_secret": None}), False),
    ("slack over Socket Mode", _one_block(**{**_SLACK, "signing_secret": None, **_SOCKET}), True),
    ("whatsapp without a sender", _one_block(**{**_WHATSAPP, "from_number": None}), False),
    ("whatsapp from a service", _one_block(**{**_WHATSAPP, **_SERVICE}), True),
    ("email that takes no mail in", _one_block(**{**_EMAIL, "listener": None}), False),
    ("email from a mailbox", _one_block(**{**_EMAIL, "listener": None, **_IMAP}), True),
    ("a log level", {"log_level": "debug"}, True),
    ("an unknown log level", {"log_level": "verbose"}, False),
    ("the plans replaced", {"plans": {"gold": {"monthly_outbound_messages": 100}}}, True),
]


@pytest.mark.parametrize(("case", "data", "valid"), CASES, ids=[c[0] for c in CASES])
def test_the_schema_and_the_loader_agree(case, data, valid, monkeypatch):
    monkeypatch.setenv("SCHEMA_TEST_KEY", "k")
    schema_ok = jsonschema.Draft202012Validator(config_schema()).is_valid(data)
    try:
        parse_config({**data, "personas_dir": str(PERSONAS_DIR)})
        loader_ok = True
    except ConfigError:
        loader_ok = False
    assert (schema_ok, loader_ok) == (valid, valid), case
