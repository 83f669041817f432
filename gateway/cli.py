"""``flowbiz``: check a configuration, print its schema, serve, run the demo, simulate
platform traffic, print the OpenAPI document or the API reference page rendered from it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from agents.persona import PersonaRegistry
from gateway.config import GatewayConfig
from gateway.config_check import check_file
from gateway.errors import ConfigError
from gateway.observability import configure_logging
from gateway.reach_report import ReachReport

__all__ = ["check_config", "main"]


def check_config(path: str | Path) -> tuple[GatewayConfig, PersonaRegistry]:
    """Load the file, its personas and their cross-references; ConfigError lists all faults
    (including channels where no default persona may answer, see gateway/reach_report.py)."""
    config, personas, _ = _checked(path)
    return config, personas


def _checked(path: str | Path) -> tuple[GatewayConfig, PersonaRegistry, ReachReport]:
    checked = check_file(path)
    return checked.config, checked.personas, checked.report


def _print_problems(error: ConfigError) -> None:
    print(f"configuration has {len(error.problems)} problem(s):", file=sys.stderr)
    for path, message in error.problems:
        print(f"  {path}: {message}", file=sys.stderr)


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        config, personas, report = _checked(args.config)
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    channels = sum(len(t.channels) for t in config.tenants)
    print(
        f"ok: {len(config.tenants)} tenant(s), {channels} channel(s), "
        f"{len(personas)} persona(s): {', '.join(sorted(personas))}"
    )
    if report.rows:
        print("\nwho may reach which persona:")
        for line in report.table():
            print(f"  {line}")
    if report.warnings:
        print(f"\n{len(report.warnings)} warning(s):")
        for where, message in report.warnings:
            print(f"  {where}: {message}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.app import RUNTIME, create_app
    from gateway.server import ConnectionGuard, serve

    try:
        config, personas = check_config(args.config)
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    operations = config.http.operations.model_copy(
        update={
            name: value
            for name, value in (("host", args.operations_host), ("port", args.operations_port))
            if value is not None
        }
    )
    config = config.model_copy(
        update={"http": config.http.model_copy(update={"operations": operations})}
    )
    configure_logging(config.log_level)
    app = create_app(config, role=args.role, personas=personas)
    guard = ConnectionGuard(listener="public", limits=config.http, metrics=app[RUNTIME].metrics)
    asyncio.run(
        serve(
            app,
            host=args.host or config.http.host,
            port=args.port if args.port is not None else config.http.port,
            guard=guard,
            shutdown_timeout=config.pipeline.shutdown_grace_seconds,
        )
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return asyncio.run(
        run_demo(store_url=args.store, verbose=args.verbose, keep_running=args.keep_running)
    )


def _cmd_openapi(args: argparse.Namespace) -> int:
    from gateway.admin.openapi import build_openapi
    from gateway.admin.reference import render_reference

    document = build_openapi()
    text = render_reference(document) if args.markdown else json.dumps(document, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowbiz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate a configuration file and its personas")
    check.add_argument("config")
    check.set_defaults(func=_cmd_check)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", "-c", required=True)
    serve.add_argument("--role", choices=["all", "web", "worker"], default="all")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--operations-host", help="host of the operations listener")
    serve.add_argument("--operations-port", type=int, help="port of the operations listener")
    serve.set_defaults(func=_cmd_serve)

    demo = sub.add_parser("demo", help="run the gateway with the example config and emulators")
    demo.add_argument("--store", help="store URL (default: sqlite file under ./var)")
    demo.add_argument("--verbose", action="store_true", help="show the gateway's JSON logs")
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the gateway up after the scenes, to explore the operators' console",
    )
    demo.set_defaults(func=_cmd_demo)

    openapi = sub.add_parser(
        "openapi", help="print the OpenAPI document (as /v1/openapi.json, without examples)"
    )
    openapi.add_argument(
        "--markdown", action="store_true", help="the API reference page (docs/api-reference.md)"
    )
    openapi.add_argument("--output", "-o", help="write to this file instead of stdout")
    openapi.set_defaults(func=_cmd_openapi)

    from gateway.config_reference import add_schema_command

    add_schema_command(sub)

    from gateway.admin.cli import add_admin_commands
    from gateway.scaffold.command import add_init_command

    add_admin_commands(sub)
    add_init_command(sub)

    simulate = sub.add_parser("simulate", help="send platform-style traffic to a gateway")
    channels = simulate.add_subparsers(dest="channel", required=True)
    from gateway.simulate import add_simulators

    add_simulators(channels)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
