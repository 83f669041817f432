"""docs/api-reference.md is the rendering of the OpenAPI document the gateway serves: every
operation (the HTTP channel's included), the reply webhook and every schema, and the
committed page is never stale."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.admin.openapi import build_openapi
from gateway.admin.reference import operation_anchor, render_reference, schema_anchor
from gateway.admin.table import OPERATIONS
from gateway.cli import main

PAGE = Path(__file__).resolve().parents[2] / "docs" / "api-reference.md"
REGENERATE = ".venv/bin/flowbiz openapi --markdown -o docs/api-reference.md"


def test_committed_page_is_the_rendering_of_the_served_document():
    assert PAGE.read_text(encoding="utf-8") == render_reference(build_openapi()), (
        f"docs/api-reference.md is stale: run `{REGENERATE}` and commit it"
    )


def _sections(page: str) -> dict[str, str]:
    """Each ``### … {#anchor}`` section's text, by anchor."""
    parts = re.split(r"^### .*\{#([\w-]+)\}$", page, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_operation_webhook_and_schema_has_its_section():
    document = build_openapi()
    sections = _sections(render_reference(document))
    operations = [
        op
        for item in [*document["paths"].values(), *document["webhooks"].values()]
        for method, op in item.items()
        if method != "servers"
    ]
    assert len(operations) == len(OPERATIONS) + 3  # two channel routes and the webhook
    for op in operations:
        section = sections[operation_anchor(op["operationId"])]
        for status, response in op["responses"].items():
            assert re.search(rf"^\| {status} \|", section, re.MULTILINE), (op, status)
            for body in response.get("content", {}).values():
                name = body["schema"]["$ref"].rsplit("/", 1)[1]
                assert f"](#{schema_anchor(name)})" in section, (op["operationId"], name)
        for param in op.get("parameters", []):
            assert f"| `{param['name']}` | {param['in']} |" in section, (op, param)
    for name, schema in document["components"]["schemas"].items():
        section = sections[schema_anchor(name)]
        for field in schema.get("properties", {}):
            assert f"| `{field}` |" in section, (name, field)


def test_the_http_channel_section_names_its_routes_server_and_auth():
    page = render_reference(build_openapi())
    channel = page.split("\n## HTTP channel\n", 1)[1].split("\n## ", 1)[0]
    assert "Served on the public listener" in channel
    assert "### POST `/v1/channels/http/{tenant}/messages`" in channel
    assert "### GET `/v1/channels/http/{tenant}/conversations/{conversation_id}/replies`" in (
        channel
    )
    assert channel.count("Authentication: `channelKey` or `channelSignature`.") == 2
    webhooks = page.split("\n## Webhooks\n", 1)[1].split("\n## ", 1)[0]
    assert "[HttpReply](#schema-httpreply)" in webhooks
    assert "`X-FlowBiz-Signature` | header" in webhooks


def test_flowbiz_openapi_writes_the_page_and_the_document(tmp_path):
    assert main(["openapi", "--markdown", "-o", str(tmp_path / "page.md")]) == 0
    assert (tmp_path / "page.md").read_text(encoding="utf-8") == render_reference(build_openapi())
    assert main(["openapi", "-o", str(tmp_path / "openapi.json")]) == 0
    assert json.loads((tmp_path / "openapi.json").read_text()) == build_openapi()
