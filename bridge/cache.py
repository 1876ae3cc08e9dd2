"""A bounded in-process cache that forgets everything when a shared generation moves.

This module owns :class:`GenerationCache`: a least-recently-used map of at most
``size`` entries (a miss may be kept too, so a stranger's random keys do not
reach the source every time, and cannot grow memory), valid while a generation
number kept elsewhere (a database row every process shares) stays the same. The
generation is read at most once per ``interval`` seconds; when it moved, or when
the owner says its own process changed the source (:meth:`GenerationCache.invalidate`),
every entry goes at once. A value loaded by a read that began before such a drop
is returned but not kept, so a slow reader never puts back what a drop removed.
It knows no registration and no database: the generation and the values come
from callables. Safe to share between threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Missing:
    """The type of :data:`MISSING`."""

    def __repr__(self) -> str:
        return "MISSING"


#: What :meth:`GenerationCache.peek` answers when only the source can tell.
MISSING: Final = Missing()


class GenerationCache(Generic[K, V]):
    """Values by key, at most ``size`` of them, dropped together when the generation moves."""

    def __init__(
        self,
        read_generation: Callable[[], int],
        *,
        interval: float,
        size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError("a cache holds at least one entry")
        self._read_generation = read_generation
        self._interval = interval
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._generation: int | None = None
        #: When the generation must be read again (clock time); 0: at the next look-up.
        self._due = 0.0
        #: Counts the drops, so a load that began before one is not kept.
        self._epoch = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The value of ``key``: kept, or ``load()`` (kept unless a drop came meanwhile).

        An exception from ``load`` or from reading the generation propagates, and
        nothing is kept.
        """
        self._refresh()
        with self._lock:
            found = self._entries.get(key, MISSING)
            if not isinstance(found, Missing):
                self._entries.move_to_end(key)
                return found
            epoch = self._epoch
        value = load()
        with self._lock:
            if epoch == self._epoch:
                self._entries[key] = value
                self._entries.move_to_end(key)
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
        return value

    def peek(self, key: K) -> V | Missing:
        """The kept value of ``key`` when it can be trusted without reading the
        generation (read less than ``interval`` ago); :data:`MISSING` otherwise."""
        with self._lock:
            if self._clock() >= self._due:
                return MISSING
            found = self._entries.get(key, MISSING)
            if not isinstance(found, Missing):
                self._entries.move_to_end(key)
            return found

    def invalidate(self) -> None:
        """Drop every entry now (this process changed the source)."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        self._entries.clear()
        self._epoch += 1

    def _refresh(self) -> None:
        """Read the generation if it is due (one reader; the others use the entries
        meanwhile), and drop everything if it moved."""
        with self._lock:
            now = self._clock()
            if now < self._due:
                return
            self._due = now + self._interval
        try:
            generation = self._read_generation()
        except BaseException:
            with self._lock:
                self._due = 0.0  # unknown: the next look-up tries again
            raise
        with self._lock:
            if generation != self._generation:
                self._generation = generation
                self._drop()
