"""slack-sdk's OAuth state and installation stores, kept in the gateway's own store.

Guarantees:

- an OAuth ``state`` is random (192 bits), names the app block that issued it, lives
  ``state_ttl_seconds`` and is consumed at most once, whichever process consumes it (the
  store's delete decides: only the call that removed the record gets its owner);
- an installation is stored whole, encrypted with the block's Fernet keys (the newest
  encrypts, all decrypt), under a key of the app and the workspace (or, for an org-wide
  install, the Enterprise Grid org); nothing of it is readable in the store, tokens included;
- a record that no key decrypts, or that is not an installation, is treated as absent and
  counted, never raised to the request that looked for it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from gateway.store import Keyspace, Store

__all__ = ["StoreInstallationStore", "StoreStateStore", "fernet_of"]


def fernet_of(keys: list[str]) -> MultiFernet:
    """The keys, newest first; ``ValueError`` for one that is not a Fernet key."""
    return MultiFernet([Fernet(key.encode()) for key in keys])


class StoreStateStore(AsyncOAuthStateStore):
    """Single-use OAuth states, each naming the app block (``owner``) that issued it."""

    def __init__(self, store: Store, keyspace: Keyspace, *, ttl: float) -> None:
        self._store = store
        self._keyspace = keyspace
        self._ttl = ttl

    async def async_issue(self, *args: Any, owner: str = "", **kwargs: Any) -> str:
        state = secrets.token_urlsafe(24)
        key = self._keyspace.slack_oauth_state(state)
        await self._store.put_record(key, owner.encode(), ttl=self._ttl)
        return state

    async def async_consume(self, state: str) -> bool:
        return await self.consume(state) is not None

    async def consume(self, state: str) -> str | None:
        """The owner the state was issued for, once; None if unknown, expired or used."""
        if not 16 <= len(state) <= 64 or not state.replace("-", "").replace("_", "").isalnum():
            return None  # never a key we made: not worth a store call
        key = self._keyspace.slack_oauth_state(state)
        owner = await self._store.get_record(key)
        if owner is None or await self._store.delete([key]) != 1:
            return None
        return owner.decode()


class StoreInstallationStore(AsyncInstallationStore):
    """The installations of one app (``client_id``), encrypted at rest."""

    def __init__(
        self,
        store: Store,
        keyspace: Keyspace,
        *,
        client_id: str,
        fernet: MultiFernet,
        unreadable: Callable[[], None],
    ) -> None:
        self._store = store
        self._keyspace = keyspace
        self._client_id = client_id
        self._fernet = fernet
        self._unreadable = unreadable

    def _key(self, enterprise_id: str | None, team_id: str | None, org_wide: bool) -> str:
        where = f"E:{enterprise_id}" if org_wide else f"T:{team_id}"
        return self._keyspace.slack_installation(self._client_id, where)

    async def async_save(self, installation: Installation) -> None:
        data = {
            name: _plain(name, value)
            for name, value in installation.to_dict_for_copying().items()
            if value is not None
        }
        sealed = self._fernet.encrypt(json.dumps(data).encode())
        org_wide = bool(installation.is_enterprise_install)
        key = self._key(installation.enterprise_id, installation.team_id, org_wide)
        await self._store.put_record(key, sealed)

    async def async_save_bot(self, bot: Bot) -> None:
        """Bots are read from their installation; nothing is kept apart."""

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        if not is_enterprise_install and team_id:
            found = await self._read(self._key(enterprise_id, team_id, org_wide=False))
            if found is not None:
                return found
        if enterprise_id:
            return await self._read(self._key(enterprise_id, None, org_wide=True))
        return None

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        found = await self.async_find_installation(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=is_enterprise_install,
        )
        return None if found is None else found.to_bot()

    async def async_delete_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
    ) -> None:
        keys = [self._key(enterprise_id, team_id, org_wide=False)]
        if enterprise_id and not team_id:
            keys = [self._key(enterprise_id, None, org_wide=True)]
        await self._store.delete(keys)

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.async_delete_installation(enterprise_id=enterprise_id, team_id=team_id)

    async def _read(self, key: str) -> Installation | None:
        sealed = await self._store.get_record(key)
        if sealed is None:
            return None
        try:
            data = json.loads(self._fernet.decrypt(sealed))
            return Installation(**data)
        except (InvalidToken, ValueError, TypeError):
            self._unreadable()
            return None


def _plain(name: str, value: Any) -> Any:
    """JSON for a field of ``to_dict_for_copying``, as ``Installation(...)`` reads it back:
    times as epoch seconds (the expiries whole, as the model keeps them)."""
    if isinstance(value, datetime):
        seconds = value.timestamp()
        return int(seconds) if name.endswith("_expires_at") else seconds
    return value
