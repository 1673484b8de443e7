"""Client-generated event ids: UUIDv7 (RFC 9562), time-ordered and monotonic within a process."""

from __future__ import annotations

import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable

_MAX_COUNTER = 0xFFF  # rand_a holds a 12-bit counter (RFC 9562 section 6.2, method 1)


class UUID7Generator:
    """UUIDv7s that sort in creation order within this process, even within one millisecond.

    The 12-bit rand_a field is a counter, seeded randomly in its lower half at each new
    millisecond and incremented while the clock stands still (or steps back), so at least 2,048
    ids fit in one millisecond; when it runs out, the timestamp is advanced by one millisecond,
    as RFC 9562 allows. The 62 bits of rand_b stay random.
    """

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._millis = -1
        self._counter = 0
        self._random = b""  # os.urandom bytes not used yet, taken 8 at a time
        self._random_at = 0
        _GENERATORS.add(self)

    def _forget_random(self) -> None:
        self._random, self._random_at = b"", 0

    def __call__(self) -> uuid.UUID:
        return uuid.UUID(int=self.value())

    def value(self) -> int:
        """A new UUIDv7 as an integer (formatting it is the caller's choice)."""
        now = self._clock_ns() // 1_000_000
        with self._lock:
            # One system call per 512 ids: os.urandom per id was a fifth of an id's cost.
            if self._random_at + 8 > len(self._random):
                self._random, self._random_at = os.urandom(4096), 0
            at = self._random_at
            self._random_at = at + 8
            rand_b = int.from_bytes(self._random[at : at + 8], "big") & ((1 << 62) - 1)
            if now > self._millis:
                self._millis = now
                self._counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
            elif self._counter < _MAX_COUNTER:
                self._counter += 1
            else:
                self._millis += 1
                self._counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
            millis, counter = self._millis, self._counter
        value = (millis & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76  # version 7
        value |= counter << 64
        value |= 0b10 << 62  # RFC 9562 variant
        value |= rand_b
        return value


# Every generator of this process, for one fork hook (a hook per generator would keep each
# one alive for good).
_GENERATORS: weakref.WeakSet[UUID7Generator] = weakref.WeakSet()


def _forget_random_in_child() -> None:
    # A child process must not reuse the parent's unused random bytes (equal ids).
    for generator in list(_GENERATORS):
        generator._forget_random()


os.register_at_fork(after_in_child=_forget_random_in_child)

_GENERATOR = UUID7Generator()


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48-bit Unix milliseconds, version 7, a 12-bit counter, 62 random bits.

    >>> a, b = uuid7(), uuid7()
    >>> (a.version, a < b)
    (7, True)
    """
    return _GENERATOR()


def new_event_id() -> str:
    """A fresh idempotency key for an event (a UUIDv7 string); a retry must reuse it.

    >>> len(new_event_id())
    36
    """
    # Formatted here rather than through uuid.UUID: a third of the cost.
    digits = f"{_GENERATOR.value():032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
