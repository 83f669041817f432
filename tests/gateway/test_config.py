"""Configuration: the example validates, and every problem is reported with its path."""

import copy
import subprocess
import sys
import textwrap

import pytest

from gateway.cli import check_config, main
from gateway.config import parse_config
from gateway.demo import DEMO_SECRETS, EXAMPLE_CONFIG
from gateway.errors import ConfigError
from tests.harness import PERSONAS_DIR


@pytest.fixture
def demo_env(monkeypatch):
    for name, value in DEMO_SECRETS.items():
        monkeypatch.setenv(name, value)


def test_example_config_is_valid(demo_env):
    """The config the demo uses passes the same check `serve` runs."""
    config, personas = check_config(EXAMPLE_CONFIG)
    assert {"core", "docs", "infra"} <= set(personas)
    http = config.tenants[0].channel("http")
    assert http is not None
    assert http.api_keys[0].get_secret_value() == "demo-api-key"


def test_check_command_prints_every_problem_with_its_path(tmp_path, capsys, monkeypatch):
    """`flowbiz check` lists all faults (core and channel blocks) and exits non-zero."""
    monkeypatch.delenv("MISSING_SECRET", raising=False)
    config = tmp_path / "bad.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            personas_dir: {PERSONAS_DIR}
            store: {{partitions: 0}}
            routing:
              rules:
                - persona: nobody
                  regex: "(unclosed"
            tenants:
              - id: Bad Tenant
                channels:
                  - kind: carrier-pigeon
                  - kind: http
                    api_keys: [env:MISSING_SECRET]
                    signing_secrets: [plain-text-secret]
            """
        )
    )
    assert main(["check", str(config)]) == 1
    err = capsys.readouterr().err
    for expected in (
        "store.partitions",
        "routing.rules.0.regex",
        "tenants.0.id",
        "tenants.0.channels.0.kind: unknown channel kind 'carrier-pigeon'",
        "tenants.0.channels.1.api_keys.0: Value error, environment variable MISSING_SECRET",
        "tenants.0.channels.1.signing_secrets.0",
    ):
        assert expected in err, expected
    assert "plain-text-secret" not in err


def test_unknown_persona_references_are_problems(tmp_path, demo_env):
    """Routing to a persona that does not exist is caught before serving."""
    config = tmp_path / "c.yaml"
    config.write_text(
        f"personas_dir: {PERSONAS_DIR}\nrouting: {{default_persona: ghost}}\n"
        "tenants: [{id: acme, default_persona: phantom}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        check_config(config)
    paths = [p for p, _ in caught.value.problems]
    assert paths == ["routing.default_persona", "tenants.0.default_persona"]


def test_sqlite_path_is_relative_to_the_config_file(tmp_path):
    """A relative SQLite URL lands next to the config file, not in the working directory."""
    config = parse_config(
        {"personas_dir": str(PERSONAS_DIR), "store": {"url": "sqlite://state/gw.db"}},
        source=tmp_path / "gateway.yaml",
    )
    assert config.store.url == f"sqlite:///{tmp_path}/state/gw.db"


def test_duplicate_tenants_are_refused():
    """Two tenants with one id would make routing ambiguous."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"personas_dir": str(PERSONAS_DIR), "tenants": [{"id": "a"}, {"id": "a"}]})
    assert caught.value.problems == [("tenants.1.id", "duplicate tenant id 'a'")]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///tmp/gw.db", "cluster: true needs a redis:// or rediss:// url"),
        ("memory://", "cluster: true needs a redis:// or rediss:// url"),
        ("redis://127.0.0.1:7000/2", "a Redis Cluster has only database 0"),
    ],
)
def test_cluster_store_needs_a_redis_url_on_database_zero(url, message):
    """``store.cluster`` with another store, or a database a cluster does not have, is a
    config problem at its path, not a failure at the first command."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"personas_dir": str(PERSONAS_DIR), "store": {"url": url, "cluster": True}})
    [(path, problem)] = caught.value.problems
    assert path == "store"
    assert message in problem


def test_cluster_store_accepts_a_redis_node_url():
    for url in ("redis://10.0.0.5:7000", "rediss://redis.internal:6380/0"):
        config = parse_config(
            {"personas_dir": str(PERSONAS_DIR), "store": {"url": url, "cluster": True}}
        )
        assert config.store.cluster


def test_check_reports_schema_plan_and_persona_problems_in_one_run(tmp_path):
    """One `flowbiz check` run (a real process) reports a schema error, an unknown plan and
    an unknown persona together, though the schema error leaves the file invalid."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            personas_dir: {PERSONAS_DIR}
            store: {{partitions: 0}}
            routing:
              rules:
                - {{persona: nobody, keywords: [x]}}
            tenants:
              - id: acme
                plan: platinum
            """
        )
    )
    done = subprocess.run(  # noqa: S603 — our own argv, no shell
        [sys.executable, "-m", "gateway.cli", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "configuration has 3 problem(s):" in done.stderr, done.stderr
    for expected in (
        "store.partitions: Input should be greater than or equal to 1",
        "tenants.0.plan: unknown plan 'platinum'",
        "routing.rules.0.persona: no persona named 'nobody'",
    ):
        assert expected in done.stderr, done.stderr


def test_problems_after_a_removed_tenant_name_their_place_in_the_file(tmp_path):
    """A tenant that cannot validate at all is left out of the later checks, and those
    checks still name the other tenants at their own index in the file; a key refused by
    the schema is not reported again through the default that stands in for it."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            personas_dir: {PERSONAS_DIR}
            plans: {{pro: {{}}}}
            tenants:
              - {{name: no id}}
              - {{id: acme, plan: gold, default_persona: ghost}}
              - {{id: acme, plan: [pro]}}
            """
        )
    )
    with pytest.raises(ConfigError) as caught:
        check_config(config)
    # Not reported: tenants.2.plan as "unknown plan 'free'", the default standing in for
    # the refused list (`plans:` replaces the built-in plans, free among them).
    assert caught.value.problems == [
        ("tenants.0.id", "Field required"),
        ("tenants.2.plan", "Input should be a valid string"),
        ("tenants.1.plan", "unknown plan 'gold'"),
        ("tenants.2.id", "duplicate tenant id 'acme'"),
        ("tenants.1.default_persona", "no persona named 'ghost'"),
    ]


def test_connector_checks_run_beside_schema_errors_at_the_blocks_place(monkeypatch):
    """A channel block that fails its model does not stop the connector's check of the
    others, and that check names the block where it is in the file, past a tenant and a
    block that were left out."""
    monkeypatch.setenv("WA_TOKEN", "t")
    whatsapp = {
        "kind": "whatsapp",
        "account_sid": "AC" + "0" * 32,
        "auth_token": "env:WA_TOKEN",
        "from_number": "whatsapp:+14155238886",
    }
    data = {
        "personas_dir": str(PERSONAS_DIR),
        "tenants": [
            {"id": "Not An Id"},
            {"id": "acme", "channels": [{**whatsapp, "from_number": "555"}, whatsapp]},
        ],
    }
    as_given = copy.deepcopy(data)
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert data == as_given  # what was left out was left out of a copy
    paths = [path for path, _ in caught.value.problems]
    assert paths == [
        "tenants.0.id",
        "tenants.1.channels.0.from_number",
        "tenants.1.channels.1.status_callback",
    ]


def test_an_unset_secret_does_not_hide_the_rest_of_its_block(monkeypatch):
    """Checking a file where its secrets are not set (a laptop, CI) still judges everything
    else: the block's own checks and its connector's run as if the variable were set."""
    for name in ("UNSET_SLACK_TOKEN", "UNSET_TWILIO_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "personas_dir": str(PERSONAS_DIR),
                "tenants": [
                    {
                        "id": "acme",
                        "channels": [
                            {"kind": "slack", "bot_token": "env:UNSET_SLACK_TOKEN"},
                            {
                                "kind": "whatsapp",
                                "account_sid": "AC" + "0" * 32,
                                "auth_token": "env:UNSET_TWILIO_TOKEN",
                                "from_number": "whatsapp:+14155238886",
                                "window_hours": -1,
                            },
                        ],
                    }
                ],
            }
        )
    assert [
        (path, message.removeprefix("Value error, ")) for path, message in caught.value.problems
    ] == [
        ("tenants.0.channels.0.bot_token", "environment variable UNSET_SLACK_TOKEN is not set"),
        ("tenants.0.channels.0", "give team_id (or enterprise_id for an org-wide install)"),
        ("tenants.0.channels.1.auth_token", "environment variable UNSET_TWILIO_TOKEN is not set"),
        ("tenants.0.channels.1.window_hours", "Input should be greater than 0"),
        (
            "tenants.0.channels.1.status_callback",
            "status callbacks need public_base_url (the URL Twilio calls back)",
        ),
    ]


def test_a_default_standing_in_for_a_refused_key_is_not_judged():
    """A section's own check that would only fail on the default put in place of a refused
    key (here a cluster on the default SQLite url) is not a problem of the file."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"personas_dir": str(PERSONAS_DIR), "store": {"url": 5, "cluster": True}})
    assert caught.value.problems == [("store.url", "Input should be a valid string")]
