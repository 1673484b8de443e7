"""How long the event loop has sat idle: waiting for I/O with no callback ready to run."""

from __future__ import annotations

import asyncio
import selectors
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class IdleTimingSelector(selectors.DefaultSelector):
    """The platform's default selector, adding up the time its blocking selects took.

    asyncio asks for a select with a timeout of zero while callbacks are ready, and a blocking
    one (a timeout above zero, or none) only when nothing is: the time spent in those is the
    time the loop had nothing to do, whatever other processes did with the CPU meanwhile.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self.idle_s = 0.0
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return super().select(timeout)
        started = self._clock()
        try:
            return super().select(timeout)
        finally:
            self.idle_s += self._clock() - started


# The selector of each loop made here, by loop: what idle_seconds reads.
_selectors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, IdleTimingSelector] = (
    weakref.WeakKeyDictionary()
)


def new_event_loop(clock: Callable[[], float] = time.perf_counter) -> asyncio.AbstractEventLoop:
    """An asyncio event loop whose idle time idle_seconds can tell (read from `clock`)."""
    selector = IdleTimingSelector(clock)
    loop = asyncio.SelectorEventLoop(selector)
    _selectors[loop] = selector
    return loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on a loop from new_event_loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def idle_seconds() -> float:
    """The running loop's idle time so far, in seconds (only differences mean anything).

    On a loop not made here (uvloop, a test's) or none, the thread's time off the CPU stands in
    for it: that also counts the time the loop was ready to run but other processes had the
    CPU, so it reads idler than the loop was where the machine is busy.
    """
    try:
        selector = _selectors.get(asyncio.get_running_loop())
    except RuntimeError:  # no loop runs in this thread
        selector = None
    if selector is not None:
        return selector.idle_s
    return time.monotonic() - time.thread_time()
