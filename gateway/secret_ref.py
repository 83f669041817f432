"""``Secret``: a credential written ``env:NAME`` in the configuration and read from the
environment at load time.

Guarantees: a secret field accepts nothing but an ``env:NAME`` reference to a variable that
is set and not empty, so a value pasted into the file is refused with a message that names
no value; the value is held as a :class:`~pydantic.SecretStr`, which ``repr`` and logs show
as ``**********``. Only under :data:`UNSET_SECRETS_PASS` (``flowbiz check`` judging the rest
of a file whose variables are not set where it runs) does an unset variable stand in as an
empty secret; a configuration validated so is never served. The JSON Schema of a secret is
the reference's pattern: what the file holds, never the value.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr, ValidationInfo, WithJsonSchema

__all__ = ["UNSET_SECRETS_PASS", "Secret", "read_secret"]

_ENV_REF = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")

UNSET_SECRETS_PASS = {"unset_secrets_pass": True}
"""Validation context under which an unset variable stands in as an empty secret."""


def read_secret(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise ValueError("a secret must be written as env:VARIABLE_NAME")
    match = _ENV_REF.match(value)
    if match is None:
        raise ValueError(
            "secrets are read from the environment: write env:VARIABLE_NAME, not the value"
        )
    name = match.group(1)
    found = os.environ.get(name)
    if not found:
        if info.context == UNSET_SECRETS_PASS:
            return SecretStr("")
        raise ValueError(f"environment variable {name} is not set")
    return SecretStr(found)


Secret = Annotated[
    SecretStr,
    BeforeValidator(read_secret),
    WithJsonSchema({"type": "string", "pattern": _ENV_REF.pattern}),
]
"""A credential given as ``env:NAME`` in the file and read from the environment."""
