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

from .errors import AuditLogError

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger(__name__)


class LingerTuner:
    """How long a group that is not full waits for more: the shortest of `delays_s` that writes
    about as many items a second as a longer one, found by trying a neighbour now and then.

    Why: each group costs its fixed database commands. When callers outnumber what the server
    and the database can answer (the machine's CPU is the limit), a longer wait makes fewer,
    larger groups, and more items a second go through (unary LogEvent, 64 closed-loop callers:
    5 ms instead of 1.5, +8-27 %); when they do not, a longer wait only adds to every call's
    latency (16 callers: -36 %). No figure inside the process told the two apart, so the tuner
    measures the one that matters, items written a second: in epochs of `epoch_s` at the wait
    in use, and, after every `probe_every` of them, for `probe_epochs` at a neighbour. A longer
    wait is kept when it writes `gain_longer` times as many as the epochs before it, a shorter
    one when it writes at least `keep_shorter` times as many. A probe that loses waits twice as
    many epochs for its next try (up to `max_probe_every`). A probe that wins is followed at
    once by one further the same way, and the wait just left is tried again only later: in
    the tests' simulation a load that pays for 6 ms gets there after 2.4 s of epochs instead of
    3.9 (the other way was probed first, and lost, at every step). An epoch of light load,
    fewer than `min_groups` groups of fewer than `min_group_items` items on average, goes
    straight back to the shortest wait. Few groups alone are not light: a long wait makes few
    groups by itself (unary LogEvent, 64 callers: epochs of the 12 ms probe wrote 7-12 groups
    of 29-35 events, and where fewer than 10, the rule as it was sent the tuner from 6 ms back
    to 1.5 ms, twice in 11 s).
    """

    def __init__(
        self,
        delays_s: Sequence[float],
        *,
        epoch_s: float = 0.2,
        probe_every: int = 3,
        probe_epochs: int = 2,
        max_probe_every: int = 100,
        gain_longer: float = 1.08,
        keep_shorter: float = 1.0,
        min_groups: int = 10,
        min_group_items: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._delays = sorted(delays_s)
        self._epoch_s = epoch_s
        self._probe_every = probe_every
        self._probe_epochs = probe_epochs
        self._max_probe_every = max_probe_every
        self._gain_longer = gain_longer
        self._keep_shorter = keep_shorter
        self._min_groups = min_groups
        self._min_group_items = min_group_items
        self._clock = clock
        self._level = 0  # the index of the wait in use
        self._trial: int | None = None  # the neighbour being tried
        self._steady: list[float] = []  # items a second in the epochs at the level since a probe
        self._tried: list[float] = []  # the same in the epochs of the probe under way
        # Epochs to leave out after the wait changed: the queue that the old wait left behind
        # (longer: a backlog; shorter: fewer waiting) flatters or wrongs the new one at first.
        self._settling = 0
        self._interval: dict[int, int] = {}  # per direction (-1, +1): epochs between probes
        self._due: dict[int, int] = {}  # per direction: steady epochs until its next probe
        self._restart()
        self._epoch_start = clock()
        self._items = 0
        self._groups = 0

    @property
    def delay_s(self) -> float:
        """The wait of a group starting now (the neighbour's during a probe)."""
        self._tick()
        return self._delays[self._level if self._trial is None else self._trial]

    @property
    def chosen_s(self) -> float:
        """The wait in use between probes."""
        self._tick()
        return self._delays[self._level]

    def written(self, items: int) -> None:
        """A group of `items` was written."""
        self._tick()
        self._items += items
        self._groups += 1

    def _restart(self, level: int = 0) -> None:
        self._level, self._trial = level, None
        self._steady, self._tried = [], []
        self._interval = {-1: self._probe_every, 1: self._probe_every}
        self._due = dict(self._interval)
        self._order = (-1, 1)  # which neighbour is tried first when both are due

    def _tick(self) -> None:
        now = self._clock()
        elapsed = now - self._epoch_start
        if elapsed < self._epoch_s:
            return
        rate = self._items / elapsed
        light = (
            self._groups < self._min_groups
            and self._items < max(self._groups, 1) * self._min_group_items
        )
        self._epoch_start, self._items, self._groups = now, 0, 0
        if light:
            self._restart()
        elif self._settling:
            self._settling -= 1
        elif self._trial is not None:
            self._tried.append(rate)
            if len(self._tried) >= self._probe_epochs:
                self._judge(self._trial, fmean(self._tried))
        else:
            self._steady.append(rate)
            for direction in self._order:
                self._due[direction] -= 1
                neighbour = self._level + direction
                if (
                    self._due[direction] <= 0
                    and 0 <= neighbour < len(self._delays)
                    and len(self._steady) >= 2
                ):
                    self._trial, self._tried = neighbour, []
                    self._due[direction] = self._interval[direction]
                    self._settling = 1
                    break

    def _judge(self, trial: int, rate: float) -> None:
        reference = fmean(self._steady)
        direction = 1 if trial > self._level else -1
        factor = self._gain_longer if direction > 0 else self._keep_shorter
        self._settling = 1
        if rate >= reference * factor:
            self._restart(trial)
            # The next wait the same way is tried as soon as this one has a reference (two
            # steady epochs); the one just left, just measured to do no better, only after
            # twice the usual.
            self._order = (direction, -direction)
            self._due[direction] = 1
            self._due[-direction] = 2 * self._probe_every
            return
        self._trial, self._steady = None, []
        self._order = (-1, 1)  # the run of wins is over: the shorter wait first again on a tie
        self._interval[direction] = min(self._interval[direction] * 2, self._max_probe_every)
        self._due[direction] = self._interval[direction]


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
    a key (None) go in any group. Each submitter is answered only with its own item's result,
    after `write` returned, i.e. after the database acknowledged the group.
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
        key) those whose key is in a group in flight."""
        if not self._busy_keys and len(self._pending) <= self._max_items:
            # Nothing in flight to wait for and room for all: the whole queue, as it is.
            whole, self._pending, self._runs = self._pending, [], []
            return whole
        group: list[_Entry[Item, Result]] = []
        pending, runs, busy = self._pending, self._runs, self._busy_keys
        stuck_runs, stuck_entries, blocked = self._stuck
        rest, rest_runs = pending[:stuck_entries], runs[:stuck_runs]
        room, position = self._max_items, stuck_entries
        for run_index in range(stuck_runs, len(runs)):
            length, keys = runs[run_index]
            entries = pending[position : position + length]
            position += length
            left: list[_Entry[Item, Result]] = []
            if keys.isdisjoint(busy) and keys.isdisjoint(blocked):
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
                    if key is not None and (key in busy or key in blocked):
                        blocked.add(key)
                        left.append(entry)
                        continue
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
        self._stuck = (0, 0, set()) if full else (len(rest_runs), len(rest), blocked)
        return group

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
