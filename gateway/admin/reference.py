"""The API reference page (``docs/api-reference.md``), rendered from the OpenAPI document.

Guarantee: :func:`render_reference` is a pure function of the document
:func:`gateway.admin.openapi.build_openapi` returns — every operation of every tag (the HTTP
channel's included), every webhook and every component schema, in the document's order — so
the page says what ``/v1/openapi.json`` says. The committed page is checked against it by
``tests/admin/test_reference.py``; ``flowbiz openapi --markdown -o docs/api-reference.md``
(or ``python -m gateway.admin.reference -o …``) writes it again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.admin.openapi import build_openapi

__all__ = ["main", "render_reference"]

_SCHEMA_PREFIX = "#/components/schemas/"
_HEADER = """\
<!-- Written by `flowbiz openapi --markdown -o docs/api-reference.md` from the OpenAPI
document the gateway serves at /v1/openapi.json; edit the routes and models, not this page. -->
"""


def _one_line(text: str) -> str:
    """Table cells are one line, and a ``|`` would end the cell."""
    return " ".join(text.split()).replace("|", "\\|")


def schema_anchor(name: str) -> str:
    return f"schema-{name.lower()}"


def operation_anchor(operation_id: str) -> str:
    return f"op-{operation_id.lower()}"


def _ref_name(schema: Mapping[str, Any]) -> str | None:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_SCHEMA_PREFIX):
        return ref.removeprefix(_SCHEMA_PREFIX)
    return None


def _link(name: str) -> str:
    return f"[{name}](#{schema_anchor(name)})"


def describe_type(schema: Mapping[str, Any]) -> str:
    """A JSON Schema as a short phrase: ``string (date)``, ``list of [Button]``, ``… or null``."""
    name = _ref_name(schema)
    if name is not None:
        return _link(name)
    if "anyOf" in schema:
        return " or ".join(describe_type(option) for option in schema["anyOf"])
    if "const" in schema:
        return f"`{schema['const']!r}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        return "list of " + (describe_type(items) if items else "anything")
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, Mapping) and values:
            return "map of string to " + describe_type(values)
        return "object"
    if isinstance(kind, str):
        return f"{kind} ({schema['format']})" if "format" in schema else kind
    return "any"


def _limits(schema: Mapping[str, Any]) -> str:
    """Constraints worth a reader's attention, from the schema or its non-null option."""
    options = [schema, *schema.get("anyOf", ())]
    words: list[str] = []
    for option in options:
        for key, label in (
            ("pattern", "pattern"),
            ("minLength", "min length"),
            ("maxLength", "max length"),
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
        ):
            if key in option:
                value = option[key]
                words.append(f"{label} `{value}`" if key == "pattern" else f"{label} {value}")
    return ", ".join(words)


def _content_schema(entry: Mapping[str, Any]) -> str:
    content = entry.get("content", {})
    if not content:
        return "—"
    media, body = next(iter(content.items()))
    return f"{describe_type(body.get('schema', {}))} (`{media}`)"


def _parameters(params: Sequence[Mapping[str, Any]]) -> list[str]:
    if not params:
        return []
    lines = ["", "| parameter | in | type | required | notes |", "|---|---|---|---|---|"]
    for param in params:
        schema = param.get("schema", {})
        notes = [_one_line(param.get("description", "")), _limits(schema)]
        if "default" in schema and schema["default"] is not None:
            notes.append(f"default `{schema['default']}`")
        lines.append(
            f"| `{param['name']}` | {param['in']} | {describe_type(schema)} | "
            f"{'yes' if param.get('required') else 'no'} | "
            f"{'; '.join(n for n in notes if n)} |"
        )
    return lines


def _security(operation: Mapping[str, Any], document: Mapping[str, Any]) -> str:
    requirements = operation.get("security", document.get("security", []))
    names = [name for requirement in requirements for name in requirement]
    return " or ".join(f"`{name}`" for name in names) or "none"


def _operation(
    method: str, path: str, operation: Mapping[str, Any], document: Mapping[str, Any] | None
) -> list[str]:
    """An operation's section; ``document`` None for a webhook (the gateway is the caller,
    and it authenticates by signing, as the description says)."""
    heading = f"{method.upper()} `{path}`" if document is not None else f"{method.upper()} {path}"
    about = f"**{_one_line(operation.get('summary', ''))}** (`{operation['operationId']}`)."
    if document is not None:
        about += f" Authentication: {_security(operation, document)}."
    lines = ["", f"### {heading} {{#{operation_anchor(operation['operationId'])}}}", "", about]
    if operation.get("description"):
        lines += ["", _one_line(operation["description"])]
    lines += _parameters(operation.get("parameters", []))
    if "requestBody" in operation:
        lines += ["", f"Request body: {_content_schema(operation['requestBody'])}."]
    lines += ["", "| status | meaning | body |", "|---|---|---|"]
    for status, response in operation.get("responses", {}).items():
        headers = ", ".join(f"`{h}` header" for h in response.get("headers", {}))
        meaning = _one_line(response.get("description", ""))
        lines.append(
            f"| {status} | {meaning}{'; ' + headers if headers else ''} | "
            f"{_content_schema(response)} |"
        )
    return lines


def _tags_in_order(document: Mapping[str, Any]) -> list[str]:
    tags: dict[str, None] = {}
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method != "servers":
                tags.update(dict.fromkeys(operation.get("tags", ["other"])))
    return list(tags)


def _operations_of(
    document: Mapping[str, Any], tag: str
) -> Iterable[tuple[str, str, Mapping[str, Any], list[Mapping[str, Any]]]]:
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method != "servers" and tag in operation.get("tags", ["other"]):
                yield method, path, operation, item.get("servers", [])


def _schema(name: str, schema: Mapping[str, Any]) -> list[str]:
    lines = ["", f"### {name} {{#{schema_anchor(name)}}}"]
    if schema.get("description"):
        lines += ["", _one_line(schema["description"])]
    properties: Mapping[str, Any] = schema.get("properties", {})
    if not properties:
        lines += ["", f"Values: {describe_type(schema)}."]
        return lines
    required = set(schema.get("required", []))
    lines += ["", "| field | type | required | notes |", "|---|---|---|---|"]
    for field, prop in properties.items():
        notes = [_one_line(prop.get("description", "")), _limits(prop)]
        if "default" in prop and field not in required and prop["default"] is not None:
            notes.append(f"default `{_one_line(repr(prop['default']))}`")
        lines.append(
            f"| `{field}` | {describe_type(prop)} | {'yes' if field in required else 'no'} | "
            f"{'; '.join(n for n in notes if n)} |"
        )
    if schema.get("additionalProperties") is False:
        lines += ["", "No other fields are accepted."]
    return lines


def render_reference(document: Mapping[str, Any]) -> str:
    """The whole page, Markdown, for an OpenAPI 3.1 document of the shape the gateway builds."""
    info = document.get("info", {})
    schemes: Mapping[str, Any] = document.get("components", {}).get("securitySchemes", {})
    lines = [
        _HEADER.rstrip("\n"),
        "",
        "# API reference",
        "",
        f"{_one_line(info.get('description', ''))} OpenAPI {document.get('openapi')}, "
        f"document version {info.get('version')}; served as `GET /v1/openapi.json` on the "
        "operations listener. The admin routes are relative to that listener; the HTTP "
        "channel's are on the public listener (`http.public_base_url`). How each part "
        "behaves is told in [the admin API guide](admin-api.md) and "
        "[the HTTP channel guide](connectors/http.md).",
        "",
        "## Authentication",
        "",
        "| scheme | kind | what it is |",
        "|---|---|---|",
    ]
    for name, scheme in schemes.items():
        kind = scheme.get("scheme", "") if scheme.get("type") == "http" else scheme.get("type")
        where = f", `{scheme['name']}` {scheme['in']}" if "name" in scheme else ""
        lines.append(f"| `{name}` | {kind}{where} | {_one_line(scheme.get('description', ''))} |")
    for tag in _tags_in_order(document):
        title = tag.replace("-", " ")
        lines += ["", f"## {title[:1].upper() + title[1:]}"]
        servers_told = False
        for method, path, operation, servers in _operations_of(document, tag):
            if servers and not servers_told:
                lines += [
                    "",
                    "Served on "
                    + ", ".join(_one_line(s.get("description", s["url"])) for s in servers)
                    + ", not the operations listener.",
                ]
                servers_told = True
            lines += _operation(method, path, operation, document)
    webhooks: Mapping[str, Any] = document.get("webhooks", {})
    if webhooks:
        lines += ["", "## Webhooks", "", "Requests the gateway sends to a URL you configure."]
        for name, item in webhooks.items():
            for method, operation in item.items():
                lines += _operation(method, f"to the callback URL ({name})", operation, None)
    lines += ["", "## Schemas"]
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        lines += _schema(name, schema)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the page, or write it to ``--output``."""
    parser = argparse.ArgumentParser(prog="python -m gateway.admin.reference")
    parser.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    page = render_reference(build_openapi())
    if args.output is None:
        sys.stdout.write(page)
    else:
        args.output.write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
