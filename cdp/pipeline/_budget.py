"""A byte budget for ledgers held in memory between the upstream and the commit.

The channel and the reorder window bound ledgers by count; pubnet ledgers are ~1 MB each, so
100 buffered ledgers would be 100 MB. The source takes a ledger's size from the budget before
handing it on and the committer gives it back after the commit, so memory stays bounded in bytes.
"""

from __future__ import annotations

import trio


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = trio.Event()

    def would_block(self, n: int) -> bool:
        """One item always fits when nothing is held, however large: progress never stops."""
        return self.used > 0 and self.used + n > self.limit

    def take_nowait(self, n: int) -> None:
        self.used += n

    async def take(self, n: int) -> None:
        while self.would_block(n):
            await self._freed.wait()
        self.used += n

    def give_back(self, n: int) -> None:
        self.used -= n
        self._freed.set()
        self._freed = trio.Event()
