"""``flowbiz init DIR``: the command line, and prompts for what the flags left out.

Guarantees: with ``--non-interactive``, or when standard input is not a terminal, nothing is
asked: a missing or refused answer ends the command with exit status 2, every problem named
by its flag on standard error, and nothing written. On a terminal, each missing answer is
asked for, and a refused one asked again (three rounds at most). Exit status 0 means every
file of the project was written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.scaffold.options import (
    CHANNELS,
    DEFAULT_DKIM_SELECTOR,
    DEFAULT_SLACK_COMMAND,
    DEFAULT_SMTP_PORT,
    InitError,
    InitOptions,
    validate,
)
from gateway.scaffold.writer import TargetError, check_target, project_files, write_project

__all__ = ["EXIT_REFUSED", "add_init_command", "run_init"]

EXIT_REFUSED = 2  # as argparse's own usage errors
_ROUNDS = 3

# (answer, question, default, needed for which channels: None = always)
_QUESTIONS: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("tenant", "Tenant id (lowercase, e.g. acme)", None, None),
    ("name", "Display name", None, None),
    ("public_url", "Public https:// URL of the gateway", None, None),
    ("channels", f"Channels ({','.join(CHANNELS)})", "http", None),
    ("slack_team_id", "Slack team id (T…)", None, "slack"),
    ("line_bot_user_id", "LINE bot user id (U + 32 hex)", None, "line"),
    ("twilio_account_sid", "Twilio Account SID (AC…)", None, "whatsapp"),
    ("whatsapp_number", "WhatsApp sender number (+E.164)", None, "whatsapp"),
    ("email_address", "Email address the gateway answers", None, "email"),
    ("smtp_relay", "Outgoing mail server host[:port]", "localhost", "email"),
)

_ASKED = frozenset(question[0] for question in _QUESTIONS)


def add_init_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``init`` on the ``flowbiz`` parser."""
    init = sub.add_parser(
        "init",
        help="create a project folder: gateway.yaml, personas, secrets list, platform setup",
        description=(
            "Create a project folder that `flowbiz check` passes and `flowbiz serve` runs: "
            "gateway.yaml, personas/, .env.example and a setup page per platform with the "
            "values to paste. On a terminal, missing answers are asked for."
        ),
    )
    init.add_argument("directory", type=Path, help="the project folder to create")
    init.add_argument("--tenant", help="the tenant id, e.g. acme")
    init.add_argument("--name", help="the tenant's display name (default: the id)")
    init.add_argument("--public-url", help="the https:// URL platforms reach the gateway at")
    init.add_argument("--channels", help=f"comma-separated, any of {','.join(CHANNELS)}")
    init.add_argument("--store", help="sqlite (default), sqlite:///path or redis://host:port/db")
    slack = init.add_argument_group("slack")
    slack.add_argument("--slack-team-id", help="the workspace id, T…")
    slack.add_argument("--slack-command", help=f"slash command (default {DEFAULT_SLACK_COMMAND})")
    line = init.add_argument_group("line")
    line.add_argument("--line-bot-user-id", help="the bot's user id, U + 32 hex digits")
    whatsapp = init.add_argument_group("whatsapp")
    whatsapp.add_argument("--twilio-account-sid", help="AC + 32 hex digits")
    whatsapp.add_argument("--whatsapp-number", help="the WhatsApp sender, +E.164")
    email = init.add_argument_group("email")
    email.add_argument("--email-address", help="the address answered, e.g. support@acme.example")
    email.add_argument("--email-domain", help="its domain (default: the address's)")
    email.add_argument("--dkim-selector", help=f"default {DEFAULT_DKIM_SELECTOR}")
    email.add_argument("--mx-host", help="the host mail is delivered to (default: public URL's)")
    email.add_argument(
        "--smtp-port", help=f"the SMTP listener's port (default {DEFAULT_SMTP_PORT})"
    )
    email.add_argument("--smtp-relay", help="outgoing mail server host[:port] (default localhost)")
    init.add_argument("--non-interactive", action="store_true", help="never prompt")
    init.add_argument("--force", action="store_true", help="write into a non-empty folder")
    init.set_defaults(func=_cmd_init)


def _answers(args: argparse.Namespace) -> dict[str, str | None]:
    keys = [question[0] for question in _QUESTIONS]
    keys += ["store", "slack_command", "email_domain", "dkim_selector", "mx_host", "smtp_port"]
    return {key: getattr(args, key) for key in keys}


def _ask(answers: dict[str, str | None], read: Callable[[str], str], only: set[str] | None) -> None:
    """Ask for each missing answer the chosen channels need (or, again, each in ``only``)."""
    for key, question, default, channel in _QUESTIONS:
        chosen = {c.strip().lower() for c in (answers.get("channels") or "http").split(",")}
        if channel is not None and channel not in chosen:
            continue
        if answers.get(key) if only is None else key not in only:
            continue
        # The name's default is the tenant id, which validate() fills in (once it is valid).
        shown = answers.get("tenant") if key == "name" else default
        reply = read(f"{question}{f' [{shown}]' if shown else ''}: ").strip()
        answers[key] = reply or default


def _flag_key(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def run_init(
    args: argparse.Namespace, *, interactive: bool, read: Callable[[str], str] = input
) -> int:
    directory: Path = args.directory
    try:
        check_target(directory, force=args.force)  # before any question is asked
    except TargetError as exc:
        print(f"flowbiz init: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    answers = _answers(args)
    options: InitOptions | None = None
    refused: set[str] | None = None
    for round_ in range(_ROUNDS):
        try:
            if interactive:
                _ask(answers, read, refused)
        except (EOFError, KeyboardInterrupt):
            print("\nflowbiz init: stopped; nothing written", file=sys.stderr)
            return EXIT_REFUSED
        try:
            options = validate(answers)
            break
        except InitError as exc:
            _report(exc.problems)
            refused = {_flag_key(flag) for flag, _ in exc.problems}
            if not interactive or round_ == _ROUNDS - 1 or not refused & _ASKED:
                return EXIT_REFUSED  # asking again what is not asked would change nothing
    assert options is not None
    try:
        check_target(directory, force=args.force)
        write_project(directory, project_files(options, directory))
    except (TargetError, OSError) as exc:
        print(f"flowbiz init: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"created {directory} for tenant {options.tenant!r}: {', '.join(options.channels)}")
    print(f"next: read {directory / 'SETUP.md'}, fill in .env from .env.example, then")
    print(f"  flowbiz check {directory / 'gateway.yaml'}")
    print(f"  flowbiz serve --config {directory / 'gateway.yaml'}")
    return 0


def _report(problems: list[tuple[str, str]]) -> None:
    print(f"flowbiz init: {len(problems)} answer(s) refused:", file=sys.stderr)
    for flag, message in problems:
        print(f"  {flag}: {message}", file=sys.stderr)


def _cmd_init(args: argparse.Namespace) -> int:
    interactive = not args.non_interactive and sys.stdin.isatty()
    return run_init(args, interactive=interactive)
