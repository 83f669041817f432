"""`flowbiz check`'s one-pass inspection of a configuration against mutated files.

Starting from a valid configuration (the example's tenants, a WhatsApp block, a desk),
values anywhere in it are replaced by arbitrary YAML-like values. Whatever the file, the
inspection (gateway/config.py: ``inspect_config``, with the salvage of
gateway/config_salvage.py) must:

- return, never raise;
- name every problem at a path whose holder exists in the file as written (a removed
  tenant or block never shifts another problem onto the wrong element, or off the end);
- report a problem whenever the whole file's model refuses the file (``flowbiz schema``'s
  model, gateway/config_schema.py), and no problem twice.

And for files of tenants that are valid, cannot validate, or name an unknown plan, holding
blocks that are valid, fail their model or fail their connector's check, the problems are
exactly the expected ones, each at its own tenant and block.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.config import inspect_config
from gateway.config_schema import file_model
from gateway.demo import DEMO_SECRETS, EXAMPLE_CONFIG
from tests.harness import PERSONAS_DIR
from tests.properties.conftest import PROFILE


def _valid() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["personas_dir"] = str(PERSONAS_DIR)
    data["tenants"][0]["channels"].append(
        {
            "kind": "whatsapp",
            "account_sid": "AC" + "0" * 32,
            "auth_token": "env:ACME_HTTP_API_KEY",
            "from_number": "whatsapp:+14155238886",
            "status_callback": False,
        }
    )
    data["handoff"] = {"operators": {"tenant": "acme", "channel": "http", "conversation_id": "o"}}
    return data


VALID = _valid()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


PATHS = _paths(VALID)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "x", "env:UNSET_X"]),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("ab"), inner),
    max_leaves=4,
)


def _holder_exists(data: Any, path: str) -> bool:
    node = data
    for segment in path.split(".")[:-1]:
        if isinstance(node, dict) and segment in node:
            node = node[segment]
        elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
            node = node[int(segment)]
        else:
            return False
    return True


@PROFILE
@given(changes=st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=4))
def test_inspection_names_every_problem_in_the_file_as_written(changes, monkeypatch):
    for name, value in DEMO_SECRETS.items():
        monkeypatch.setenv(name, value)
    data = copy.deepcopy(VALID)
    for path, value in changes:
        node = data
        try:
            for segment in path[:-1]:
                node = node[segment]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change replaced what held this path
    inspection = inspect_config(copy.deepcopy(data))
    for path, _ in inspection.problems:
        assert path == "(root)" or _holder_exists(data, path), (path, inspection.problems)
    assert len(set(inspection.problems)) == len(inspection.problems)
    try:
        file_model().model_validate(data)
    except ValidationError:
        assert inspection.problems
    if not inspection.problems:
        assert inspection.config is not None
        file_model().model_validate(data)  # what passed the inspection is a valid file


def _block(kind: str, ti: int, ci: int) -> dict[str, Any]:
    """A channel block of one of three kinds, distinct from every other (its id, its number)."""
    if kind == "valid":
        return {
            "kind": "line",
            "id": f"c{ci}",
            "destination": f"U{ti:016x}{ci:016x}",
            "channel_secret": "env:ACME_HTTP_API_KEY",
            "channel_access_token": "env:ACME_HTTP_API_KEY",
        }
    if kind == "refused":  # fails its own model: left out of the salvaged tenant
        return {"kind": "http", "id": f"c{ci}"}
    # Valid, but its connector's check refuses it: no public URL for status callbacks.
    return {
        "kind": "whatsapp",
        "id": f"c{ci}",
        "account_sid": "AC" + "0" * 32,
        "auth_token": "env:ACME_HTTP_API_KEY",
        "from_number": f"whatsapp:+1415550{ti}{ci:02d}",
    }


_TENANTS = st.lists(
    st.tuples(
        st.sampled_from(["valid", "bad_id", "bad_plan"]),
        st.lists(st.sampled_from(["valid", "refused", "unchecked"]), max_size=3),
    ),
    max_size=5,
)


@PROFILE
@given(tenants=_TENANTS)
def test_problems_after_left_out_tenants_and_blocks_are_at_their_own_place(tenants, monkeypatch):
    """Tenants that cannot validate and blocks that fail their model are left out of the
    later checks; every later problem still names its own tenant and block in the file."""
    for name, value in DEMO_SECRETS.items():
        monkeypatch.setenv(name, value)
    data: dict[str, Any] = {"personas_dir": str(PERSONAS_DIR), "tenants": []}
    expected: set[tuple[str, str]] = set()
    for ti, (tenant, blocks) in enumerate(tenants):
        channels = [_block(kind, ti, ci) for ci, kind in enumerate(blocks)]
        entry: dict[str, Any] = {"id": f"t{ti}", "channels": channels}
        if tenant == "bad_id":
            entry["id"] = "Not An Id"
            expected.add((f"tenants.{ti}.id", "should match pattern"))
        if tenant == "bad_plan":
            entry["plan"] = "nope"
            expected.add((f"tenants.{ti}.plan", "unknown plan 'nope'"))
        for ci, block in enumerate(blocks):
            if block == "refused":
                expected.add((f"tenants.{ti}.channels.{ci}", "give api_keys or signing_secrets"))
            if block == "unchecked" and tenant != "bad_id":
                where = f"tenants.{ti}.channels.{ci}.status_callback"
                expected.add((where, "status callbacks need public_base_url"))
        data["tenants"].append(entry)
    problems = inspect_config(data).problems
    assert {path for path, _ in problems} == {path for path, _ in expected}, problems
    for path, fragment in expected:
        assert any(p == path and fragment in message for p, message in problems), path
