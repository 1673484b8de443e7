"""TailEvents: a tenant's whole ledger, replayed and then live, one watch per tenant.

Like the session tails (tail.py), replay and live are one read, "the entries after my cursor";
a watch knows its tenant's ledger head: a block this process writes advances it at once, blocks
of other processes' sequencers arrive through a poll of the next block's `_id` per watched
tenant (every 250 ms, whatever the number of tails).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from auditlog.v1 import enums_pb2, service_pb2

from . import metrics
from .errors import (
    AuditLogError,
    CursorOutOfRange,
    InvalidCursor,
    ShuttingDown,
    TooManyTails,
    Unauthenticated,
)
from .event_types import REGISTRY
from .ledger import LedgerHead, Sequencer
from .ledger_reads import LedgerReader
from .tail import SessionWatch, TailSettings
from .tokens import TokenError, TokenSigner

CURSOR_PURPOSE = "ledger-cursor"
MAX_SEQUENCE = 10**12
POLL_S = 0.25


class LedgerWatches:
    """The ledger watches of this process and their poller."""

    def __init__(
        self, sequencer: Sequencer, settings: TailSettings, signer: TokenSigner | None = None
    ) -> None:
        self._sequencer = sequencer
        self.settings = settings
        self._signer = signer or TokenSigner("unset")
        self._watches: dict[str, SessionWatch] = {}
        self._tails = 0
        self.closing = False
        self._poller: asyncio.Task[None] | None = None
        sequencer.on_block = self._on_block

    def use_signer(self, signer: TokenSigner) -> None:
        self._signer = signer

    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll_loop())

    async def close(self) -> None:
        self.closing = True
        for watch in list(self._watches.values()):
            watch.wake_all()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    def _on_block(self, tenant_id: str, head: LedgerHead) -> None:
        watch = self._watches.get(tenant_id)
        if watch is not None:
            watch.advance(head.sequence)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            for tenant_id, watch in list(self._watches.items()):
                with contextlib.suppress(AuditLogError, Exception):
                    head = await self._sequencer.current(tenant_id)
                    watch.advance(head.sequence)

    def encode_cursor(self, tenant_id: str, sequence: int) -> str:
        return self._signer.encode(CURSOR_PURPOSE, {"t": tenant_id, "l": sequence})

    def decode_cursor(self, tenant_id: str, cursor: str) -> int:
        try:
            payload = self._signer.decode(CURSOR_PURPOSE, cursor)
        except TokenError as exc:
            raise InvalidCursor(f"not a ledger cursor of this service ({exc})") from exc
        sequence = payload.get("l")
        if payload.get("t") != tenant_id:
            raise InvalidCursor("belongs to another tenant")
        if (
            not isinstance(sequence, int)
            or isinstance(sequence, bool)
            or not 0 <= sequence <= MAX_SEQUENCE
        ):
            raise InvalidCursor("malformed: sequence out of range")
        return sequence

    async def tail(
        self,
        request: service_pb2.TailEventsRequest,
        reader: LedgerReader | None,
        *,
        expires_at: float | None = None,
    ) -> AsyncIterator[service_pb2.TailEventsResponse]:
        assert reader is not None
        if self.closing:
            raise ShuttingDown("the server is shutting down; tail another server")
        if self._tails >= self.settings.max_tails:
            raise TooManyTails(f"this server already serves {self._tails} tails; try another")
        tenant_id = request.tenant_id
        # Read before the tail is counted: a failed read must not keep a tail's place.
        head = await self._sequencer.current(tenant_id)
        watch = self._watches.setdefault(tenant_id, SessionWatch(("", tenant_id), head.sequence))
        watch.advance(head.sequence)
        self._tails += 1
        watch.tails += 1
        metrics.tail_opened("tenant")
        try:
            start = request.WhichOneof("start")
            if start == "cursor":
                sequence = self.decode_cursor(tenant_id, request.cursor)
                if sequence > watch.head:
                    head = await self._sequencer.current(tenant_id)
                    watch.advance(head.sequence)
                if sequence > watch.head:
                    raise CursorOutOfRange(
                        f"sequence {sequence} is beyond the ledger's head ({watch.head})"
                    )
            elif start == "from_now":
                sequence = watch.head
            else:
                sequence = head.first - 1
            async for response in self._follow(request, reader, watch, sequence, expires_at):
                yield response
        finally:
            metrics.tail_closed("tenant")
            self._tails -= 1
            watch.tails -= 1
            if watch.tails == 0 and self._watches.get(tenant_id) is watch:
                del self._watches[tenant_id]

    async def _follow(
        self,
        request: service_pb2.TailEventsRequest,
        reader: LedgerReader,
        watch: SessionWatch,
        sequence: int,
        expires_at: float | None,
    ) -> AsyncIterator[service_pb2.TailEventsResponse]:
        tenant_id = request.tenant_id
        wanted = {REGISTRY.by_event_type(t).type_string for t in request.event_types}
        settings = self.settings
        caught_up = False
        while True:
            if self.closing:
                raise ShuttingDown("the server is shutting down; resume on another server")
            if expires_at is not None and time.time() >= expires_at:
                raise Unauthenticated(
                    "the token has expired; resume from the cursor with a fresh token",
                    enums_pb2.ERROR_REASON_TOKEN_EXPIRED,
                )
            if sequence < watch.head:
                head = self._sequencer.heads.get(tenant_id)
                if head is None or head.sequence <= sequence:
                    head = await self._sequencer.current(tenant_id)
                last = min(watch.head, sequence + settings.max_batch_events, head.sequence)
                if last <= sequence:
                    # The watch heard of entries the ledger does not show yet: wait for the
                    # next look instead of asking again at once (that would never yield).
                    await watch.wait_beyond(watch.head, POLL_S)
                    continue
                placed = [
                    p
                    async for p in reader.forward(tenant_id, sequence + 1, last, head, recent=True)
                    if not wanted or p.entry["x"]["t"] in wanted
                ]
                batch = service_pb2.TailEventBatch()
                size = 0
                for item, event in await reader.events(placed):
                    if event is None:
                        continue
                    size += event.ByteSize()
                    batch.events.append(event)
                    if size >= settings.max_batch_bytes:
                        last = item.sequence
                        break
                sequence = max(last, sequence)
                if batch.events:
                    yield service_pb2.TailEventsResponse(
                        events=batch, cursor=self.encode_cursor(tenant_id, sequence)
                    )
                continue
            if not caught_up:
                caught_up = True
                yield service_pb2.TailEventsResponse(
                    caught_up=service_pb2.TailCaughtUp(head_sequence=watch.head),
                    cursor=self.encode_cursor(tenant_id, sequence),
                )
                continue
            wait_s = settings.heartbeat_interval_s
            if expires_at is not None:
                wait_s = max(0.0, min(wait_s, expires_at - time.time()))
            if not await watch.wait_beyond(sequence, wait_s):
                if self.closing or (expires_at is not None and time.time() >= expires_at):
                    continue
                heartbeat = service_pb2.TailHeartbeat(head_sequence=watch.head)
                heartbeat.server_time.GetCurrentTime()
                yield service_pb2.TailEventsResponse(
                    heartbeat=heartbeat, cursor=self.encode_cursor(tenant_id, sequence)
                )
