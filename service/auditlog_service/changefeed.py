"""Cross-process wake-ups for live tails: every process appends to its own stream of ticks.

A tick says "these sessions now reach these heads". A process writes ticks only to its own stream
(`<process id>/<n>`, n = 1, 2, 3, ... written by one task, so without holes or races), and every
process reads every live process's next tick with one `_id` lookup per stream per poll: the idle
cost of live tails is O(processes), not O(sessions). Ticks only wake pollers up; the session slots
stay the truth. Each process also beats (a counter in its `tail_processes` document, every
second); when a process's beat stops for a few seconds, or it says goodbye, or its beat counts
a tick it could not write, every reader probes the sessions it follows, which covers the ticks
a crashed writer never wrote, within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    PyMongoError,
    WriteConcernError,
)

from . import metrics

log = logging.getLogger(__name__)

SessionKey = tuple[str, str]
TICK_DIGITS = 12
# A process whose beat has not changed for this long is taken for dead by the readers.
DEAD_AFTER_S = 3.0
# A process commits ledger entries only within this long of the start of a beat that went
# through (it beats first otherwise): less than DEAD_AFTER_S, so that whatever it commits is
# either seen by a sequencer that takes it for dead, or followed by a beat that sequencer sees
# (see Sequencer.liveness_changed).
FRESH_BEAT_S = 2.0


def tick_id(process_id: str, number: int) -> str:
    return f"{process_id}/{number:0{TICK_DIGITS}d}"


class _StoppableLoops:
    """Background loops that stop between database calls, never in the middle of one.

    A query cancelled mid-flight makes PyMongo drop its connection without closing the socket,
    so close() asks the loops to stop, and cancels only what does not stop within a bound.
    """

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _pause(self, seconds: float) -> bool:
        """Sleeps, or returns early when asked to stop; True means stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def _stop_loops(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if not self._tasks:
            return
        _, late = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in late:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class TickWriter(_StoppableLoops):
    """Appends this process's session advances to its tick stream, merging those that queue up."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        *,
        heartbeat_s: float = 1.0,
        keep_ticks: int = 10_000,
    ) -> None:
        super().__init__()
        self.process_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._ticks = db.get_collection("session_ticks")
        self._processes = db.get_collection("tail_processes")
        self._heartbeat_s = heartbeat_s
        self._keep_ticks = keep_ticks
        self._pending: dict[SessionKey, int] = {}
        # Wall-clock time of the first advance waiting in _pending: the start of the tick lag.
        self._pending_since = 0.0
        self._wake = asyncio.Event()
        self._next = 1
        self._cleaned_up_to = 1
        self._beat = 0
        # time.monotonic() at the start of the last beat that went through.
        self._beat_started = -1e9
        self._beating = asyncio.Lock()
        # Ticks this process could not write (in its beat: readers then probe their sessions).
        self._dropped = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._write_loop()),
            asyncio.create_task(self._heartbeat_loop()),
        ]

    async def close(self) -> None:
        self._wake.set()
        await self._stop_loops()
        with contextlib.suppress(PyMongoError):
            await self._processes.delete_one({"_id": self.process_id})

    def note(self, tenant_id: str, session_id: str, head: int) -> None:
        key = (tenant_id, session_id)
        if not self._pending:
            self._pending_since = time.time()
        if self._pending.get(key, 0) < head:
            self._pending[key] = head
        self._wake.set()

    async def _write_loop(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            heads, self._pending = self._pending, {}
            if not heads:
                continue
            doc = {
                "p": self.process_id,
                "n": self._next,
                # For the readers' tick-lag metric (wall clock: readers may be elsewhere).
                "at": self._pending_since,
                # Sub-documents, not nested arrays: FerretDB v1 rejects arrays inside arrays.
                "heads": [
                    {"t": tenant, "s": session, "h": head}
                    for (tenant, session), head in heads.items()
                ],
            }
            while True:
                try:
                    await self._ticks.insert_one(
                        {"_id": tick_id(self.process_id, self._next), **doc}
                    )
                    self._next += 1
                    backoff = 0.05
                    break
                except DuplicateKeyError:
                    # An earlier attempt was stored but its answer lost: take the next number.
                    self._next += 1
                    doc["n"] = self._next
                except (ConnectionFailure, ExecutionTimeout, WriteConcernError) as exc:
                    log.warning("tick write failed, retrying: %r", exc)
                    if await self._pause(backoff):
                        return
                    backoff = min(backoff * 2, 2.0)
                except Exception as exc:
                    # Not transient: drop this wake-up, and say so in the next beat, so that
                    # every reader probes the sessions it follows; the next tick is tried afresh.
                    log.error("tick write rejected, dropped: %r", exc)
                    self._dropped += 1
                    break

    async def fresh_beat(self) -> None:
        """Beats now unless a beat that started less than FRESH_BEAT_S ago went through."""
        if time.monotonic() - self._beat_started < FRESH_BEAT_S:
            return
        async with self._beating:  # after a pause, every group waiting here shares one beat
            if time.monotonic() - self._beat_started >= FRESH_BEAT_S:
                await self.beat()

    async def beat(self) -> None:
        """One beat: this process's `tail_processes` document, its counter one up."""
        started = time.monotonic()
        self._beat += 1
        await self._processes.replace_one(
            {"_id": self.process_id},
            {
                "_id": self.process_id,
                "seen_at": dt.datetime.now(dt.UTC),
                "next": self._next,
                "beat": self._beat,
                "dropped": self._dropped,
            },
            upsert=True,
        )
        self._beat_started = max(self._beat_started, started)

    async def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.beat()
                if self._next - self._cleaned_up_to > 2 * self._keep_ticks:
                    # Own old ticks only, and only once many have piled up: FerretDB serves this
                    # by scanning the (small) collection, so an idle process never does it.
                    self._cleaned_up_to = self._next - self._keep_ticks
                    await self._ticks.delete_many(
                        {"p": self.process_id, "n": {"$lt": self._cleaned_up_to}}
                    )
            except PyMongoError as exc:
                log.warning("tail heartbeat failed: %r", exc)
            await self._pause(self._heartbeat_s)


class TickReader(_StoppableLoops):
    """Follows every live process's tick stream and reports each advance to `deliver`.

    A process whose beat stops for `dead_after_s` (by this reader's clock: the beat is a counter,
    so clocks need not agree), or whose document is gone, is reported to `process_gone`, and so
    is a newly seen one, and one whose beat counts a tick it could not write: each may have
    written events whose ticks this reader will never read.
    """

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        deliver: Callable[[str, str, int], None],
        *,
        process_gone: Callable[[str], None] | None = None,
        own_process_id: str = "",
        listening: Callable[[], bool] | None = None,
        min_interval_s: float = 0.005,
        max_interval_s: float = 0.1,
        refresh_s: float = 1.0,
        dead_after_s: float = DEAD_AFTER_S,
        forget_after_s: float = 3600.0,
    ) -> None:
        super().__init__()
        self._ticks = db.get_collection("session_ticks")
        self._processes = db.get_collection("tail_processes")
        self._deliver = deliver
        self._process_gone = process_gone
        self._own_process_id = own_process_id
        # Whether anything here waits on ticks now (live tails): only then is polling quick.
        self._listening = listening or (lambda: True)
        self._min_interval_s = min_interval_s
        self._max_interval_s = max_interval_s
        self._refresh_s = refresh_s
        self._dead_after_s = dead_after_s
        self._forget_after_s = forget_after_s
        self._positions: dict[str, int] = {}
        # process id -> (last beat seen, when this reader saw it change)
        self._beats: dict[str, tuple[int, float]] = {}
        # process id -> ticks it reported dropped, when last seen
        self._dropped: dict[str, int] = {}
        # Reading positions of processes taken for dead, in case they beat again.
        self._parked: dict[str, int] = {}
        # The processes beating as of the last look at them; None before the first look.
        self._live: frozenset[str] | None = None
        # Called with each process that started or stopped beating since the look before.
        self.on_liveness_change: Callable[[str], None] | None = None

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop())]

    async def close(self) -> None:
        await self._stop_loops()

    def is_live(self, process_id: str) -> bool:
        """Whether the process beats, as of this reader's last look (every `refresh_s`). Any
        process counts as live until this reader has looked, and so does its own."""
        live = self._live
        return live is None or process_id in live or process_id == self._own_process_id

    async def _refresh_processes(self) -> None:
        now = asyncio.get_running_loop().time()
        recent = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self._dead_after_s * 10)
        forgotten = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self._forget_after_s)
        live: dict[str, int] = {}
        async for doc in self._processes.find({}):
            process_id, beat = doc["_id"], doc.get("beat", 0)
            if doc["seen_at"] < forgotten:
                # Left by a process killed long ago; any reader may tidy it away.
                await self._processes.delete_one({"_id": process_id, "beat": beat})
                continue
            last = self._beats.get(process_id)
            if last is None:
                if doc["seen_at"] < recent:
                    continue  # dead before this reader started: nothing of it to follow
                self._beats[process_id] = (beat, now)
            elif last[0] != beat:
                self._beats[process_id] = (beat, now)
            elif now - last[1] > self._dead_after_s:
                continue  # its beat stopped: dead, or cut off from the database
            live[process_id] = doc["next"]
            dropped = doc.get("dropped", 0)
            if dropped > self._dropped.setdefault(process_id, dropped):
                self._dropped[process_id] = dropped
                if process_id in self._positions and self._process_gone is not None:
                    log.warning("process %s dropped a tick; probing its sessions", process_id)
                    self._process_gone(process_id)
        previous, self._live = self._live, frozenset(live)
        if previous is not None and self.on_liveness_change is not None:
            for process_id in previous ^ self._live:
                self.on_liveness_change(process_id)
        for process_id, next_number in live.items():
            # This process's own ticks reach its tails directly, so its stream is not read.
            if process_id == self._own_process_id or process_id in self._positions:
                continue
            parked = self._parked.pop(process_id, None)
            if parked is not None:
                # Taken for dead, beating again: followed on from where its reading stopped, so
                # no tick it wrote meanwhile is skipped.
                self._positions[process_id] = parked
                continue
            # A newly seen process is followed from its last heartbeat, not its whole history;
            # the ticks it wrote before that (since it started, a second at most) are covered
            # by probing the sessions watched here once.
            self._positions[process_id] = next_number
            if self._process_gone is not None:
                self._process_gone(process_id)
        for process_id in list(self._positions):
            if process_id not in live:
                self._parked[process_id] = self._positions.pop(process_id)
                if self._process_gone is not None:
                    log.info("process %s stopped beating; probing its sessions", process_id)
                    self._process_gone(process_id)
        for process_id in list(self._beats):
            if process_id not in live and process_id not in self._positions:
                beat_seen = self._beats[process_id][1]
                if now - beat_seen > self._forget_after_s:
                    del self._beats[process_id]
                    self._parked.pop(process_id, None)
                    self._dropped.pop(process_id, None)

    async def poll_once(self) -> bool:
        """Reads every new tick; True when there was at least one."""
        found = False
        for process_id, number in list(self._positions.items()):
            while True:
                doc = await self._ticks.find_one({"_id": tick_id(process_id, number)})
                if doc is None:
                    break
                found = True
                number += 1
                self._positions[process_id] = number
                if "at" in doc:
                    metrics.tick_read(time.time() - doc["at"])
                for advance in doc["heads"]:
                    self._deliver(advance["t"], advance["s"], advance["h"])
        return found

    async def _loop(self) -> None:
        interval = self._min_interval_s
        loop = asyncio.get_running_loop()
        refreshed_at = -1e9
        while not self._stop.is_set():
            try:
                if loop.time() - refreshed_at > self._refresh_s:
                    await self._refresh_processes()
                    refreshed_at = loop.time()
                found = await self.poll_once()
            except PyMongoError as exc:
                log.warning("tick poll failed: %r", exc)
                found = False
            except Exception:
                # Never the end of the loop: without it this process's tails would hear of
                # other processes' writes from the safety probe only.
                log.exception("tick poll failed")
                found = False
            # Adaptive: quick after activity while tails wait here, else backing off to
            # max_interval_s (ticks then only keep this process's idea of session heads fresh).
            quick = found and self._listening()
            interval = self._min_interval_s if quick else min(interval * 1.5, self._max_interval_s)
            await self._pause(interval)
