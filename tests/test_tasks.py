"""aether._tasks.TaskOwner: tasks end with their owner, cancellation of the caller is not swallowed."""

from __future__ import annotations

import asyncio

import pytest

from aether._tasks import TaskOwner, cancel_and_wait

pytestmark = pytest.mark.anyio


async def test_aclose_cancels_and_awaits_every_task_and_refuses_new_ones() -> None:
    owner = TaskOwner("test")
    started = asyncio.Event()
    ended: list[str] = []

    async def loop(name: str) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            ended.append(name)

    tasks = [owner.spawn(loop(f"t{i}")) for i in range(3)]
    await started.wait()
    await owner.aclose()
    assert sorted(ended) == ["t0", "t1", "t2"]
    assert all(t is not None and t.cancelled() for t in tasks)
    assert len(owner) == 0
    assert owner.spawn(loop("late")) is None


async def test_aclose_returns_when_a_task_has_just_finished() -> None:
    """A task done but not yet forgotten (its done callback runs a loop iteration later) must not
    make aclose spin: this hung the event loop once."""
    owner = TaskOwner("test")

    async def quick() -> None:
        return None

    task = owner.spawn(quick())
    assert task is not None
    await asyncio.sleep(0)  # the task runs to its end; its done callback is queued behind us
    assert task.done()
    await owner.aclose()  # (a spinning aclose would block the loop: pytest-timeout ends the test)
    assert len(owner) == 0


async def test_a_failing_task_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    owner = TaskOwner("test")

    async def boom() -> None:
        raise RuntimeError("boom")

    task = owner.spawn(boom(), name="boomer")
    assert task is not None
    await asyncio.wait({task})
    await asyncio.sleep(0)
    await owner.aclose()
    assert any("boomer" in r.getMessage() for r in caplog.records)


async def test_the_callers_cancellation_propagates_from_aclose() -> None:
    owner = TaskOwner("test")

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)  # slow to end: the closer is cancelled meanwhile
                return

    owner.spawn(stubborn())
    await asyncio.sleep(0)
    closer = asyncio.ensure_future(owner.aclose())
    await asyncio.sleep(0.05)
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer


async def test_cancel_and_wait_ends_the_task_and_drops_what_it_ended_with() -> None:
    ended: list[str] = []

    async def failing_on_cancel() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            ended.append("cancelled")
            raise RuntimeError("raised while ending")  # dropped: the caller asked it to end

    task = asyncio.ensure_future(failing_on_cancel())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.done() and ended == ["cancelled"]
    await cancel_and_wait(task)  # already ended: nothing to do
    await cancel_and_wait(None)


async def test_the_callers_cancellation_propagates_from_cancel_and_wait() -> None:
    """``task.cancel(); with suppress(CancelledError): await task`` swallows this; the helper must not."""
    child = asyncio.ensure_future(asyncio.sleep(60))

    async def caller() -> None:
        current = asyncio.current_task()
        assert current is not None
        current.cancel()  # pending: the wait inside cancel_and_wait receives it
        await cancel_and_wait(child)

    task = asyncio.ensure_future(caller())
    await asyncio.wait({task})
    assert task.cancelled()
    await asyncio.wait({child})
    assert child.cancelled()  # cancelled all the same
