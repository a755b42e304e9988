"""``Watched``: a value that tasks can wait on, the one waiting primitive of the service.

Connection state, the breaker state, bytes held and the last committed ledger are all "a value
changes; someone waits until it satisfies a condition". A ``ParkingLot`` woken on every change
does that without the set-then-replace ``Event`` dance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class Watched(Generic[T]):
    def __init__(self, value: T) -> None:
        self._value = value
        self._lot = trio.lowlevel.ParkingLot()

    @property
    def value(self) -> T:
        return self._value

    def set(self, value: T) -> None:
        """Change the value and wake every waiter to re-check its condition."""
        self._value = value
        self._lot.unpark_all()

    async def wait_until(self, condition: Callable[[T], bool]) -> T:
        """Return the value once ``condition(value)`` holds; always a checkpoint."""
        if condition(self._value):
            await trio.lowlevel.checkpoint()
            return self._value
        while not condition(self._value):
            await self._lot.park()
        return self._value
