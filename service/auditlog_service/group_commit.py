"""Group commit: concurrent submissions are written together, one database round trip per group."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from .errors import AuditLogError

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger(__name__)


class GroupCommitter(Generic[Item, Result]):
    """Queues items and hands them to `write` in groups of at most `max_items`.

    A group is flushed when it is full, or `max_delay_s` after its first item arrived. Up to
    `max_in_flight` groups are written at once, so that a slow group (a lost race for a
    session's slots, say) does not hold up the others, but a further group starts beside one in
    flight only when at least `parallel_min_items` are waiting: a trickle of small requests
    (unary calls) otherwise goes out in many small groups, each paying the fixed cost of its
    database commands, where waiting for the group in flight gathers them into one. Items with
    the same `key` (a co-browsing session) are never in two groups in flight at once, so they
    reach the database in the order they were submitted. Items without a key (None) go in any
    group. Each submitter is answered only with its own item's result, after `write` returned,
    i.e. after the database acknowledged the group.
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
    ) -> None:
        self._write = write
        self._max_items = max_items
        self._max_delay_s = max_delay_s
        self._max_in_flight = max(1, max_in_flight)
        self._parallel_min_items = parallel_min_items
        self._key = key or (lambda item: None)
        self._pending: list[_Entry[Item, Result]] = []
        self._busy_keys: set[Hashable] = set()
        self._flushes: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def idle(self) -> bool:
        return self._scheduler is None and not self._pending and not self._flushes

    @property
    def in_flight(self) -> int:
        return len(self._flushes)

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
        key = self._key
        self._queue([(item, waiter, index, key(item)) for index, item in enumerate(items)])
        return waiter.future

    def _queue(self, entries: list[_Entry[Item, Result]]) -> None:
        self._pending.extend(entries)
        self._changed.set()
        if self._scheduler is None:
            self._scheduler = asyncio.create_task(self._schedule())

    async def submit(self, item: Item) -> Result | AuditLogError:
        # Shielded: a caller that goes away does not cancel a write that others share.
        return await asyncio.shield(self.submit_nowait(item))

    async def submit_many(self, items: list[Item]) -> list[Result | AuditLogError]:
        return await asyncio.shield(self.submit_batch(items))

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
        group: list[_Entry[Item, Result]] = []
        rest: list[_Entry[Item, Result]] = []
        blocked: set[Hashable] = set()
        for entry in self._pending:
            key = entry[3]
            if len(group) >= self._max_items or (
                key is not None and (key in self._busy_keys or key in blocked)
            ):
                if key is not None:
                    blocked.add(key)
                rest.append(entry)
            else:
                group.append(entry)
        self._pending = rest
        return group

    async def _schedule(self) -> None:
        try:
            while self._pending:
                if self._flushes and (
                    len(self._flushes) >= self._max_in_flight
                    or len(self._pending) < self._parallel_min_items
                ):
                    await self._wait_for_change()
                    continue
                if self._max_delay_s > 0 and len(self._pending) < self._max_items:
                    # Linger so that concurrent callers share one insert instead of one each.
                    await asyncio.sleep(self._max_delay_s)
                group = self._take_group()
                if not group:
                    await self._wait_for_change()  # every pending key is in flight
                    continue
                keys = {entry[3] for entry in group if entry[3] is not None}
                self._busy_keys |= keys
                flush = asyncio.create_task(self._flush(group, keys))
                self._flushes.add(flush)
        finally:
            self._scheduler = None
            if self._pending:  # submitted while the scheduler was finishing
                self._scheduler = asyncio.create_task(self._schedule())

    async def _wait_for_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    async def _flush(
        self,
        group: list[_Entry[Item, Result]],
        keys: set[Hashable],
    ) -> None:
        results: list[Result | AuditLogError] | None = None
        failure: BaseException | None = None
        try:
            results = await self._write([entry[0] for entry in group])
        except AuditLogError as exc:
            results = [exc] * len(group)
        except Exception as exc:  # a bug: report it to every waiter, keep serving
            log.exception("group write failed")
            failure = exc
        finally:
            self._busy_keys -= keys
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
        for (_, waiter, index, _), result in zip(group, results, strict=True):
            waiter.answer(index, result)


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

    def fail(self, failure: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(failure)


# A queued item: the item, its submission's waiter, its place in that submission, and its key
# (taken once: a group's scan looks again at every item still waiting behind a busy key).
_Entry = tuple[Item, _Waiter[Result], int, Hashable | None]
