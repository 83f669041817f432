"""What ``flowbiz init`` refuses: hostile or malformed answers (exit 2, every problem named by
its flag, nothing written), a folder that is not empty (unless ``--force``), and what a
terminal user is asked again."""

from __future__ import annotations

import argparse
import os
import pty
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.cli import build_parser, main
from gateway.scaffold.command import run_init
from gateway.scaffold.options import validate
from gateway.scaffold.platforms import slack_manifest
from tests.scaffold.conftest import ALL_CHANNELS, run_flowbiz


def _with(flag: str, value: str) -> list[str]:
    """The all-channel flags with one answer replaced."""
    args = list(ALL_CHANNELS)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--tenant", "../../etc"),
        ("--tenant", "acme\nstore: {url: redis://evil}"),
        ("--tenant", "Acme"),
        ("--name", "Acme\nplan: enterprise"),
        ("--public-url", "http://bot.acme.example"),
        ("--public-url", "https://bot.acme.example/?next=evil"),
        ("--public-url", "https://bot.acme.example/#x"),
        ("--public-url", "https://bot.acme.example/\nx: y"),
        ("--public-url", "https://user:pw@bot.acme.example"),
        ("--public-url", "https://bot.acme.example/../admin"),
        ("--public-url", "https://bot acme.example"),
        ("--public-url", "https://localhost"),
        ("--email-address", "support@acme example"),
        ("--email-address", "support@../../etc"),
        ("--email-domain", "acme.example\nevil"),
        ("--dkim-selector", "../../x"),
        ("--dkim-selector", "a.b"),
        ("--smtp-relay", "smtp.acme.example:99999"),
        ("--mx-host", "mx acme"),
        ("--slack-team-id", "T12\n3"),
        ("--slack-command", "/Persona"),
        ("--line-bot-user-id", "U123"),
        ("--twilio-account-sid", "AC123"),
        ("--whatsapp-number", "14155238886"),
        ("--channels", "http,telegram"),
        ("--store", "redis://:hunter2@redis.acme.example:6379/0"),
        ("--store", "mysql://db"),
        ("--store", "sqlite:///tmp/x.db\nhttp: {}"),
    ],
)
def test_a_hostile_or_malformed_answer_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    # In-process through the command's own entry point (the subprocess case is below).
    project = tmp_path / "bot"
    assert main(["init", str(project), *_with(flag, value), "--non-interactive"]) == 2
    out, err = capsys.readouterr()
    assert f"  {flag}: " in err
    assert out == ""
    assert list(tmp_path.iterdir()) == []


def test_the_command_exits_2_on_a_refused_answer(tmp_path: Path) -> None:
    project = tmp_path / "bot"
    done = run_flowbiz("init", str(project), *_with("--tenant", "../x"), "--non-interactive")
    assert done.returncode == 2
    assert "  --tenant: 1-63 lowercase letters" in done.stderr
    assert not project.exists()


def test_missing_answers_are_all_named_without_prompting(tmp_path: Path) -> None:
    project = tmp_path / "bot"
    # stdin is not a terminal here: no prompt, even without --non-interactive.
    done = run_flowbiz("init", str(project), "--channels", "slack,line,whatsapp,email")
    assert done.returncode == 2
    for flag in ("--tenant", "--public-url", "--slack-team-id", "--line-bot-user-id"):
        assert f"  {flag}: " in done.stderr
    for flag in ("--twilio-account-sid", "--whatsapp-number", "--email-address"):
        assert f"  {flag}: " in done.stderr
    assert not project.exists()


def test_a_non_empty_folder_is_refused_without_force(tmp_path: Path) -> None:
    project = tmp_path / "bot"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    done = run_flowbiz("init", str(project), *ALL_CHANNELS, "--non-interactive")
    assert done.returncode == 2
    assert "not empty; use --force" in done.stderr
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt"]

    forced = run_flowbiz("init", str(project), *ALL_CHANNELS, "--non-interactive", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (project / "notes.txt").read_text() == "mine"
    assert (project / "gateway.yaml").is_file()


def test_an_empty_folder_is_filled(tmp_path: Path) -> None:
    done = run_flowbiz("init", str(tmp_path), *ALL_CHANNELS, "--non-interactive")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "gateway.yaml").is_file()


def test_force_keeps_the_published_dkim_key_and_replaces_links(tmp_path: Path) -> None:
    project = tmp_path / "bot"
    assert run_flowbiz("init", str(project), *ALL_CHANNELS, "--non-interactive").returncode == 0
    key = project / "dkim/s2026._domainkey.acme.example.pem"
    before, record = key.read_bytes(), (project / "setup/email-dns.zone").read_text()
    outside = tmp_path / "outside.yaml"
    outside.write_text("untouched")
    (project / "gateway.yaml").unlink()
    (project / "gateway.yaml").symlink_to(outside)

    again = run_flowbiz("init", str(project), *ALL_CHANNELS, "--non-interactive", "--force")
    assert again.returncode == 0, again.stderr
    assert key.read_bytes() == before
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (project / "setup/email-dns.zone").read_text() == record
    assert outside.read_text() == "untouched"
    assert not (project / "gateway.yaml").is_symlink()


def test_a_linked_folder_in_the_way_is_refused(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "bot", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "personas").symlink_to(elsewhere)
    done = run_flowbiz("init", str(project), *ALL_CHANNELS, "--non-interactive", "--force")
    assert done.returncode == 2
    assert "personas is in the way" in done.stderr
    assert list(elsewhere.iterdir()) == []
    assert [p.name for p in project.iterdir()] == ["personas"]  # nothing written beside it


def test_text_answers_stay_text_in_the_configuration(tmp_path: Path) -> None:
    name = "Acme: {plan: enterprise} # 'quoted' \"double\" & *anchor"
    done = run_flowbiz("init", str(tmp_path / "bot"), *_with("--name", name), "--non-interactive")
    assert done.returncode == 0, done.stderr
    data = yaml.safe_load((tmp_path / "bot/gateway.yaml").read_text())
    assert data["tenants"][0]["name"] == name
    assert data["tenants"][0]["plan"] == "free"


def _args(tmp_path: Path, *flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["init", str(tmp_path / "bot"), *flags])


def test_a_terminal_user_is_asked_for_what_is_missing_and_again_when_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    replies = iter(["../acme", "", "http://bot.acme.example", "acme", "https://bot.acme.example/"])
    asked: list[str] = []

    def read(prompt: str) -> str:
        asked.append(prompt)
        return next(replies)

    args = _args(tmp_path, "--channels", "http")
    assert run_init(args, interactive=True, read=read) == 0
    # Round one: tenant (refused), name, URL (refused); round two: only the refused ones.
    assert [p.split(" ")[0] for p in asked] == ["Tenant", "Display", "Public", "Tenant", "Public"]
    assert "  --tenant: " in capsys.readouterr().err
    data = yaml.safe_load((tmp_path / "bot/gateway.yaml").read_text())
    assert (data["tenants"][0]["id"], data["tenants"][0]["name"]) == ("acme", "acme")
    assert data["http"]["public_base_url"] == "https://bot.acme.example"


def test_a_terminal_user_gives_up_after_three_rounds(tmp_path: Path) -> None:
    args = _args(tmp_path, "--channels", "http", "--public-url", "https://bot.acme.example")
    assert run_init(args, interactive=True, read=lambda prompt: "../x") == 2
    assert not (tmp_path / "bot").exists()


def test_a_long_name_fits_the_slack_manifest_limits() -> None:
    answers = {
        "tenant": "acme",
        "name": "Acme Corporation International Customer Service and Support Desk (EU)",
        "public_url": "https://bot.acme.example",
        "channels": "slack",
        "slack_team_id": "T0123ABCD",
    }
    manifest = slack_manifest(validate(answers))
    assert 1 <= len(manifest["display_information"]["name"]) <= 35  # Slack's schema limits
    assert 1 <= len(manifest["display_information"]["description"]) <= 140
    assert 1 <= len(manifest["features"]["bot_user"]["display_name"]) <= 80
    assert validate({**answers, "name": "   "}).name == "acme"


def test_on_a_terminal_the_command_asks(tmp_path: Path) -> None:
    """A real pseudo-terminal on the command's standard input: it prompts, and writes."""
    controller, terminal = pty.openpty()
    project = tmp_path / "bot"
    process = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "gateway.cli", "init", str(project), "--channels", "http"],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    try:
        os.write(controller, b"acme\nAcme Corp\nhttps://bot.acme.example\n")
        out, err = process.communicate(timeout=30)
    finally:
        os.close(controller)
    assert process.returncode == 0, err.decode()
    assert b"Tenant id" in out
    assert b"Public https:// URL" in out
    data = yaml.safe_load((project / "gateway.yaml").read_text())
    assert (data["tenants"][0]["id"], data["tenants"][0]["name"]) == ("acme", "Acme Corp")
