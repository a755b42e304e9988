"""One pass over a ledger's XDR words that finds its CONTRACT_DATA and TTL changes (and the restores of
CONTRACT_CODE entries) as byte ranges.

The generated skippers (``cdp.xdr._skip``) step over envelopes, results, events and classic entries
by offset; only the wanted changes become (small) objects, in ``LedgerChangeReader`` order. Any
shape the walk does not know raises, and the caller lets the full decode answer instead.
"""

from __future__ import annotations

import functools
import re
from array import array
from collections.abc import Callable
from typing import Final, NamedTuple

from cdp.xdr import _skip as sk
from cdp.xdr._header import peek_header
from cdp.xdr._walker import skippers as ws

from ._changes import CONTRACT_CODE as CODE
from ._changes import CONTRACT_DATA, CREATED, REMOVED, RESTORED, STATE, TTL, UPDATED, LedgerInfo

I32 = sk.I32
_SCAN_LEDGER: Final = getattr(ws, "scan_ledger", None)  # the compiled walker's, when it is the active one
_GROUPS: Final = ("fee", "before", "operation", "after", "post_apply_fee", "upgrade")  # scan_ledger's codes


Matcher = Callable[[bytes, int], "re.Match[bytes] | None"]
Skip = Callable[["array[int]", int], int]


class Matchers(NamedTuple):
    """The pure walk's ``re`` matchers for the common shapes of its hottest skips
    (``cdp.xdr._skip.P_*``): in C, a match costs a third of the generated skip."""

    entry: Matcher
    pair: Matcher  # a STATE change and its UPDATED one, neither of contract data nor a TTL
    result: Matcher
    event: Matcher
    tx_event: Matcher
    diagnostic: Matcher


@functools.cache
def _matchers() -> Matchers:
    """Compiled at first use, not at import (~0.1 s)."""
    patterns = (sk.P_LedgerEntry, sk.P_UnwantedPair, sk.P_TransactionResultPair, sk.P_ContractEvent,
                sk.P_TransactionEvent, sk.P_DiagnosticEvent)  # fmt: skip
    return Matchers(*(re.compile(p, re.DOTALL).match for p in patterns))


class FastPathError(Exception):
    """The walk cannot vouch for this ledger; the full decode must answer instead."""


class RawChange(NamedTuple):
    """A ``Change`` whose entries are still byte ranges ``(start, end)`` of the ledger. (A named tuple:
    a ledger makes a hundred, and a frozen attrs class's ``__init__`` was 9% of the extraction.)"""

    change_type: int
    pre: tuple[int, int] | None
    post: tuple[int, int] | None
    group: str
    tx_index: int | None = None
    tx_hash: str | None = None
    operation_index: int | None = None
    etype: int = 0
    key: bytes = b""  # its ledger key, found by the walk (compaction's merged changes have none)


CD_KEY_PREFIX: Final = CONTRACT_DATA.to_bytes(4, "big")
_TTL_KEY_PREFIX: Final = TTL.to_bytes(4, "big")
_CODE_KEY_PREFIX: Final = CODE.to_bytes(4, "big")


def key_bounds(b: bytes, start: int) -> tuple[int, int]:
    """Where the key ScVal of the CONTRACT_DATA entry at ``start`` begins, and where its durability
    field ends; the bytes from the address to that end are the ledger key's body, checked
    canonical so they equal a re-encoding."""
    if I32(b, start + 8)[0] != 0:
        raise FastPathError(f"ContractDataEntry ext at byte {start + 8}")
    key_start = ws.c_SCAddress(b, start + 12)
    o = ws.c_SCVal(b, key_start)
    if I32(b, o)[0] not in (0, 1):
        raise FastPathError(f"ContractDataDurability at byte {o}")
    return key_start, o + 4


def ledger_key(b: bytes, rng: tuple[int, int], etype: int) -> bytes:
    s = rng[0]
    if etype == TTL:
        return _TTL_KEY_PREFIX + b[s + 8 : s + 40]
    if etype == CODE:  # ContractCodeEntry: ext (v0, or v1's 48 bytes of cost inputs), then the hash
        at = s + 12 + (48 if I32(b, s + 8)[0] else 0)
        return _CODE_KEY_PREFIX + b[at : at + 32]
    return CD_KEY_PREFIX + b[s + 12 : key_bounds(b, s)[1]]


def _count(w: array[int], o: int) -> int:
    n = w[o]
    if not 0 <= n <= len(w) - o - 1:
        raise FastPathError(f"count {n} at byte {4 * o} exceeds the input")
    return n


class _Walk:
    """One pass over a ledger's words, collecting its CONTRACT_DATA and TTL changes per group.

    Every change is still stepped over (and checked), but only wanted ones become objects:
    that is most of the speed, as a pubnet ledger has thousands of classic entry changes.
    """

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        # The compiled walker reads the XDR's big-endian words in place; the Python one needs ints.
        self.w = sk.words(raw) if _SCAN_LEDGER is None else array("i")
        self.match = _matchers() if _SCAN_LEDGER is None else None
        self.evicted_at = -1  # the word where ``evicted_keys`` starts, once walked (v0 has none)

    def changes(
        self, o: int, out: list[RawChange], name: str, tx: int | None, tx_hash: str | None, op: int | None
    ) -> int:
        """``changes.group_changes`` on one ``LedgerEntryChanges``: pair STATE/RESTORED with the next
        UPDATED/REMOVED, keep wanted types, sort by ledger-key bytes; returns the next word."""
        w, raw = self.w, self.raw
        assert self.match is not None
        entry, pair = self.match.entry, self.match.pair
        left = w[o]
        if not 0 <= left < len(w) - o:  # ``_count``, written out: a ledger has ~1,500 change groups
            raise FastPathError(f"count {left} at byte {4 * o} exceeds the input")
        o += 1
        found: list[tuple[bytes, RawChange]] = []
        prev_kind = prev_type = prev_start = prev_end = -1
        while left:
            kind = w[o]
            if kind == STATE and left > 1 and (m := pair(raw, 4 * o)) is not None:
                o = m.end() >> 2  # a STATE and its UPDATED of an unwanted entry: most changes
                prev_kind, prev_type = UPDATED, -1
                left -= 2
                continue
            left -= 1
            start = o + 1
            if kind == REMOVED:
                end = ws.s_LedgerKey(w, start)
                etype = w[start]
            elif kind == CREATED or kind == UPDATED or kind == STATE or kind == RESTORED:
                m = entry(raw, 4 * start)
                end = ws.s_LedgerEntry(w, start) if m is None else m.end() >> 2
                etype = w[start + 1]
            else:
                raise FastPathError(f"LedgerEntryChangeType {kind} at byte {4 * o}")
            if kind == UPDATED or kind == REMOVED:
                # the reference pairs every group, relevant or not, and rejects this
                if prev_kind != STATE and prev_kind != RESTORED:
                    raise FastPathError(f"{name} group: change at byte {4 * o} has no preceding STATE")
                if prev_type == CONTRACT_DATA or prev_type == TTL:
                    pre = (4 * prev_start, 4 * prev_end)
                    post = (4 * start, 4 * end) if kind == UPDATED else None
                    key = ledger_key(self.raw, pre, prev_type)
                    found.append((key, RawChange(kind, pre, post, name, tx, tx_hash, op, prev_type, key)))
            elif kind != STATE and (etype == CONTRACT_DATA or etype == TTL or (kind == RESTORED and etype == CODE)):
                post = (4 * start, 4 * end)
                key = ledger_key(self.raw, post, etype)
                found.append((key, RawChange(kind, None, post, name, tx, tx_hash, op, etype, key)))
            prev_kind, prev_type, prev_start, prev_end = kind, etype, start, end
            o = end
        if found:
            found.sort(key=lambda pair: pair[0])
            out.extend(c for _, c in found)
        return o

    def _raw_changes(
        self, wanted: list[tuple[int, ...]], name: str, tx: int | None, tx_hash: str | None, op: int | None
    ) -> list[RawChange]:
        """The compiled scan's word offsets as ``RawChange``s, in ledger-key order (as ``changes``)."""
        found = []
        for kind, etype, pre_start, pre_end, start, end in wanted:
            if pre_start >= 0:
                pre = (4 * pre_start, 4 * pre_end)
                post = (4 * start, 4 * end) if kind == UPDATED else None
                key = ledger_key(self.raw, pre, etype)
                found.append((key, RawChange(kind, pre, post, name, tx, tx_hash, op, etype, key)))
            else:
                post = (4 * start, 4 * end)
                key = ledger_key(self.raw, post, etype)
                found.append((key, RawChange(kind, None, post, name, tx, tx_hash, op, etype, key)))
        found.sort(key=lambda pair: pair[0])
        return [c for _, c in found]

    def _scanned_ledger(self) -> list[RawChange]:
        """``ledger`` walked by the compiled ``scan_ledger``: Python sees only the wanted changes."""
        assert _SCAN_LEDGER is not None
        try:
            batches, self.evicted_at = _SCAN_LEDGER(self.raw)
        except ValueError as exc:
            raise FastPathError(str(exc)) from None
        out: list[RawChange] = []
        raw = self.raw
        for group, tx, op, hash_at, wanted in batches:
            tx_hash = raw[4 * hash_at : 4 * hash_at + 32].hex() if hash_at >= 0 else None
            out.extend(
                self._raw_changes(wanted, _GROUPS[group], None if tx < 0 else tx, tx_hash, None if op < 0 else op)
            )
        return out

    def array(self, o: int, skip: Skip) -> int:
        w = self.w
        n = _count(w, o)
        o += 1
        for _ in range(n):
            o = skip(w, o)
        return o

    def matched(self, o: int, match: Matcher, skip: Skip) -> int:
        """``array``, each item matched in C where it has a common shape."""
        w, raw = self.w, self.raw
        n = w[o]
        if not 0 <= n < len(w) - o:  # ``_count``, written out
            raise FastPathError(f"count {n} at byte {4 * o} exceeds the input")
        o += 1
        for _ in range(n):
            m = match(raw, 4 * o)
            o = skip(w, o) if m is None else m.end() >> 2
        return o

    def tx_meta(self, o: int, i: int, tx_hash: str, out: list[RawChange]) -> int:
        """One ``TransactionMeta``: its before, operation and after groups."""
        w, match = self.w, self.match
        assert match is not None
        v = w[o]
        o += 1
        if v == 0:  # Go refuses meta v0 and the reference skips it: so do we
            return self.array(o, ws.s_OperationMeta)
        if v == 1:
            o = self.changes(o, out, "before", i, tx_hash, None)
            n = _count(w, o)
            o += 1
            for k in range(n):
                o = self.changes(o, out, "operation", i, tx_hash, k)
            return o
        if v not in (2, 3, 4):
            raise FastPathError(f"TransactionMeta version {v} at byte {4 * o - 4}")
        if v >= 3:
            o = ws.s_ExtensionPoint(w, o)
        o = self.changes(o, out, "before", i, tx_hash, None)
        n = _count(w, o)
        o += 1
        for k in range(n):
            if v == 4:
                o = ws.s_ExtensionPoint(w, o)
            o = self.changes(o, out, "operation", i, tx_hash, k)
            if v == 4:
                o = self.matched(o, match.event, ws.s_ContractEvent)
        o = self.changes(o, out, "after", i, tx_hash, None)
        if v == 3:  # SorobanTransactionMeta, optional: ext, events, return value, diagnostic events
            if w[o]:
                o = ws.s_SorobanTransactionMetaExt(w, o + 1)
                o = self.matched(o, match.event, ws.s_ContractEvent)
                o = ws.s_SCVal(w, o, 1)
                o = self.matched(o, match.diagnostic, ws.s_DiagnosticEvent)
            else:
                o += 1
        elif v == 4:
            o = ws.s_SorobanTransactionMetaV2(w, o + 1) if w[o] else o + 1
            o = self.matched(o, match.tx_event, ws.s_TransactionEvent)
            o = self.matched(o, match.diagnostic, ws.s_DiagnosticEvent)
        return o

    def ledger(self) -> list[RawChange]:
        """Every wanted change of the ledger, in ``LedgerChangeReader`` order."""
        if _SCAN_LEDGER is not None:
            return self._scanned_ledger()
        w, raw = self.w, self.raw
        v = w[0]
        o = 1
        if v not in (0, 1, 2):
            raise FastPathError(f"LedgerCloseMeta version {v}")
        if v:
            o = ws.s_LedgerCloseMetaExt(w, o)
        o = ws.s_LedgerHeaderHistoryEntry(w, o)
        o = ws.s_TransactionSet(w, o) if v == 0 else ws.s_GeneralizedTransactionSet(w, o)
        assert self.match is not None
        result = self.match.result
        fees: list[RawChange] = []
        metas: list[RawChange] = []
        posts: list[RawChange] = []
        n = _count(w, o)
        o += 1
        for i in range(n):
            if v == 2:
                o = ws.s_ExtensionPoint(w, o)
            tx_hash = raw[4 * o : 4 * o + 32].hex()
            m = result(raw, 4 * o)
            o = ws.s_TransactionResultPair(w, o) if m is None else m.end() >> 2
            o = self.changes(o, fees, "fee", i, tx_hash, None)
            o = self.tx_meta(o, i, tx_hash, metas)
            if v == 2:
                o = self.changes(o, posts, "post_apply_fee", i, tx_hash, None)
        upgrades: list[RawChange] = []
        n = _count(w, o)
        o += 1
        for _ in range(n):
            o = ws.s_LedgerUpgrade(w, o)
            o = self.changes(o, upgrades, "upgrade", None, None, None)
        o = self.array(o, ws.s_SCPHistoryEntry)
        if v:
            o += 2  # totalByteSizeOfLiveSorobanState
            self.evicted_at = o
            o = self.array(o, ws.s_LedgerKey)
            if v == 1:
                o = self.array(o, ws.s_LedgerEntry)
        if o != len(w):
            raise FastPathError(f"walk ended at byte {4 * o} of {len(raw)}")
        return fees + metas + posts + upgrades

    def evicted_keys(self) -> list[bytes]:
        """The ``LedgerKey`` XDR of every key the walked ledger evicts (``ledger`` has checked them)."""
        w, o = self.raw if _SCAN_LEDGER is not None else self.w, self.evicted_at
        if o < 0:
            return []
        keys = []
        n = I32(self.raw, 4 * o)[0]
        o += 1
        for _ in range(n):
            end = ws.s_LedgerKey(w, o)
            keys.append(self.raw[4 * o : 4 * end])
            o = end
        return keys


def read_raw_changes(raw: bytes) -> tuple[LedgerInfo, list[RawChange]]:
    """The ledger's header facts and its CONTRACT_DATA and TTL changes, as byte ranges.

    Raises:
        FastPathError: (or ``SkipError``, ``struct.error``, ``IndexError``, ``RecursionError``, ...)
            the walk cannot vouch for these bytes; use the full decode.
    """
    return _info(raw), _Walk(raw).ledger()


def read_raw_state(raw: bytes) -> tuple[LedgerInfo, list[RawChange], list[bytes]]:
    """``read_raw_changes`` plus the ledger's evicted keys (``LedgerKey`` XDR), from the same walk."""
    walk = _Walk(raw)
    changes = walk.ledger()
    return _info(raw), changes, walk.evicted_keys()


def _info(raw: bytes) -> LedgerInfo:
    facts = peek_header(raw)
    return LedgerInfo(facts.sequence, facts.close_time, facts.protocol, facts.meta_version)
