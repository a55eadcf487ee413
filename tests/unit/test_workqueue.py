"""The asyncio work queue: deduplication, the dirty re-run, delayed adds (earliest wins),
backoff after errors, forget and stop. Each test runs its own event loop with
`asyncio.run`, with delays of at most 0.2 s."""

from __future__ import annotations

import asyncio
import collections
import itertools

import pytest

from scalegate.workqueue import WorkQueue

KEY = ("shop", "web-1")


async def eventually(condition, timeout: float = 5.0) -> None:
    """Wait until `condition()` holds, polling the loop; fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


async def settle(seconds: float = 0.02) -> None:
    await asyncio.sleep(seconds)


class Recorder:
    """A worker that records calls (key, loop time) and answers from a script per call."""

    def __init__(self, answers=None):
        self.calls: list[tuple[object, float]] = []
        self.answers = collections.deque(answers or [])
        self.active: collections.Counter = collections.Counter()
        self.max_active: collections.Counter = collections.Counter()
        self.release: asyncio.Event | None = None

    def count(self, key=KEY) -> int:
        return sum(1 for k, _ in self.calls if k == key)

    async def __call__(self, key):
        self.calls.append((key, asyncio.get_running_loop().time()))
        self.active[key] += 1
        self.max_active[key] = max(self.max_active[key], self.active[key])
        try:
            if self.release is not None:
                await self.release.wait()
            else:
                await asyncio.sleep(0)
            answer = self.answers.popleft() if self.answers else None
            if isinstance(answer, BaseException):
                raise answer
            return answer
        finally:
            self.active[key] -= 1


def run(coro_fn):
    """Run an async test body with a fresh loop."""
    return asyncio.run(asyncio.wait_for(coro_fn(), timeout=5))


# -- deduplication ----------------------------------------------------------------------

def test_a_key_added_many_times_while_queued_is_processed_once():
    async def body():
        worker = Recorder()
        queue = WorkQueue(worker, concurrency=2)
        for _ in range(10):
            queue.add(KEY)
        assert len(queue) == 1
        queue.start()
        await eventually(lambda: worker.count() == 1 and len(queue) == 0)
        await settle()
        assert worker.count() == 1
        await queue.stop()

    run(body)


def test_different_keys_each_run_once_and_in_parallel():
    async def body():
        worker = Recorder()
        worker.release = asyncio.Event()
        queue = WorkQueue(worker, concurrency=3)
        queue.start()
        keys = [("shop", f"p{i}") for i in range(3)]
        for key in keys * 3:
            queue.add(key)
        await eventually(lambda: len(worker.calls) == 3)  # all three at once: none waits for another
        worker.release.set()
        await eventually(lambda: len(queue) == 0)
        await settle()
        assert sorted(k for k, _ in worker.calls) == sorted(keys)
        await queue.stop()

    run(body)


def test_added_while_processing_runs_exactly_once_more_afterwards_never_concurrently():
    async def body():
        worker = Recorder()
        worker.release = asyncio.Event()
        queue = WorkQueue(worker, concurrency=4)
        queue.start()
        queue.add(KEY)
        await eventually(lambda: worker.count() == 1)
        for _ in range(5):
            queue.add(KEY)  # marks it dirty, does not queue it beside the running one
        await settle()
        assert worker.count() == 1
        assert len(queue) == 1
        worker.release.set()
        await eventually(lambda: worker.count() == 2 and len(queue) == 0)
        await settle()
        assert worker.count() == 2
        assert worker.max_active[KEY] == 1
        await queue.stop()

    run(body)


def test_dirty_rerun_takes_precedence_over_the_answered_delay():
    async def body():
        worker = Recorder(answers=[60.0, None])
        worker.release = asyncio.Event()
        queue = WorkQueue(worker, concurrency=1)
        queue.start()
        queue.add(KEY)
        await eventually(lambda: worker.count() == 1)
        queue.add(KEY)
        worker.release.set()
        await eventually(lambda: worker.count() == 2)
        await queue.stop()

    run(body)


# -- the worker's answer ----------------------------------------------------------------

def test_answer_schedules_the_next_look():
    async def body():
        worker = Recorder(answers=[0.05, None])
        queue = WorkQueue(worker, concurrency=1)
        queue.start()
        queue.add(KEY)
        await eventually(lambda: worker.count() == 2)
        gap = worker.calls[1][1] - worker.calls[0][1]
        assert 0.04 <= gap < 0.5
        await settle(0.08)
        assert worker.count() == 2  # None: no further look
        assert queue.scheduled == 0
        await queue.stop()

    run(body)


def test_zero_answer_requeues_at_once():
    async def body():
        worker = Recorder(answers=[0.0, 0.0, None])
        queue = WorkQueue(worker, concurrency=1)
        queue.start()
        queue.add(KEY)
        await eventually(lambda: worker.count() == 3)
        await settle()
        assert worker.count() == 3
        assert queue.scheduled == 0
        await queue.stop()

    run(body)


# -- delayed adds -----------------------------------------------------------------------

@pytest.mark.parametrize("delays", [(0.2, 0.05), (0.05, 0.2)], ids=["later-then-earlier", "earlier-then-later"])
def test_delayed_add_earliest_wins_and_fires_once(delays):
    async def body():
        worker = Recorder()
        queue = WorkQueue(worker, concurrency=1)
        queue.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for delay in delays:
            queue.add(KEY, delay)
        assert queue.scheduled == 1
        due, _handle = queue._timers[KEY]
        assert due - start == pytest.approx(0.05, abs=0.01)
        await eventually(lambda: worker.count() == 1)
        assert worker.calls[0][1] - start >= 0.045
        assert queue.scheduled == 0
        await asyncio.sleep(0.2)
        assert worker.count() == 1  # the later request was dropped, not kept as a second timer
        await queue.stop()

    run(body)


def test_delayed_add_does_not_run_before_its_time():
    async def body():
        worker = Recorder()
        queue = WorkQueue(worker, concurrency=1)
        queue.start()
        queue.add(KEY, 1.0)  # far beyond a stall of the loop on a loaded machine
        await settle(0.05)
        assert worker.count() == 0
        assert len(queue) == 0 and queue.scheduled == 1
        await eventually(lambda: worker.count() == 1)
        await queue.stop()

    run(body)


def test_timers_of_different_keys_are_independent():
    async def body():
        worker = Recorder()
        queue = WorkQueue(worker, concurrency=2)
        queue.start()
        queue.add(("ns", "a"), 0.03)
        queue.add(("ns", "b"), 0.06)
        assert queue.scheduled == 2
        await eventually(lambda: len(worker.calls) == 2)
        assert [k for k, _ in worker.calls] == [("ns", "a"), ("ns", "b")]
        await queue.stop()

    run(body)


# -- errors and backoff -----------------------------------------------------------------

def test_worker_exception_is_retried_with_growing_capped_backoff(mocker):
    async def body():
        worker = Recorder(answers=[RuntimeError("boom")] * 4 + [None])
        queue = WorkQueue(worker, concurrency=1, min_backoff=0.01, max_backoff=0.04)
        add = mocker.spy(queue, "add")
        queue.start()
        queue.add(KEY)
        await eventually(lambda: worker.count() == 5)
        await settle()
        delays = [call.args[1] for call in add.call_args_list if len(call.args) > 1]
        assert delays == [0.01, 0.02, 0.04, 0.04]
        gaps = [b[1] - a[1] for a, b in itertools.pairwise(worker.calls)]
        assert all(gap >= delay * 0.9 for gap, delay in zip(gaps, delays, strict=True))
        assert worker.count() == 5  # success with None: no further retries
        await queue.stop()

    run(body)


def test_backoff_starts_over_after_a_success(mocker):
    async def body():
        boom = RuntimeError("boom")
        worker = Recorder(answers=[boom, boom, 0.001, boom, None])
        queue = WorkQueue(worker, concurrency=1, min_backoff=0.01, max_backoff=1.0)
        add = mocker.spy(queue, "add")
        queue.start()
        queue.add(KEY)
        await eventually(lambda: worker.count() == 5)
        delays = [call.args[1] for call in add.call_args_list if len(call.args) > 1]
        assert delays == [0.01, 0.02, 0.001, 0.01]
        await queue.stop()

    run(body)


def test_a_failing_key_does_not_stop_the_others(caplog):
    async def body():
        worker = Recorder(answers=[ValueError("bad")])
        queue = WorkQueue(worker, concurrency=1, min_backoff=2.0)
        queue.start()
        queue.add(("ns", "bad"))
        queue.add(("ns", "good"))
        await eventually(lambda: len(worker.calls) == 2)
        assert [k for k, _ in worker.calls] == [("ns", "bad"), ("ns", "good")]
        assert queue.scheduled == 1  # the retry of the failed one
        await queue.stop()

    with caplog.at_level("WARNING", logger="scalegate.workqueue"):
        run(body)
    assert "retrying in 2.0s" in caplog.text and "ValueError: bad" in caplog.text


# -- forget and stop --------------------------------------------------------------------

def test_forget_cancels_the_timer():
    async def body():
        worker = Recorder()
        queue = WorkQueue(worker, concurrency=1)
        queue.start()
        queue.add(KEY, 0.05)
        queue.forget(KEY)
        assert queue.scheduled == 0
        await asyncio.sleep(0.1)
        assert worker.count() == 0
        queue.forget(("ns", "never-seen"))  # harmless
        await queue.stop()

    run(body)


def test_forget_resets_the_backoff(mocker):
    async def body():
        boom = RuntimeError("boom")
        worker = Recorder(answers=[boom, boom, boom])
        # Backoffs long enough that the test sees the second retry scheduled before it runs.
        queue = WorkQueue(worker, concurrency=1, min_backoff=0.2, max_backoff=10)
        add = mocker.spy(queue, "add")
        queue.start()
        queue.add(KEY)
        await eventually(lambda: worker.count() == 2)
        await eventually(lambda: queue.scheduled == 1)
        queue.forget(KEY)
        queue.add(KEY)
        await eventually(lambda: worker.count() == 3)
        await settle()
        delays = [call.args[1] for call in add.call_args_list if len(call.args) > 1]
        assert delays == [0.2, 0.4, 0.2]
        await queue.stop()

    run(body)


def test_stop_cancels_busy_workers_and_pending_timers():
    async def body():
        cancelled = asyncio.Event()

        async def stuck(key):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        queue = WorkQueue(stuck, concurrency=2)
        queue.start()
        queue.add(KEY)
        queue.add(("ns", "later"), 0.1)
        await eventually(lambda: len(queue) == 1 and KEY in queue._processing)
        tasks = list(queue._tasks)
        await asyncio.wait_for(queue.stop(), timeout=0.5)
        assert cancelled.is_set()
        assert all(task.done() for task in tasks)
        assert queue.scheduled == 0
        assert len(queue) == 0

    run(body)


def test_stop_without_start_is_harmless():
    async def body():
        queue = WorkQueue(Recorder())
        queue.add(KEY, 0.1)
        await queue.stop()
        assert queue.scheduled == 0

    run(body)
