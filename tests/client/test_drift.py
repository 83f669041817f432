"""The clients and /v1/openapi.json cannot drift: every route a client method calls is in
the document with the same method, path, path and query parameters, request body schema and
answer schema, and every operation in the document has its client method."""

import inspect
import re
from typing import Any, get_type_hints

import pytest

from connectors.http_api.schemas import CHANNEL_TAG
from gateway.admin.openapi import build_openapi
from gateway.client import ADMIN_ROUTES, CHANNEL_ROUTES, AdminClient, ChannelClient
from gateway.client.transport import Route

DOCUMENT = build_openapi()
ROUTES = [
    *((AdminClient, name, route) for name, route in ADMIN_ROUTES.items()),
    *((ChannelClient, name, route) for name, route in CHANNEL_ROUTES.items()),
]


def _ref(content: dict[str, Any]) -> str:
    return content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]


def _operation(route: Route[Any]) -> dict[str, Any]:
    item = DOCUMENT["paths"].get(route.path)
    assert item is not None, f"{route.path} is not in the document"
    operation = item.get(route.method.lower())
    assert operation is not None, f"{route.method} {route.path} is not in the document"
    return operation


@pytest.mark.parametrize(("client", "name", "route"), ROUTES, ids=[n for _, n, _ in ROUTES])
def test_each_client_route_is_the_documented_operation(client, name, route):
    operation = _operation(route)
    assert (CHANNEL_TAG in operation["tags"]) == (client is ChannelClient)
    responses = operation["responses"]
    assert str(route.status) in responses, (name, route.status, sorted(responses))
    for status in (route.status, *route.also):
        if route.response is None:
            assert "content" not in responses[str(status)], name
        else:
            assert _ref(responses[str(status)]["content"]) == route.response.__name__, name
    documented_body = operation.get("requestBody")
    if route.body is None:
        assert documented_body is None, name
    else:
        assert _ref(documented_body["content"]) == route.body.__name__, name


@pytest.mark.parametrize(("client", "name", "route"), ROUTES, ids=[n for _, n, _ in ROUTES])
def test_each_method_returns_its_routes_model_and_takes_documented_parameters(client, name, route):
    method = getattr(client, name)
    assert inspect.iscoroutinefunction(method), name
    assert get_type_hints(method)["return"] is (route.response or type(None)), name
    documented = {p["name"]: p["in"] for p in _operation(route)["parameters"]}
    in_path = set(re.findall(r"{(\w+)}", route.path))
    assert {n for n, where in documented.items() if where == "path"} == in_path, name
    # Every argument is a path or query parameter of the operation, or a field of its body.
    body_fields = set(route.body.model_fields) if route.body is not None else set()
    arguments = set(inspect.signature(method).parameters) - {"self"}
    arguments.discard("message")  # ChannelClient.send_message takes the whole body model
    for argument in arguments:
        assert argument in documented or argument in body_fields, (name, argument)


def _client_methods(client: type) -> set[str]:
    return {
        name
        for name, member in vars(client).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    }


def test_every_documented_operation_has_its_client_method():
    documented = {
        (method.upper(), path, CHANNEL_TAG in op["tags"])
        for path, item in DOCUMENT["paths"].items()
        for method, op in item.items()
        if method != "servers"
    }
    covered = {(r.method, r.path, c is ChannelClient) for c, _, r in ROUTES}
    assert covered == documented
    # Each public coroutine calls a route of the table (ChannelClient.send builds the body
    # send_message posts).
    assert _client_methods(AdminClient) == set(ADMIN_ROUTES)
    assert _client_methods(ChannelClient) == {*CHANNEL_ROUTES, "send"}


def test_channel_send_takes_the_fields_of_the_message_it_posts():
    route = CHANNEL_ROUTES["send_message"]
    assert route.body is not None
    fields = set(route.body.model_fields) | {"user_id", "user_name"}  # user: {id, name}
    arguments = set(inspect.signature(ChannelClient.send).parameters) - {"self"}
    assert arguments <= fields
    assert {"conversation_id", "text", "user_id"} <= arguments
