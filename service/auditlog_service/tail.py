"""Live tails of co-browsing sessions: one watch per session per process, shared by its tails.

Replay and live are one read, "the events after my cursor, in sequence order", so there is no
hand-over race. A watch knows its session's head: a write through this process advances it at
once; a tick from another process (changefeed.py) advances it within a poll; a slow safety probe
(one `_id` lookup of head+1) covers a tick lost with a crashed writer. Each tail reads from the
database at its own pace, so a slow consumer costs no memory: the database is the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from auditlog.v1 import enums_pb2, service_pb2

from . import convert, metrics
from .errors import (
    AuditLogError,
    CursorOutOfRange,
    InvalidCursor,
    ShuttingDown,
    TooManyTails,
    Unauthenticated,
)
from .event_types import REGISTRY
from .storage import EventRepository
from .tokens import TokenError, TokenSigner

log = logging.getLogger(__name__)

CURSOR_PURPOSE = "cursor"
MAX_SEQUENCE = 10**convert.SEQUENCE_DIGITS - 1
SessionKey = tuple[str, str]


@dataclass(frozen=True)
class TailSettings:
    max_tails: int = 1000
    heartbeat_interval_s: float = 10.0
    # A write to a client that does not read for this long ends its tail (RESOURCE_EXHAUSTED).
    slow_consumer_timeout_s: float = 10.0
    # Each watch probes head+1 this often even without a wake-up: the last safety net for a
    # tick that never came. (A writer that stops beating, and one that reports a tick it could
    # not write, make every watch probe at once: see changefeed.py.)
    safety_probe_interval_s: float = 60.0
    # ... but the prober sends no more than this many probes a second, whatever the number of
    # watches: an idle process's cost stays a small fixed poll (at 1,000 idle sessions each is
    # then probed every 500 s instead of 17 lookups/s).
    safety_probes_per_s: float = 2.0
    max_batch_events: int = 256
    max_batch_bytes: int = 1024 * 1024


def shared_deadline(now: float, timeout_s: float) -> float:
    """The end of a wait of `timeout_s` from `now`: the point nearest to it on a grid of a tenth
    of `timeout_s` (event loop time).

    Why: the idle tails of a process then time out (and send their heartbeats) together, a
    few turns of the event loop every grid step, where each took a turn of its own (a thousand
    tails at the 10 s interval: 100 a second). 1,000 idle tails, three alternating pairs: 5.57,
    7.97, 6.87 -> 4.27, 4.33, 4.27 % of a core (bench/results/tail_idle_ab_session40.md).
    Rounded to the nearest point, not the next, so that heartbeats stay 10 s apart on average.
    """
    if timeout_s <= 0:
        return now
    grid = timeout_s / 10
    return round((now + timeout_s) / grid) * grid


class SessionWatch:
    """The known head of one session, and the tails of this process that wait on it."""

    def __init__(self, key: SessionKey, head: int) -> None:
        self.key = key
        self.head = head
        self.tails = 0
        self._changed = asyncio.Event()

    def advance(self, head: int) -> None:
        if head > self.head:
            self.head = head
            self._changed.set()
            self._changed = asyncio.Event()

    def wake_all(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_beyond(self, sequence: int, timeout_s: float) -> bool:
        """Waits until the head passes `sequence`; False on timeout, which comes up to a
        twentieth of `timeout_s` early or late: at the nearest point of a grid that all waits
        share."""
        if self.head > sequence:
            return True
        deadline = shared_deadline(asyncio.get_running_loop().time(), timeout_s)
        # asyncio.timeout_at, not wait_for: no task per wait.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._changed.wait()
        return self.head > sequence


class TailHub:
    """All session watches of this process, the safety prober, and the tail cap."""

    def __init__(self, repository: EventRepository, signer: TokenSigner, settings: TailSettings):
        self._repository = repository
        self._signer = signer
        self.settings = settings
        self._watches: dict[SessionKey, SessionWatch] = {}
        self._tails = 0
        self.closing = False
        self._prober: asyncio.Task[None] | None = None
        self._probes: set[asyncio.Task[None]] = set()

    @property
    def active_tails(self) -> int:
        return self._tails

    def has_watches(self) -> bool:
        return bool(self._watches)

    def start(self) -> None:
        self._prober = asyncio.create_task(self._probe_loop())

    async def close(self) -> None:
        """Ends every tail with UNAVAILABLE (and its cursor) so clients move to another server."""
        self.closing = True
        for watch in list(self._watches.values()):
            watch.wake_all()
        for task in [self._prober, *self._probes]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def advanced(self, tenant_id: str, session_id: str, head: int) -> None:
        """A session reached `head` (a local write or another process's tick)."""
        watch = self._watches.get((tenant_id, session_id))
        if watch is not None:
            watch.advance(head)

    def process_gone(self, process_id: str) -> None:
        """A writer process stopped beating: its last writes may never have been ticked."""
        if self._watches and not self.closing:
            task = asyncio.create_task(self.probe_all())
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)

    async def probe_all(self, concurrency: int = 32) -> None:
        """Probes head+1 of every watched session now (one `_id` lookup each)."""
        watches = list(self._watches.items())
        for start in range(0, len(watches), concurrency):
            await asyncio.gather(
                *(self._probe(key, watch) for key, watch in watches[start : start + concurrency])
            )

    async def _probe(self, key: SessionKey, watch: SessionWatch) -> None:
        try:
            head = await self._repository.session_head(*key, known=watch.head)
        except AuditLogError:
            return  # the database is away; tails notice on their next read
        watch.advance(head)

    async def _probe_loop(self) -> None:
        """Probes the watches one by one, round after round: spread over the interval (a
        thousand idle sessions never probe in a burst) and never faster than
        safety_probes_per_s. A round covers the watches at its start; new ones join the next."""
        settings = self.settings
        interval = settings.safety_probe_interval_s
        gap = 1 / settings.safety_probes_per_s
        round_: list[tuple[SessionKey, SessionWatch]] = []
        while True:
            if not round_:
                round_ = list(self._watches.items())
                if not round_:
                    await asyncio.sleep(min(interval, 1.0))
                    continue
            key, watch = round_.pop()
            await asyncio.sleep(max(interval / max(len(self._watches), 1), gap))
            if self._watches.get(key) is watch:
                await self._probe(key, watch)

    # ---- cursors -----------------------------------------------------------------------------

    def encode_cursor(self, key: SessionKey, sequence: int) -> str:
        return self._signer.encode(CURSOR_PURPOSE, {"t": key[0], "s": key[1], "q": sequence})

    def decode_cursor(self, key: SessionKey, cursor: str) -> int:
        try:
            payload = self._signer.decode(CURSOR_PURPOSE, cursor)
        except TokenError as exc:
            raise InvalidCursor(f"not a cursor of this service ({exc})") from exc
        sequence = payload.get("q")
        if (payload.get("t"), payload.get("s")) != key:
            raise InvalidCursor("belongs to another session")
        # A valid signature says who made the cursor, not that its content is sane.
        if (
            not isinstance(sequence, int)
            or isinstance(sequence, bool)
            or not 0 <= sequence <= MAX_SEQUENCE
        ):
            raise InvalidCursor("malformed: sequence out of range")
        return sequence

    # ---- one tail ----------------------------------------------------------------------------

    async def _start_sequence(self, request: service_pb2.TailSessionRequest, head: int) -> int:
        start = request.WhichOneof("start")
        key = (request.tenant_id, request.session_id)
        if start == "cursor":
            sequence = self.decode_cursor(key, request.cursor)
            if sequence > head:
                # The cursor may come from a replica that saw later writes than this one knows
                # of: only the database can say whether it is really ahead.
                head = await self._repository.fresh_head(*key)
                self.advanced(*key, head)
            if sequence > head:
                raise CursorOutOfRange(
                    f"sequence {sequence} is beyond the session's last event ({head})"
                )
            return sequence
        if start == "from_now":
            return head
        # from_beginning, start_time (found while reading), or nothing set: the session's first
        # kept slot (retention may have removed older ones).
        return await self._repository.session_start(*key) - 1

    async def tail(
        self, request: service_pb2.TailSessionRequest, *, expires_at: float | None = None
    ) -> AsyncIterator[tuple[service_pb2.TailSessionResponse, int]]:
        """Yields (response, sequence its cursor points at); raises errors with `.metadata`.

        At `expires_at` (the caller's token expiry, seconds since the epoch) the tail ends
        UNAUTHENTICATED, so that its client resumes with a fresh token.
        """
        if self.closing:
            raise ShuttingDown("the server is shutting down; tail another server")
        if self._tails >= self.settings.max_tails:
            raise TooManyTails(f"this server already serves {self._tails} tails; try another")
        key = (request.tenant_id, request.session_id)
        watch = self._watches.get(key)
        if watch is None:
            # Not the cached head: this process may not have written the session for a while.
            # (Before the tail is counted: a failed read must not keep a tail's place.)
            head = await self._repository.fresh_head(*key)
            # Another tail of this session may have created the watch during the await: share
            # it, or this tail would wait on a watch that nothing ever advances.
            watch = self._watches.setdefault(key, SessionWatch(key, head))
            watch.advance(head)
        self._tails += 1
        watch.tails += 1
        metrics.tail_opened("session")
        try:
            sequence = await self._start_sequence(request, watch.head)
            async for item in self._follow(request, watch, sequence, expires_at):
                yield item
        finally:
            metrics.tail_closed("session")
            self._tails -= 1
            watch.tails -= 1
            if watch.tails == 0 and self._watches.get(key) is watch:
                del self._watches[key]

    async def _follow(
        self,
        request: service_pb2.TailSessionRequest,
        watch: SessionWatch,
        sequence: int,
        expires_at: float | None,
    ) -> AsyncIterator[tuple[service_pb2.TailSessionResponse, int]]:
        key = watch.key
        wanted = {REGISTRY.by_event_type(t).type_string for t in request.event_types}
        not_before = (
            convert.timestamp_to_datetime(request.start_time)
            if request.WhichOneof("start") == "start_time"
            else None
        )
        caught_up = False
        settings = self.settings
        # The last cursor made, by sequence: an idle tail's heartbeats all carry the same one.
        cursor_at, cursor = -1, ""
        while True:
            if self.closing:
                raise ShuttingDown("the server is shutting down; resume on another server")
            if expires_at is not None and time.time() >= expires_at:
                raise Unauthenticated(
                    "the token has expired; resume from the cursor with a fresh token",
                    enums_pb2.ERROR_REASON_TOKEN_EXPIRED,
                )
            if sequence < watch.head:
                upto = min(watch.head, sequence + settings.max_batch_events)
                docs = await self._repository.read_session_range(*key, sequence + 1, upto)
                batch = service_pb2.TailEventBatch()
                size = 0
                for doc in docs:
                    if not_before is not None and doc["occur_time"] >= not_before:
                        # start_time says where the tail starts, not what it filters: a late
                        # event (a producer's clock behind) after the start is delivered.
                        not_before = None
                    if not_before is None and (not wanted or doc["type"] in wanted):
                        event = convert.from_document(doc)
                        size += event.ByteSize()
                        batch.events.append(event)
                    sequence = doc["sequence"]
                    if size >= settings.max_batch_bytes:
                        break
                if batch.events:
                    yield (
                        service_pb2.TailSessionResponse(
                            events=batch, cursor=self.encode_cursor(key, sequence)
                        ),
                        sequence,
                    )
                continue
            if not caught_up:
                caught_up = True
                yield (
                    service_pb2.TailSessionResponse(
                        caught_up=service_pb2.TailCaughtUp(head_sequence=watch.head),
                        cursor=self.encode_cursor(key, sequence),
                    ),
                    sequence,
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
                if cursor_at != sequence:
                    cursor_at, cursor = sequence, self.encode_cursor(key, sequence)
                yield (
                    service_pb2.TailSessionResponse(heartbeat=heartbeat, cursor=cursor),
                    sequence,
                )
