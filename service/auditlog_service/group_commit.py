"""Group commit: concurrent submissions are written together, one database round trip per group."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from .errors import AuditLogError

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger(__name__)


class GroupCommitter(Generic[Item, Result]):
    """Queues items and hands them to `write` in groups of at most `max_items`.

    A group is flushed when it is full, or `max_delay_s` after its first item arrived, or at once
    while a write is in flight nothing is lost: items that arrive meanwhile form the next group.
    Each submitter is answered only with its own item's result, after `write` returned, i.e.
    after the database acknowledged the group.
    """

    def __init__(
        self,
        write: Callable[[list[Item]], Awaitable[list[Result | AuditLogError]]],
        *,
        max_items: int,
        max_delay_s: float,
    ) -> None:
        self._write = write
        self._max_items = max_items
        self._max_delay_s = max_delay_s
        self._pending: deque[tuple[Item, asyncio.Future[Result | AuditLogError]]] = deque()
        self._flusher: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        return self._flusher is None and not self._pending

    def submit_nowait(self, item: Item) -> asyncio.Future[Result | AuditLogError]:
        future: asyncio.Future[Result | AuditLogError] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())
        return future

    async def submit(self, item: Item) -> Result | AuditLogError:
        # Shielded: a caller that goes away does not cancel a write that others share.
        return await asyncio.shield(self.submit_nowait(item))

    async def submit_many(self, items: list[Item]) -> list[Result | AuditLogError]:
        futures = [self.submit_nowait(item) for item in items]
        return list(await asyncio.shield(asyncio.gather(*futures)))

    async def drain(self) -> None:
        """Wait until everything submitted so far has been written."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                if self._max_delay_s > 0 and len(self._pending) < self._max_items:
                    # Linger so that concurrent callers share one insert instead of one each.
                    await asyncio.sleep(self._max_delay_s)
                group = [
                    self._pending.popleft() for _ in range(min(self._max_items, len(self._pending)))
                ]
                await self._flush(group)
        finally:
            self._flusher = None
            if self._pending:  # submitted while the last flush was finishing
                self._flusher = asyncio.create_task(self._flush_all())

    async def _flush(
        self, group: list[tuple[Item, asyncio.Future[Result | AuditLogError]]]
    ) -> None:
        results: list[Result | AuditLogError] | None = None
        failure: BaseException | None = None
        try:
            results = await self._write([item for item, _ in group])
        except AuditLogError as exc:
            results = [exc] * len(group)
        except Exception as exc:  # a bug: report it to every waiter, keep serving
            log.exception("group write failed")
            failure = exc
        for index, (_, future) in enumerate(group):
            if future.done():
                continue
            if results is not None:
                future.set_result(results[index])
            else:
                future.set_exception(failure or RuntimeError("group write failed"))
