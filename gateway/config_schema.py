"""The JSON Schema of ``gateway.yaml``, generated from the models that validate the file.

:func:`file_model` is :class:`~gateway.config.GatewayConfig` with ``tenants[].channels[]``
typed as what the loader does by hand: a union of every installed connector's channel model
(``SPEC.config_model``), told apart by ``kind``. :func:`config_schema` is pydantic's own
``model_json_schema`` of it, with the ``$id``, title and the ``kind`` every channel block
must write. ``flowbiz schema`` prints it; docs/gateway.schema.json is a copy that
tests/gateway/test_config_schema.py keeps equal to it.

What the loader does before validating is reflected here: secrets are ``env:NAME`` strings
(see :data:`gateway.config.Secret`), relative paths are plain strings, and ``source`` (set
by the loader, never written in the file) is not part of the schema. The schema is a shape
check for editors and CI; ``flowbiz check`` remains the full check (environment variables
set, cross-references, each connector's own check).
"""

from __future__ import annotations

import functools
import operator
from typing import Annotated, Any

from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import GenerateJsonSchema

from connectors.registry import installed_specs
from gateway.config import GatewayConfig, TenantConfig

__all__ = ["SCHEMA_ID", "SCHEMA_TITLE", "config_schema", "file_model", "schema_of"]

SCHEMA_ID = "urn:flowbiz-gateway:gateway.schema.json"
SCHEMA_TITLE = "FlowBiz Gateway configuration (gateway.yaml)"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _WithoutFieldTitles(GenerateJsonSchema):
    # A field's title would only repeat its key ("Max Body Bytes"); the key says it.
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


@functools.cache
def file_model() -> type[GatewayConfig]:
    """The whole file as one model: the core with each channel block as its kind's model."""
    channel_models = [spec.config_model for spec in installed_specs()]
    # Built at run time from the installed connectors, so typed as a value, not a type.
    union: Any = functools.reduce(operator.or_, channel_models)
    block: Any = Annotated[union, Field(discriminator="kind")]
    tenant_fields = TenantConfig.model_fields
    tenant = create_model(
        "TenantConfig",
        __base__=TenantConfig,
        __doc__=TenantConfig.__doc__,
        channels=(
            tuple[block, ...],
            Field(default=(), description=tenant_fields["channels"].description),
        ),
    )
    core_fields = GatewayConfig.model_fields
    return create_model(
        "GatewayConfig",
        __base__=GatewayConfig,
        __doc__=GatewayConfig.__doc__,
        tenants=(
            tuple[tenant, ...],
            Field(default=(), description=core_fields["tenants"].description),
        ),
    )


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """Pydantic's JSON Schema of ``model`` as this project publishes them (no field titles)."""
    return model.model_json_schema(schema_generator=_WithoutFieldTitles)


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``gateway.yaml``."""
    schema = schema_of(file_model())
    defs = schema.get("$defs", {})
    for channel in (spec.config_model for spec in installed_specs()):
        # The loader needs ``kind`` to choose the model; each model defaults it to its own.
        required = defs[channel.__name__].setdefault("required", [])
        if "kind" not in required:
            required.insert(0, "kind")
    return {"$schema": _DIALECT, "$id": SCHEMA_ID, **schema, "title": SCHEMA_TITLE}
