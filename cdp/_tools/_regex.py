"""Byte patterns for the common shapes of an XDR type, read exactly as its generated skipper reads
them (for ``gen_xdr``).

A skipper in CPython runs ~60 bytecodes for a classic ``AccountEntry``; ``re`` runs the same checks
in C. A pattern covers only bounded shapes: arrays of at most ``COUNTS - 1`` items, strings and
opaques of at most ``TEXT`` bytes, present optionals flagged 1, no recursive type. Every choice in
it starts with a word that tells the choices apart (a discriminant, a count, a length, a flag), so a
match is the one parse the skipper makes and ends where the skipper ends; a value of another shape
does not match, and the caller asks the skipper.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Final

from ._grammar import Grammar

COUNTS: Final = 3  # array lengths a pattern spells out: 0, 1, 2
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

    def __init__(self, g: Grammar) -> None:
        self.g = g
        self._named: dict[str, bytes | None] = {}

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
            top = min(t.get("max_count", COUNTS - 1), COUNTS - 1) if inner is not None else 0
            return _choice([_word(n, True) + (inner or b"") * n for n in range(top + 1)])
        if kind == "array":
            inner = self.of(t["element"])
            return None if inner is None else inner * int(t["count"])
        raise ValueError(f"unhandled type {t}")

    def named(self, name: str) -> bytes | None:
        if name not in self._named:
            self._named[name] = None  # a recursive type has no bounded pattern
            self._named[name] = None if name in self.g.recursive else self._definition(self.g.defs[name])
        return self._named[name]

    def _definition(self, d: dict[str, Any]) -> bytes | None:
        if d["kind"] == "enum":
            return _choice([_word(v, False) for v in sorted({m["value"] for m in d["members"]})])
        if d["kind"] == "typedef":
            return self.of(d["type"])
        if d["kind"] == "struct":
            parts = [self.of(f["type"]) for f in d["fields"]]
            return None if any(p is None for p in parts) else b"".join(p for p in parts if p is not None)
        unsigned = self.g.unsigned_disc(d)
        options = []
        for arm in d["arms"]:
            body = b"" if "type" not in arm else self.of(arm["type"])
            if body is not None:
                cases = _choice([_word(c["value"], unsigned) for c in arm["cases"]])
                options.append((cases or b"") + body)
        return _choice(options)
