"""Byte patterns for the common shapes of an XDR type, read exactly as its generated skipper reads
them (for ``gen_xdr``).

A skipper in CPython runs ~60 bytecodes for a classic ``AccountEntry``; ``re`` runs the same checks
in C. A pattern covers only bounded shapes: arrays of at most ``counts - 1`` items, strings and
opaques of at most ``TEXT`` bytes, present optionals flagged 1, recursive types only where they do
not nest (an ScVal that is a number, a symbol, an address, an empty vector...). Every choice in
it starts with a word that tells the choices apart (a discriminant, a count, a length, a flag), so a
match is the one parse the skipper makes and ends where the skipper ends; a value of another shape
does not match, and the caller asks the skipper.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any, Final

from ._grammar import Grammar

COUNTS: Final = 3  # array lengths a pattern spells out by default: 0, 1, 2
TEXT: Final = 64  # the longest string or opaque a pattern spells out, in bytes
ZERO: Final = b"\x00\x00\x00\x00"


def _word(value: int, unsigned: bool) -> bytes:
    return re.escape(struct.pack(">I" if unsigned else ">i", value))


def _any(n: int) -> bytes:
    return b".{%d}" % n if n else b""


def _choice(options: list[bytes]) -> bytes | None:
    if not options:
        return None
    return options[0] if len(options) == 1 else b"(?:" + b"|".join(options) + b")"


class Patterns:
    """``of(t)``: a ``re`` pattern (bytes, for ``re.DOTALL``) matching the big-endian XDR of the
    common values of type ``t``, or None where no value of ``t`` has a bounded shape."""

    def __init__(self, g: Grammar, counts: int = COUNTS, exclude: Mapping[str, frozenset[int]] | None = None) -> None:
        self.g = g
        self.counts = counts  # array lengths spelled out: 0 .. counts - 1
        self.exclude = exclude or {}  # union cases left out, by union
        self._named: dict[tuple[str, frozenset[str]], bytes | None] = {}
        self._open: set[str] = set()  # the recursive types being spelled out

    def of(self, t: dict[str, Any]) -> bytes | None:
        g = self.g
        size = g.fixed(t)
        if size is not None and not g.needs_check(t):
            return _any(size)
        kind = t["kind"]
        if kind == "ref":
            return self.named(t["name"])
        if kind in ("opaque_var", "string"):
            limit = min(t.get("max_size", TEXT), TEXT)
            options = [ZERO]
            for words in range(1, (limit + 3) // 4 + 1):  # lengths 4w-3 .. 4w take w words
                lo, hi = 4 * words - 3, min(4 * words, limit)
                options.append(b"\\x00\\x00\\x00[" + re.escape(bytes([lo])) + b"-" + re.escape(bytes([hi])) + b"]"
                               + _any(4 * words))  # fmt: skip
            return _choice(options)
        if kind == "optional":
            inner = self.of(t["element"])
            return _choice([ZERO] + ([] if inner is None else [_word(1, True) + inner]))
        if kind == "var_array":
            inner = self.of(t["element"])
            top = min(t.get("max_count", self.counts - 1), self.counts - 1) if inner is not None else 0
            return _choice([_word(n, True) + (inner or b"") * n for n in range(top + 1)])
        if kind == "array":
            inner = self.of(t["element"])
            return None if inner is None else inner * int(t["count"])
        raise ValueError(f"unhandled type {t}")

    def named(self, name: str) -> bytes | None:
        """A recursive type's pattern covers its values that do not nest (an ScVal that is no vector,
        map or instance with items): inside its own expansion it has none. What a type spells out
        depends on the recursive types open around it, so it is kept per that set."""
        if name in self._open:
            return None
        key = (name, frozenset(self._open))
        if key not in self._named:
            recursive = name in self.g.recursive
            if recursive:
                self._open.add(name)
            try:
                self._named[key] = self._definition(self.g.defs[name])
            finally:
                if recursive:
                    self._open.discard(name)
        return self._named[key]

    def _definition(self, d: dict[str, Any]) -> bytes | None:
        if d["kind"] == "enum":
            return _choice([_word(v, False) for v in sorted({m["value"] for m in d["members"]})])
        if d["kind"] == "typedef":
            return self.of(d["type"])
        if d["kind"] == "struct":
            parts = [self.of(f["type"]) for f in d["fields"]]
            return None if any(p is None for p in parts) else b"".join(p for p in parts if p is not None)
        unsigned = self.g.unsigned_disc(d)
        left_out = self.exclude.get(d["name"], frozenset())
        options = []
        for arm in d["arms"]:
            values = [c["value"] for c in arm["cases"] if c["value"] not in left_out]
            body = b"" if "type" not in arm else self.of(arm["type"])
            if body is not None and values:
                options.append((_choice([_word(v, unsigned) for v in values]) or b"") + body)
        return _choice(options)


def _enum_value(g: Grammar, enum: str, member: str) -> int:
    return next(int(m["value"]) for m in g.defs[enum]["members"] if m["name"] == member)


def unwanted_pair(g: Grammar) -> bytes:
    """A STATE change and the UPDATED one it pairs with, of one entry that is neither contract data
    nor a TTL: most of a ledger's changes, which the walk steps over two at a time."""
    wanted = frozenset(_enum_value(g, "LedgerEntryType", m) for m in ("CONTRACT_DATA", "TTL"))
    entry = Patterns(g, exclude={"LedgerEntryData": wanted}).named("LedgerEntry")
    assert entry is not None
    state, updated = (_enum_value(g, "LedgerEntryChangeType", f"LEDGER_ENTRY_{m}") for m in ("STATE", "UPDATED"))
    return _word(state, False) + entry + _word(updated, False) + entry
