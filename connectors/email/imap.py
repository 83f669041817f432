"""IMAP inbound: IDLE where the server offers it, polling otherwise.

Per mailbox the store keeps ``{"uidvalidity": V, "last_uid": U}``. A pass fetches the
UIDs above ``U`` in order and, for each message: fetch it (``BODY.PEEK[]``, so the server
does not mark it read on our behalf), hand it to the connector's edge
(:meth:`connectors.email.edge.MailEdge.accept`: screens and the durable append), *then*
flag it (or move it) on the server, *then* advance ``U`` in the store.

A crash between any two steps repeats the message on the next pass; the core's dedupe on
Message-ID makes that harmless, so nothing is missed and nothing is taken twice. When the
server's UIDVALIDITY changes, the stored UIDs mean nothing any more: the poller starts
over from the messages that do not carry the processed flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from typing import Any

import aioimaplib

from connectors.email.config import EmailChannelConfig, ImapConfig
from connectors.email.intake import MailIntake
from gateway.errors import IngestUnavailableError, StoreError
from gateway.observability import get_logger

__all__ = ["ImapError", "ImapPoller"]

log = get_logger(__name__)

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_FETCH_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


class ImapError(Exception):
    """The server refused a command; the poller reconnects and tries again."""


class ImapPoller:
    def __init__(self, *, intake: MailIntake, tenant: str, channel: EmailChannelConfig) -> None:
        assert channel.imap is not None  # only built for channels with a mailbox
        self.intake = intake
        self.tenant = tenant
        self.channel = channel
        self.config: ImapConfig = channel.imap
        self.address = self.config.address or channel.addresses[0].address
        self.passes = 0  # completed fetch passes: tests wait on it
        self._task: asyncio.Task[None] | None = None
        self._client: aioimaplib.IMAP4 | None = None
        self._state_key = intake.context.keyspace.imap_state(
            tenant, channel.name, self.config.username, self.config.host, self.config.mailbox
        )
        self._listener = f"email-imap:{tenant}:{channel.name}"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"email-imap-{self.tenant}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close()

    # -- the loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        metrics = self.intake.context.metrics
        while True:
            try:
                await self._session()
            except (ImapError, OSError, TimeoutError, aioimaplib.Abort, StoreError) as exc:
                metrics.listener_up.labels(self._listener).set(0)
                self.intake.event("imap_reconnect")
                log.warning("email.imap_disconnected", error=type(exc).__name__)
            except IngestUnavailableError:
                # Nothing was flagged or recorded for the message: it is fetched again.
                metrics.listener_up.labels(self._listener).set(0)
                self.intake.event("imap_deferred")
            except Exception:  # keep the mailbox served: log, reconnect and go on
                metrics.listener_up.labels(self._listener).set(0)
                self.intake.event("imap_error")
                log.error("email.imap_failed", exc_info=True)
            await self._close()
            await asyncio.sleep(self.config.reconnect_seconds)

    async def _session(self) -> None:
        cfg = self.config
        if cfg.security == "tls":
            client: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(
                cfg.host,
                cfg.port or 993,
                timeout=cfg.timeout_seconds,
                ssl_context=ssl.create_default_context(),
            )
        else:
            client = aioimaplib.IMAP4(cfg.host, cfg.port or 143, timeout=cfg.timeout_seconds)
        self._client = client
        await client.wait_hello_from_server()
        _ok(await client.login(cfg.username, cfg.password.get_secret_value()), "LOGIN")
        selected = _ok(await client.select(cfg.mailbox), "SELECT")
        uidvalidity = _uidvalidity(selected.lines)
        self.intake.context.metrics.listener_up.labels(self._listener).set(1)
        log.info("email.imap_connected", mailbox=cfg.mailbox)
        use_idle = cfg.idle and client.has_capability("IDLE")
        while True:
            await self._fetch_new(client, uidvalidity)
            self.passes += 1
            if use_idle:
                await self._idle(client)
            else:
                await asyncio.sleep(cfg.poll_seconds)

    async def _idle(self, client: aioimaplib.IMAP4) -> None:
        idle = await client.idle_start(timeout=self.config.idle_seconds)
        try:
            while client.has_pending_idle():
                pushed = await client.wait_server_push(timeout=self.config.idle_seconds)
                if pushed is aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break  # the IDLE timer ran out: re-issue it below the server's limit
                if any(b"EXISTS" in line for line in pushed if isinstance(line, bytes)):
                    break
        finally:
            if client.has_pending_idle():
                client.idle_done()
            await asyncio.wait_for(idle, self.config.timeout_seconds)

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.has_pending_idle():
                client.idle_done()  # else LOGOUT would queue behind the IDLE
            await asyncio.wait_for(client.logout(), 5)
        except (aioimaplib.Abort, aioimaplib.CommandTimeout, OSError, TimeoutError):
            pass  # the connection is going away either way
        finally:
            if client.protocol is not None and client.protocol.transport is not None:
                client.protocol.transport.close()

    # -- one pass ----------------------------------------------------------------------------------
    async def _load_state(self, uidvalidity: int) -> int:
        store = self.intake.context.store
        stored = await store.get_record(self._state_key)
        if stored is not None:
            state = json.loads(stored)
            if state.get("uidvalidity") == uidvalidity:
                return int(state.get("last_uid", 0))
            self.intake.event("imap_uidvalidity_changed")
            log.warning("email.imap_uidvalidity_changed", mailbox=self.config.mailbox)
        return 0

    async def _save_state(self, uidvalidity: int, last_uid: int) -> None:
        await self.intake.context.store.put_record(
            self._state_key, json.dumps({"uidvalidity": uidvalidity, "last_uid": last_uid}).encode()
        )

    async def _fetch_new(self, client: aioimaplib.IMAP4, uidvalidity: int) -> None:
        last_uid = await self._load_state(uidvalidity)
        while True:
            listing = _ok(
                await client.uid("fetch", f"{last_uid + 1}:*", "(UID RFC822.SIZE FLAGS)"),
                "FETCH",
            )
            pending = sorted(
                (uid, size, flags) for uid, size, flags in _listing(listing.lines) if uid > last_uid
            )
            if not pending:
                return
            for uid, size, flags in pending[: self.config.batch]:
                if self.config.processed_flag.encode() not in flags:
                    await self._take(client, uid, size)
                last_uid = uid
                await self._save_state(uidvalidity, last_uid)

    async def _take(self, client: aioimaplib.IMAP4, uid: int, size: int) -> None:
        intake = self.intake
        if size > self.config.max_message_bytes:
            intake.event("imap_too_large")
            await intake.quarantine_unfetched(
                self.tenant, self.address, size=size, reason="too_large", source="imap"
            )
        else:
            fetched = _ok(await client.uid("fetch", str(uid), "(BODY.PEEK[])"), "FETCH")
            raw = _literal(fetched.lines)
            if raw is None:
                return  # expunged meanwhile
            result = await intake.accept(
                raw, recipients=[self.address], mail_from=None, source="imap"
            )
            intake.event(f"imap_{result.outcome}")
        await self._mark_processed(client, uid)

    async def _mark_processed(self, client: aioimaplib.IMAP4, uid: int) -> None:
        cfg = self.config
        if cfg.move_to is not None and client.has_capability("MOVE"):
            _ok(await client.uid("move", str(uid), cfg.move_to), "MOVE")
            return
        _ok(
            await client.uid("store", str(uid), "+FLAGS.SILENT", f"(\\Seen {cfg.processed_flag})"),
            "STORE",
        )


def _ok(response: Any, command: str) -> Any:
    if response.result != "OK":
        raise ImapError(f"{command} failed: {response.result}")
    return response


def _uidvalidity(lines: list[Any]) -> int:
    for line in lines:
        if isinstance(line, bytes | bytearray):
            match = _UIDVALIDITY.search(bytes(line))
            if match is not None:
                return int(match.group(1))
    raise ImapError("SELECT gave no UIDVALIDITY")


def _listing(lines: list[Any]) -> list[tuple[int, int, bytes]]:
    found = []
    for line in lines:
        if not isinstance(line, bytes) or b"FETCH" not in line:
            continue
        uid = _FETCH_UID.search(line)
        size = _FETCH_SIZE.search(line)
        if uid is not None:
            found.append((int(uid.group(1)), int(size.group(1)) if size else 0, line))
    return found


def _literal(lines: list[Any]) -> bytes | None:
    for line in lines:
        if isinstance(line, bytearray):
            return bytes(line)
    return None
