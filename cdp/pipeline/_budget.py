"""A byte budget for ledgers held in memory between intake and commit.

The channels and the reorder window bound ledgers by count; pubnet ledgers are ~1 MB each, so
100 buffered ledgers would be 100 MB. The pipeline owns the one budget: a ledger's bytes are
reserved when it is taken in and released when it is committed (or abandoned), and the
reservation travels with the ledger's slot, so nothing can release into another budget.
"""

from __future__ import annotations

import attrs

from cdp._watch import Watched


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = Watched(0)

    @property
    def used(self) -> int:
        return self._used.value

    def _fits(self, n: int, used: int) -> bool:
        """One item always fits when nothing is held, however large: progress never stops."""
        return used == 0 or used + n <= self.limit

    async def reserve(self, n: int) -> Reservation:
        """Wait until ``n`` bytes fit, then hold them until the reservation is released."""
        await self._used.wait_until(lambda used: self._fits(n, used))
        self._used.set(self._used.value + n)
        return Reservation(self, n)

    def _release(self, n: int) -> None:
        self._used.set(self._used.value - n)


@attrs.define(eq=False)
class Reservation:
    budget: ByteBudget
    size: int
    released: bool = False

    def release(self) -> None:
        """Give the bytes back; a second call does nothing."""
        if not self.released:
            self.released = True
            self.budget._release(self.size)
