"""The byte budget and the one waiting primitive, on a mock clock."""

from __future__ import annotations

import trio
import trio.testing

from cdp._watch import Watched
from cdp.pipeline import ByteBudget


async def test_reserve_waits_until_bytes_are_released(autojump_clock: trio.testing.MockClock) -> None:
    budget = ByteBudget(100)
    first = await budget.reserve(60)
    got = []

    async def second() -> None:
        got.append(await budget.reserve(60))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert [] == got  # 60 + 60 > 100: waits
        first.release()
    assert 60 == budget.used
    got[0].release()
    got[0].release()  # a second release does nothing
    assert 0 == budget.used


async def test_an_item_over_the_limit_fits_when_nothing_is_held(autojump_clock: trio.testing.MockClock) -> None:
    budget = ByteBudget(100)
    big = await budget.reserve(1000)
    assert 1000 == budget.used
    with trio.move_on_after(10) as waited:
        await budget.reserve(1)
    assert waited.cancelled_caught  # nothing else fits while it is held
    big.release()
    await budget.reserve(1)


async def test_watched_wakes_waiters_whose_condition_holds(autojump_clock: trio.testing.MockClock) -> None:
    value = Watched(0)
    woke: list[tuple[str, int]] = []

    async def wait(name: str, at_least: int) -> None:
        woke.append((name, await value.wait_until(lambda v: v >= at_least)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "three", 3)
        nursery.start_soon(wait, "one", 1)
        await trio.testing.wait_all_tasks_blocked()
        for v in (1, 2, 3):
            value.set(v)
            await trio.testing.wait_all_tasks_blocked()
    assert [("one", 1), ("three", 3)] == woke
    with trio.testing.assert_checkpoints():
        assert 3 == await value.wait_until(lambda v: v == 3)  # already true: still a checkpoint
