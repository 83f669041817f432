"""``flowbiz keys|usage|dlq``: operator commands against the server's own store.

They read the same configuration file as ``flowbiz serve`` and open its store directly,
so they work whether the gateway is running or not, and on every process's data when the
store is Redis. Mutating commands are written to the audit log as ``cli:<user>``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import date

from gateway.admin import keys as apikeys
from gateway.audit import AuditEvent, AuditLog
from gateway.config import GatewayConfig, load_config
from gateway.deadletters import list_dead_letters, replay
from gateway.errors import ConfigError
from gateway.store import Keyspace, ReplicaAcks, Store, open_store
from gateway.usage import METRICS, read_usage

__all__ = ["add_admin_commands"]

Action = Callable[[GatewayConfig, Store, Keyspace, argparse.Namespace], Awaitable[int]]


def _run(action: Action) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"configuration has {len(exc.problems)} problem(s):", file=sys.stderr)
            for path, message in exc.problems:
                print(f"  {path}: {message}", file=sys.stderr)
            return 1

        async def main() -> int:
            settings = config.store
            acks = ReplicaAcks(
                settings.replica_acks, settings.replica_ack_timeout_ms, settings.replica_ack_aof
            )
            store = await open_store(settings.url, cluster=settings.cluster, replica_acks=acks)
            keyspace = Keyspace(prefix=config.store.prefix, partitions=config.store.partitions)
            try:
                return await action(config, store, keyspace, args)
            finally:
                await store.aclose()

        return asyncio.run(main())

    return command


async def _audit(store: Store, keyspace: Keyspace, action: str, **detail: str) -> None:
    await AuditLog(store, keyspace).write(
        AuditEvent(
            actor=f"cli:{getpass.getuser()}",
            action=action,
            tenant=detail.pop("tenant", None) or None,
            remote=f"cli@{socket.gethostname()}",
            target=detail,
        )
    )


# -- keys ------------------------------------------------------------------------------------------
async def _keys_create(
    config: GatewayConfig, store: Store, keyspace: Keyspace, args: argparse.Namespace
) -> int:
    if args.tenant is not None and config.tenant(args.tenant) is None:
        print(f"no tenant {args.tenant!r} in the configuration", file=sys.stderr)
        return 1
    record, token = await apikeys.create_key(
        store,
        keyspace,
        name=args.name,
        role=apikeys.Role(args.role),
        tenant=args.tenant,
        created_by=f"cli:{getpass.getuser()}",
    )
    await _audit(store, keyspace, "createKey", key=record.id, tenant=args.tenant or "")
    print(f"created key {record.id} ({record.role.value}, {record.tenant or 'all tenants'})")
    print("token (shown only now; store it safely):", file=sys.stderr)
    print(token)
    return 0


async def _keys_list(
    config: GatewayConfig, store: Store, keyspace: Keyspace, args: argparse.Namespace
) -> int:
    found = await apikeys.list_keys(store, keyspace, tenant=args.tenant)
    print(f"{'ID':<17} {'ROLE':<9} {'TENANT':<16} {'STATE':<8} {'CREATED':<20} NAME")
    for key in found:
        state = "active" if key.active else "revoked"
        created = key.created_at.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{key.id:<17} {key.role.value:<9} {key.tenant or '*':<16} {state:<8} "
            f"{created:<20} {key.name}"
        )
    return 0


async def _keys_revoke(
    config: GatewayConfig, store: Store, keyspace: Keyspace, args: argparse.Namespace
) -> int:
    key = await apikeys.revoke_key(store, keyspace, args.key_id)
    if key is None:
        print(f"no key {args.key_id!r}", file=sys.stderr)
        return 1
    await _audit(store, keyspace, "revokeKey", key_id=key.id, tenant=key.tenant or "")
    print(f"revoked key {key.id}")
    return 0


# -- usage -----------------------------------------------------------------------------------------
async def _usage(
    config: GatewayConfig, store: Store, keyspace: Keyspace, args: argparse.Namespace
) -> int:
    tenants = [args.tenant] if args.tenant else [t.id for t in config.tenants]
    rows = []
    for tenant in tenants:
        rows += await read_usage(store, keyspace, tenant=tenant, since=args.since, until=args.until)
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return 0
    header = ["tenant", "day", "channel", "persona", *METRICS]
    print("\t".join(header))
    for row in rows:
        data = row.model_dump(mode="json")
        print("\t".join(str(data[h]) for h in header))
    return 0


# -- dead letters ----------------------------------------------------------------------------------
async def _dlq_list(
    config: GatewayConfig, store: Store, keyspace: Keyspace, args: argparse.Namespace
) -> int:
    found = await list_dead_letters(store, keyspace, tenant=args.tenant, limit=args.limit)
    if args.json:
        print(
            json.dumps(
                [{"handle": h, "letter": letter.model_dump(mode="json")} for h, letter in found],
                indent=2,
            )
        )
        return 0
    print(f"{'HANDLE':<24} {'AT':<20} {'KIND':<9} {'TENANT':<12} {'CHANNEL':<9} REASON")
    for handle, letter in found:
        at = letter.at.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{handle:<24} {at:<20} {letter.kind:<9} {letter.tenant or '-':<12} "
            f"{letter.channel or '-':<9} {letter.reason}"
        )
    return 0


async def _dlq_replay(
    config: GatewayConfig, store: Store, keyspace: Keyspace, args: argparse.Namespace
) -> int:
    code = 0
    for handle in args.handles:
        partition = handle.split(":", 1)[0]
        if not partition.isdigit() or int(partition) >= keyspace.partitions:
            print(f"{handle}: not a dead-letter handle", file=sys.stderr)
            code = 1
            continue
        if await replay(store, keyspace, handle):
            await _audit(store, keyspace, "replayDeadLetter", handle=handle)
            print(f"{handle}: replayed")
        else:
            print(f"{handle}: not found or not replayable", file=sys.stderr)
            code = 1
    return code


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def add_admin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``keys``, ``usage`` and ``dlq`` on the ``flowbiz`` parser."""

    def with_config(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--config", "-c", required=True, help="the gateway's config file")
        return parser

    keys = sub.add_parser("keys", help="manage admin API keys")
    key_cmds = keys.add_subparsers(dest="keys_command", required=True)
    create = with_config(key_cmds.add_parser("create", help="create a key; prints the token"))
    create.add_argument("--name", required=True)
    create.add_argument("--role", choices=[r.value for r in apikeys.Role], required=True)
    create.add_argument("--tenant", help="scope the key to one tenant (default: global)")
    create.set_defaults(func=_run(_keys_create))
    listing = with_config(key_cmds.add_parser("list", help="list keys (never their tokens)"))
    listing.add_argument("--tenant")
    listing.set_defaults(func=_run(_keys_list))
    revoke = with_config(key_cmds.add_parser("revoke", help="revoke a key"))
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_run(_keys_revoke))

    usage = with_config(sub.add_parser("usage", help="usage per tenant, day, channel, persona"))
    usage.add_argument("--tenant")
    usage.add_argument("--since", type=_day, help="first day, YYYY-MM-DD")
    usage.add_argument("--until", type=_day, help="last day, YYYY-MM-DD")
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(func=_run(_usage))

    dlq = sub.add_parser("dlq", help="inspect and replay dead letters")
    dlq_cmds = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = with_config(dlq_cmds.add_parser("list", help="list dead letters"))
    dlq_list.add_argument("--tenant")
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_list.add_argument("--json", action="store_true")
    dlq_list.set_defaults(func=_run(_dlq_list))
    dlq_replay = with_config(dlq_cmds.add_parser("replay", help="replay dead letters by handle"))
    dlq_replay.add_argument("handles", nargs="+", metavar="HANDLE")
    dlq_replay.set_defaults(func=_run(_dlq_replay))
