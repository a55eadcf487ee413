"""A small work queue for level-based reconciling, in the operator's asyncio loop.

Keys (namespace, name) are added by watch events and by timers; each key is processed by
one worker at a time, a key added while it is being processed runs once more afterwards,
and a worker's answer schedules the next look (expiry, cooldown) or a backoff after an
error. Only keys with a pending timer cost memory: terminal proposals cost nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Hashable

log = logging.getLogger("scalegate.workqueue")

Worker = Callable[[Hashable], Awaitable[float | None]]


class WorkQueue:
    def __init__(self, worker: Worker, concurrency: int = 16, min_backoff: float = 0.5, max_backoff: float = 60.0):
        self._worker = worker
        self._concurrency = concurrency
        self._min_backoff, self._max_backoff = min_backoff, max_backoff
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._timers: dict[Hashable, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[Hashable, int] = {}
        self._tasks: list[asyncio.Task] = []

    # -- adding work -------------------------------------------------------------------
    def add(self, key: Hashable, delay: float = 0.0) -> None:
        """Process `key` now, or after `delay` seconds (the earliest request wins)."""
        if delay > 0:
            loop = asyncio.get_running_loop()
            due = loop.time() + delay
            current = self._timers.get(key)
            if current and current[0] <= due:
                return
            if current:
                current[1].cancel()
            self._timers[key] = (due, loop.call_at(due, self._fire, key))
            return
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: Hashable) -> None:
        """Drop timers and backoff of a key that no longer needs work (deleted, terminal)."""
        timer = self._timers.pop(key, None)
        if timer:
            timer[1].cancel()
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._queued) + len(self._processing)

    @property
    def scheduled(self) -> int:
        return len(self._timers)

    # -- running -----------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name=f"scalegate-worker-{i}")
                       for i in range(self._concurrency)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    async def _run(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._processing.add(key)
            try:
                again = await self._worker(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                again = min(self._max_backoff, self._min_backoff * 2 ** (failures - 1))
                log.warning("reconciling %s failed (%s: %s); retrying in %.1fs",
                            key, type(err).__name__, err, again)
            finally:
                self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif again is not None:
                self.add(key, again)
