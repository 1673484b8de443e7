"""Group commit: concurrent submissions are written together, one database round trip per group."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from itertools import count, groupby, repeat
from operator import itemgetter
from statistics import fmean
from typing import Any, Generic, TypeVar

from . import loop_idle
from .errors import AuditLogError

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger(__name__)


class LingerTuner:
    """How long a group that is not full waits for more: the longest of `delays_s` that leaves
    the event loop little idle time, found one step at a time.

    Why: each group costs its fixed database commands and Python steps. While the loop is never
    idle (callers outnumber what the server answers: the machine's CPU is the limit), a longer
    wait makes fewer, larger groups, and each call costs less CPU; once the loop idles, every
    call waits on a group instead and a longer wait only adds to its latency. The loop's idle
    share tells the two apart where the items written a second (what the tuner measured
    before, probing a neighbour every few epochs) could not through this machine's noise:
    unary LogEvent, 0.5 s epochs of fixed waits (bench/results/ingest_ab_session49.md): 64
    closed-loop callers idle 5 % at 1.5 ms, 7 % at 6 ms, 18 % at 12 ms, with 6 ms fastest (3 and
    12 ms 10-25 % slower); 16 callers 16 % at 1.5 ms and 45 % at 6 ms (1,801 against 1,280
    calls a second); 4 callers 52 % and 67 %.

    So, in epochs of `epoch_s`, judged `judge_epochs` at a time: an idle share below
    `lengthen_below` moves to the next longer wait, one above `shorten_above` back to the next
    shorter, and the wait just left waits `retry_epochs` epochs before it is tried again, twice
    as many after each time it was left (up to `max_retry_epochs`). The epoch after a change is
    not judged (the queue that the old wait left behind flatters or wrongs the new one). An
    epoch of light load, fewer than `min_groups` groups of fewer than `min_group_items` items on
    average, goes straight back to the shortest wait. Few groups alone are not light: a long
    wait makes few groups by itself (unary LogEvent, 64 callers: 7-12 groups of 29-35 events an
    epoch of 0.2 s at 12 ms).

    `idle`: the running loop's idle seconds so far (loop_idle.idle_seconds).
    """

    def __init__(
        self,
        delays_s: Sequence[float],
        *,
        epoch_s: float = 0.25,
        judge_epochs: int = 2,
        lengthen_below: float = 0.07,
        shorten_above: float = 0.12,
        retry_epochs: int = 4,
        max_retry_epochs: int = 240,
        min_groups: int = 10,
        min_group_items: float = 4.0,
        idle: Callable[[], float] = loop_idle.idle_seconds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._delays = sorted(delays_s)
        self._epoch_s = epoch_s
        self._judge_epochs = judge_epochs
        self._lengthen_below = lengthen_below
        self._shorten_above = shorten_above
        self._retry_epochs = retry_epochs
        self._max_retry_epochs = max_retry_epochs
        self._min_groups = min_groups
        self._min_group_items = min_group_items
        self._idle = idle
        self._clock = clock
        self._level = 0  # the index of the wait in use
        self._shares: list[float] = []  # idle shares of the epochs at this wait not yet judged
        self._settling = 0  # epochs to leave out after the wait changed
        self._retry_in: list[int] = []  # per wait: epochs until it may be tried again
        self._backoff: list[int] = []  # per wait: retry_in the next time it is left
        self._restart()
        self._epoch_start = clock()
        # Read at the first tick: the tuner may be made before its loop runs.
        self._idle_start: float | None = None
        self._items = 0
        self._groups = 0

    @property
    def delay_s(self) -> float:
        """The wait of a group starting now."""
        self._tick()
        return self._delays[self._level]

    @property
    def chosen_s(self) -> float:
        """The wait in use, as last judged (for the metrics: read from anywhere)."""
        return self._delays[self._level]

    def written(self, items: int) -> None:
        """A group of `items` was written."""
        self._tick()
        self._items += items
        self._groups += 1

    def _restart(self) -> None:
        self._level, self._shares, self._settling = 0, [], 0
        self._retry_in = [0] * len(self._delays)
        self._backoff = [self._retry_epochs] * len(self._delays)

    def _tick(self) -> None:
        now = self._clock()
        elapsed = now - self._epoch_start
        if elapsed < self._epoch_s and self._idle_start is not None:
            return
        idle = self._idle()
        share = None if self._idle_start is None else (idle - self._idle_start) / elapsed
        light = (
            self._groups < self._min_groups
            and self._items < max(self._groups, 1) * self._min_group_items
        )
        self._epoch_start, self._idle_start, self._items, self._groups = now, idle, 0, 0
        if share is None:
            return
        if light:
            self._restart()
            return
        self._retry_in = [max(0, left - 1) for left in self._retry_in]
        if self._settling:
            self._settling -= 1
            return
        self._shares.append(share)
        if len(self._shares) >= self._judge_epochs:
            self._judge(fmean(self._shares))

    def _judge(self, share: float) -> None:
        self._shares = []
        level = self._level
        if share > self._shorten_above and level > 0:
            # Calls wait on this wait's groups: back one step, and this wait only later again.
            self._retry_in[level] = self._backoff[level]
            self._backoff[level] = min(2 * self._backoff[level], self._max_retry_epochs)
            self._level, self._settling = level - 1, 1
        elif (
            share < self._lengthen_below
            and level + 1 < len(self._delays)
            and not self._retry_in[level + 1]
        ):
            self._level, self._settling = level + 1, 1


def _end_wait(waiting: asyncio.Future[None]) -> None:
    if not waiting.done():
        waiting.set_result(None)


class GroupCommitter(Generic[Item, Result]):
    """Queues items and hands them to `write` in groups of at most `max_items`.

    A group is flushed when it is full, or `max_delay_s` after the committer turned to it: when
    its first item arrived, or, for items that waited for a group in flight, when that group
    was written (so a busy committer gathers for longer). With a `longest_delay_s`, a
    LingerTuner picks that wait among max_delay_s, twice it, four times it, ... up to
    longest_delay_s. Up to `max_in_flight` groups are written at once, so that a slow
    group (a lost race for a session's slots, say) does not hold up the others, but a further
    group starts beside one in flight only when at least `parallel_min_items` are waiting: a
    trickle of small requests (unary calls) otherwise goes out in many small groups, each paying
    the fixed cost of its database commands, where waiting for the group in flight gathers them
    into one. Items with the same `key` (a co-browsing session) are never in two groups in
    flight at once, so they reach the database in the order they were submitted. Items without
    a key (None) go in any group. When more wait than a group holds and a second group could go
    beside it, a group takes the items of half of the keys waiting (in order, with everything
    of its keys that fits), so that the rest can: streams of many sessions then keep two
    inserts in flight instead of one (four co-browsing streams: 7 % more events a second,
    median of fifteen pairs, bench/results/ingest_ab_session50.md). Each submitter is answered only
    with its own item's result, after `write` returned, i.e. after the database acknowledged
    the group.
    """

    def __init__(
        self,
        write: Callable[[list[Item]], Awaitable[list[Result | AuditLogError]]],
        *,
        max_items: int,
        max_delay_s: float,
        max_in_flight: int = 1,
        parallel_min_items: int = 0,
        key: Callable[[Item], Hashable | None] | None = None,
        longest_delay_s: float = 0.0,
    ) -> None:
        self._write = write
        self._max_items = max_items
        self._max_delay_s = max_delay_s
        self._tuner: LingerTuner | None = None
        if max_delay_s > 0 and longest_delay_s >= 2 * max_delay_s:
            delays = [max_delay_s]
            while delays[-1] * 2 <= longest_delay_s:
                delays.append(delays[-1] * 2)
            self._tuner = LingerTuner(delays)
        self._max_in_flight = max(1, max_in_flight)
        self._parallel_min_items = parallel_min_items
        self._key = key or (lambda item: None)
        self._pending: list[_Entry[Item, Result]] = []
        # The queue in runs, one per submission (its entries' count and keys): a group's look
        # takes or leaves a run whose keys are all free, or all blocked, whole, and looks at
        # each entry only of a run that is neither (a stream's batch of one session's events
        # is one or the other).
        self._runs: list[tuple[int, set[Hashable | None]]] = []
        self._busy_keys: set[Hashable] = set()
        # While the keys in flight stay as they are: how many runs and entries at the queue's
        # front the last look found blocked, and their keys. A stream's batches queued behind
        # its session's group in flight are then looked at once, not again with every batch
        # queued after them.
        self._stuck: tuple[int, int, set[Hashable]] = (0, 0, set())
        self._flushes: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        # While the scheduler waits for a change: how many pending items end its wait too (None:
        # only a group written does). Waking it for every item queued cost each unary call a
        # turn of the scheduler's task and a new future, to find it still had to wait.
        self._wake_at: int | None = None
        # While a group lingers: the future that ends the wait, and how many waiting end it.
        self._linger: asyncio.Future[None] | None = None
        self._linger_until = 0

    @property
    def idle(self) -> bool:
        return self._scheduler is None and not self._pending and not self._flushes

    @property
    def in_flight(self) -> int:
        return len(self._flushes)

    @property
    def chosen_delay_s(self) -> float:
        """How long a group of a trickle waits for more (between the tuner's tries)."""
        return self._max_delay_s if self._tuner is None else self._tuner.chosen_s

    def submit_nowait(self, item: Item) -> asyncio.Future[Result | AuditLogError]:
        waiter: _Waiter[Result] = _Waiter(1, single=True)
        self._queue([(item, waiter, 0, self._key(item))])
        return waiter.future

    def submit_batch(self, items: list[Item]) -> asyncio.Future[list[Result | AuditLogError]]:
        """Queue items that are answered together: one future for all of them (a future per
        item, gathered, cost 2 µs an item), resolved once the last of them was written."""
        waiter: _Waiter[Result] = _Waiter(len(items))
        if not items:
            waiter.future.set_result([])
            return waiter.future
        # Built by C-level iterators: a list comprehension cost 0.5 us an item in a profile.
        self._queue(list(zip(items, repeat(waiter), count(), map(self._key, items))))
        return waiter.future

    def _queue(self, entries: list[_Entry[Item, Result]]) -> None:
        self._pending.extend(entries)
        self._runs.append((len(entries), _keys_of(entries)))
        if self._wake_at is not None and len(self._pending) >= self._wake_at:
            self._changed.set()
        if self._linger is not None and len(self._pending) >= self._linger_until:
            _end_wait(self._linger)
        if self._scheduler is None:
            self._scheduler = asyncio.create_task(self._schedule())

    async def submit(self, item: Item) -> Result | AuditLogError:
        # The future is this caller's own: a caller that goes away cancels only it, and the
        # write that others share (the committer's task) goes on; no shield needed.
        return await self.submit_nowait(item)

    async def submit_many(self, items: list[Item]) -> list[Result | AuditLogError]:
        return await self.submit_batch(items)

    async def drain(self) -> None:
        """Wait until everything submitted so far has been written."""
        while self._scheduler is not None or self._flushes:
            if self._scheduler is not None:
                await asyncio.shield(self._scheduler)
            if self._flushes:
                await asyncio.shield(asyncio.gather(*self._flushes, return_exceptions=True))

    def _take_group(self) -> list[_Entry[Item, Result]]:
        """The next group: pending items in order, skipping (with all later items of the same
        key) those whose key is in a group in flight, or left for a group beside this one
        (_key_limit)."""
        if not self._busy_keys and len(self._pending) <= self._max_items:
            # Nothing in flight to wait for and room for all: the whole queue, as it is.
            whole, self._pending, self._runs = self._pending, [], []
            return whole
        group: list[_Entry[Item, Result]] = []
        pending, runs, busy = self._pending, self._runs, self._busy_keys
        limit = self._key_limit()
        # The group's keys but None, counted only against a limit (_schedule takes the keys
        # in flight from the group itself).
        taken: set[Hashable | None] = set()
        stuck_runs, stuck_entries, blocked = self._stuck
        rest, rest_runs = pending[:stuck_entries], runs[:stuck_runs]
        room, position = self._max_items, stuck_entries
        for run_index in range(stuck_runs, len(runs)):
            length, keys = runs[run_index]
            entries = pending[position : position + length]
            position += length
            left: list[_Entry[Item, Result]] = []
            if keys.isdisjoint(busy) and keys.isdisjoint(blocked):
                if limit is not None:
                    new_keys = len(keys - taken) - (None in keys)
                    if group and new_keys and len(taken) + new_keys > limit:
                        # Keys left for a group beside this one (see _key_limit).
                        blocked |= keys - {None}
                        rest += entries
                        rest_runs.append((length, keys))
                        continue
                    taken |= keys
                    taken.discard(None)
                group += entries[:room]
                left = entries[room:]
                room -= length - len(left)
            elif keys <= busy | blocked:
                blocked |= keys
                rest += entries
                rest_runs.append((length, keys))
                continue
            else:
                for n, entry in enumerate(entries):
                    key = entry[3]
                    if key is not None and (
                        key in busy
                        or key in blocked
                        or (limit is not None and key not in taken and len(taken) >= limit)
                    ):
                        blocked.add(key)
                        left.append(entry)
                        continue
                    if limit is not None and key is not None:
                        taken.add(key)
                    group.append(entry)
                    room -= 1
                    if not room:
                        left += entries[n + 1 :]
                        break
            if left:
                rest += left
                rest_runs.append((len(left), _keys_of(left)))
            if not room:  # the rest wait for the next group, as they are
                rest += pending[position:]
                rest_runs += runs[run_index + 1 :]
                break
        self._pending, self._runs = rest, rest_runs
        # A group short of full left behind only what is blocked, and taking it only adds keys
        # in flight; one that is full may have left items that could go.
        full = len(group) >= self._max_items
        # Keys left for a group beside this one are free for the next look.
        kept = full or limit is not None
        self._stuck = (0, 0, set()) if kept else (len(rest_runs), len(rest), blocked)
        return group

    def _key_limit(self) -> int | None:
        """How many keys a group may take: half of those waiting, when more wait than a group
        holds and a second group could start beside it now (None: any). Otherwise a group of a
        queue that several streams filled takes events of every session, and the next finds
        them all in flight: one insert at a time, where the database would take two."""
        if len(self._pending) <= self._max_items or self._max_in_flight - len(self._flushes) < 2:
            return None
        waiting: set[Hashable | None] = set().union(*map(itemgetter(1), self._runs))
        waiting.discard(None)
        return len(waiting) // 2 if len(waiting) >= 2 else None

    async def _schedule(self) -> None:
        try:
            while self._pending:
                if self._flushes and len(self._flushes) >= self._max_in_flight:
                    await self._wait_for_change(None)
                    continue
                if self._flushes and len(self._pending) < self._parallel_min_items:
                    await self._wait_for_change(self._parallel_min_items)
                    continue
                if self._max_delay_s > 0 and len(self._pending) < self._max_items:
                    await self._wait_for_more()
                group = self._take_group()
                if not group:
                    # Every pending key is in flight: a group written, or any new item, may
                    # make a group.
                    await self._wait_for_change(len(self._pending) + 1)
                    continue
                keys = set(map(itemgetter(3), group))
                keys.discard(None)
                self._busy_keys |= keys
                flush = asyncio.create_task(self._flush(group, keys))
                self._flushes.add(flush)
        finally:
            self._scheduler = None
            if self._pending:  # submitted while the scheduler was finishing
                self._scheduler = asyncio.create_task(self._schedule())

    def _linger_s(self) -> float:
        # The tuned wait is for a trickle of small calls, which it was measured on (unary
        # LogEvent); with a hundred events waiting, a group's fixed cost is spread thin already,
        # and 100-event stream messages showed no gain from it (bench A/B, 2026-12-05).
        if self._tuner is None or len(self._pending) >= self._trickle_below():
            return self._max_delay_s
        return self._tuner.delay_s

    def _trickle_below(self) -> int:
        return min(max(1, self._parallel_min_items), self._max_items)

    async def _wait_for_more(self) -> None:
        """Linger so that concurrent callers share one insert instead of one each. A tuned
        (longer) wait ends when the trickle stops being one (a batch or stream message came),
        any wait when the group is full: they would only hold those events back."""
        delay = self._linger_s()
        if delay <= self._max_delay_s:
            self._linger_until = self._max_items
        else:
            self._linger_until = self._trickle_below()
        loop = asyncio.get_running_loop()
        self._linger = linger = loop.create_future()
        timer = loop.call_later(delay, _end_wait, linger)
        try:
            await linger
        finally:
            timer.cancel()
            self._linger = None

    async def _wait_for_change(self, items: int | None) -> None:
        """Until a group in flight was written or, with `items`, that many items are pending."""
        self._wake_at = items
        self._changed.clear()
        try:
            await self._changed.wait()
        finally:
            self._wake_at = None

    async def _flush(
        self,
        group: list[_Entry[Item, Result]],
        keys: set[Hashable],
    ) -> None:
        results: list[Result | AuditLogError] | None = None
        failure: BaseException | None = None
        try:
            # The items by a C-level iterator: a comprehension cost 0.3 us an item in a profile.
            results = await self._write(list(map(itemgetter(0), group)))
            if self._tuner is not None:
                self._tuner.written(len(group))
        except AuditLogError as exc:
            results = [exc] * len(group)
        except Exception as exc:  # a bug: report it to every waiter, keep serving
            log.exception("group write failed")
            failure = exc
        finally:
            self._busy_keys -= keys
            self._stuck = (0, 0, set())  # what was blocked may go now
            task = asyncio.current_task()
            if task is not None:
                self._flushes.discard(task)
            self._changed.set()
            if self._pending and self._scheduler is None:
                self._scheduler = asyncio.create_task(self._schedule())
        if results is None:
            for _, waiter, _, _ in group:
                waiter.fail(failure or RuntimeError("group write failed"))
            return
        if len(results) != len(group):
            raise ValueError("a group write answered a different number of items")
        # Each submission's part of the group at once (a call per item cost 0.2 us an item in
        # a profile): its entries are consecutive in the group, and so are their places in the
        # submission unless items of it were held back for a busy key.
        start = 0
        for waiter, same in groupby(map(itemgetter(1), group)):
            end = start + len(list(same))
            first, last = group[start][2], group[end - 1][2]
            if last - first == end - start - 1:
                waiter.answer_span(first, results[start:end])
            else:
                for entry, result in zip(group[start:end], results[start:end], strict=True):
                    waiter.answer(entry[2], result)
            start = end


def _keys_of(entries: list[_Entry[Any, Any]]) -> set[Hashable | None]:
    """The keys of queued entries, None among them where an entry has none (such a run is
    never all blocked), by a C-level iterator."""
    return set(map(itemgetter(3), entries))


class _Waiter(Generic[Result]):
    """What the submitters of one submission wait on: its items' results, in submission order,
    once all of them are in (items of one submission may go out in several groups)."""

    __slots__ = ("future", "left", "results", "single")

    def __init__(self, size: int, *, single: bool = False) -> None:
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.results: list[Result | AuditLogError | None] = [None] * size
        self.left = size
        self.single = single

    def answer(self, index: int, result: Result | AuditLogError) -> None:
        self.results[index] = result
        self.left -= 1
        if not self.left and not self.future.done():
            self.future.set_result(self.results[0] if self.single else self.results)

    def answer_span(self, first: int, results: list[Result | AuditLogError]) -> None:
        """The results of items first, first + 1, ... of the submission."""
        self.results[first : first + len(results)] = results
        self.left -= len(results)
        if not self.left and not self.future.done():
            self.future.set_result(self.results[0] if self.single else self.results)

    def fail(self, failure: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(failure)


# A queued item: the item, its submission's waiter, its place in that submission, and its key
# (taken once: a group's scan looks again at every item still waiting behind a busy key).
_Entry = tuple[Item, _Waiter[Result], int, Hashable | None]
