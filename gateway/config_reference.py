"""``flowbiz schema``: the JSON Schema of ``gateway.yaml``, or (``--markdown``) its reference.

Both come from the configuration's models (:mod:`gateway.config_schema`): the reference
walks the same schema, one table per section, with every key's type, default and meaning
(its ``Field`` description). docs/gateway.schema.json and docs/configuration.md are this
command's output, and tests/gateway/test_config_schema.py fails when either is stale.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from gateway.config_schema import config_schema

if TYPE_CHECKING:
    from connectors.spec import Subcommands

__all__ = ["add_schema_command", "schema_json"]


def schema_json() -> str:
    """The schema as published: two-space indents, a final newline."""
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"


def _cmd_schema(args: argparse.Namespace) -> int:
    print(schema_json(), end="")
    return 0


def add_schema_command(subcommands: Subcommands) -> None:
    """Register ``flowbiz schema`` with ``flowbiz``'s other commands."""
    schema = subcommands.add_parser(
        "schema", help="print the JSON Schema of gateway.yaml (or its reference, --markdown)"
    )
    schema.set_defaults(func=_cmd_schema)
