"""Generate ``cdp/xdr/_skip.py`` from the Stellar XDR grammar (rs-stellar-xdr's ``xdr.json``).

Each generated ``s_<Type>(b, o) -> int`` returns the offset just past a ``<Type>`` that starts at
``o`` in ``b``, building no objects: that is what lets the fast path walk a 1 MB ledger in
milliseconds. The skippers are at least as strict as stellar-sdk's decoder (enum values, union
arms and length limits are checked; recursion is capped), so anything they accept the full decode
accepts too, and anything else raises ``SkipError`` and the caller falls back to the full decode.

Run: ``python -m cdp._tools.gen_xdr schema/xdr-grammar.json cdp/xdr/_skip.py`` (``just gen``); as a
script it imports nothing of ``cdp`` outside ``_tools``, so a broken ``_skip.py`` cannot stop its own
regeneration.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Final

from ._grammar import MAX_DEPTH, Grammar
from ._regex import Patterns, unwanted_pair

STRICT_ROOTS: Final = ("SCVal", "SCAddress")  # what row fields are taken from as raw bytes
# P_<Type>, with the array lengths each spells out: the pure walk's hottest skips (a pubnet ledger:
# ~3,500 entries, ~260 results, ~1,300 events). Envelopes measured no gain (half are Soroban ones,
# refused deep in the pattern).
PATTERN_ROOTS: Final = {"LedgerEntry": 3, "TransactionResultPair": 3, "ContractEvent": 5, "TransactionEvent": 5,
                        "DiagnosticEvent": 5}  # fmt: skip


class Writer:
    """Emits skippers; ``strict`` ones (prefix ``c_``) also demand the canonical encoding (zero
    padding, bools and optional flags 0 or 1), so their bytes equal a re-encoding of the value."""

    def __init__(self, g: Grammar, strict: bool = False) -> None:
        self.g = g
        self.strict = strict
        self.lines: list[str] = []
        self.tables: list[str] = []

    def fn(self, name: str) -> str:
        return ("c_" if self.strict else "s_") + name

    def emit(self, line: str = "") -> None:
        self.lines.append(line)

    def u(self, n: int) -> int:
        """A byte count in this writer's unit (32-bit words for the walk, bytes for strict)."""
        return n if self.strict else n // 4

    def at(self, k: int) -> str:
        return f"o + {k}" if k else "o"

    def read(self, k: int = 0, unsigned: bool = False) -> str:
        if self.strict:
            return f"{'U32' if unsigned else 'I32'}(b, {self.at(k)})[0]"
        return f"(b[{self.at(k)}] & 0xFFFFFFFF)" if unsigned else f"b[{self.at(k)}]"

    def skip_expr(self, t: dict[str, Any], indent: str, what: str) -> None:
        """Emit statements advancing ``o`` past a value of type ``t``."""
        g = self.g
        size = g.fixed(t)
        kind = t["kind"]
        if self.strict and kind == "bool":
            self.emit(f"{indent}if U32(b, o)[0] > 1:")
            self.emit(f"{indent}    raise SkipError({what!r}, o)")
            self.emit(f"{indent}o += 4")
            return
        if self.strict and kind == "opaque_fixed" and t["size"] % 4:
            self.emit(f"{indent}if any(b[o + {t['size']} : o + {size}]):")
            self.emit(f"{indent}    raise SkipError({what!r}, o)")
            self.emit(f"{indent}o += {size}")
            return
        if size is not None and not (g.needs_check(t) or (self.strict and g.needs_strict(t))):
            self.emit(f"{indent}o += {self.u(size)}")
            return
        checks = g.fixed_checks(t) if size is not None and not self.strict else None
        if checks is not None and size is not None:
            self.inline_checks(checks, 0, indent, what)
            self.emit(f"{indent}o += {self.u(size)}")
            return
        if kind == "ref":
            d = g.defs[t["name"]]
            if d["kind"] == "enum":
                self.emit(f"{indent}if {self.read()} not in E_{d['name']}:")
                self.emit(f"{indent}    raise SkipError({d['name']!r}, o)")
                self.emit(f"{indent}o += {self.u(4)}")
            elif d["kind"] == "typedef" and t["name"] not in g.recursive:
                self.skip_expr(d["type"], indent, d["name"])  # inline: a call costs more than the skip
            elif d["kind"] == "struct" and t["name"] not in g.recursive and len(d["fields"]) <= 6:
                self.struct_body(d, indent)  # flattened into the caller, for the same reason
            elif t["name"] in g.recursive:
                self.emit(f"{indent}o = {self.fn(t['name'])}(b, o, depth + 1)")
            else:
                self.emit(f"{indent}o = {self.fn(t['name'])}(b, o, depth)")
        elif kind in ("opaque_var", "string"):
            limit = t.get("max_size")
            if self.strict:
                self.emit(f"{indent}n = U32(b, o)[0]")
                if limit is not None:
                    self.emit(f"{indent}if n > {limit}:")
                    self.emit(f"{indent}    raise SkipError({what!r}, o)")
                self.emit(f"{indent}if n & 3 and any(b[o + 4 + n : o + 4 + ((n + 3) & ~3)]):")
                self.emit(f"{indent}    raise SkipError({what!r}, o)")
                self.emit(f"{indent}o += 4 + ((n + 3) & ~3)")
            else:
                self.emit(f"{indent}n = b[o]")
                bound = f"0 <= n <= {limit}" if limit is not None else "n >= 0"
                self.emit(f"{indent}if not {bound}:")
                self.emit(f"{indent}    raise SkipError({what!r}, o)")
                self.emit(f"{indent}o += 1 + ((n + 3) >> 2)")
        elif kind == "optional":
            self.emit(f"{indent}flag = {self.read()}")
            if self.strict:
                self.emit(f"{indent}if flag not in (0, 1):")
                self.emit(f"{indent}    raise SkipError({what!r}, o)")
            self.emit(f"{indent}o += {self.u(4)}")
            self.emit(f"{indent}if flag:")
            self.skip_expr(t["element"], indent + "    ", what)
        elif kind == "var_array":
            limit = t.get("max_count")
            elem = t["element"]
            esize = g.fixed(elem)
            if self.strict:
                self.emit(f"{indent}n = U32(b, o)[0]")
                self.emit(f"{indent}o += 4")
                bound = f"n <= {limit} and n <= len(b) - o" if limit is not None else "n <= len(b) - o"
            else:
                self.emit(f"{indent}n = b[o]")
                self.emit(f"{indent}o += 1")
                bound = f"0 <= n <= {limit} and n <= len(b) - o" if limit is not None else "0 <= n <= len(b) - o"
            self.emit(f"{indent}if not ({bound}):")
            self.emit(f"{indent}    raise SkipError({what!r}, o)")
            if esize is not None and not (g.needs_check(elem) or (self.strict and g.needs_strict(elem))):
                self.emit(f"{indent}o += n * {self.u(esize)}")
            else:
                self.emit(f"{indent}for _ in range(n):")
                self.skip_expr(elem, indent + "    ", what)
        elif kind == "array":
            self.emit(f"{indent}for _ in range({t['count']}):")
            self.skip_expr(t["element"], indent + "    ", what)
        else:
            raise ValueError(f"unhandled type {t}")

    def inline_checks(self, checks: list[tuple[int, str, tuple[int, ...]]], base: int, indent: str, what: str) -> None:
        for off, how, values in checks:
            k = self.u(base + off)
            cond = f"!= {values[0]}" if len(values) == 1 else f"not in {set(values)!r}"
            self.emit(f"{indent}if {self.read(k, how == 'u32')} {cond}:")
            self.emit(f"{indent}    raise SkipError({what!r}, {self.at(k)})")

    def function(self, name: str) -> None:
        g = self.g
        d = g.defs[name]
        if d["kind"] == "enum":
            values = sorted({m["value"] for m in d["members"]})
            self.emit(f"E_{name}: Final = frozenset({values!r})")
            self.emit()
            return
        buf = "bytes" if self.strict else "array[int]"
        self.emit(f"def {self.fn(name)}(b: {buf}, o: int, depth: int = 0) -> int:")
        if name in g.recursive:
            self.emit(f"    if depth > {MAX_DEPTH}:")
            self.emit(f"        raise SkipError({name!r}, o)")
        if d["kind"] == "typedef":
            self.skip_expr(d["type"], "    ", name)
        elif d["kind"] == "struct":
            self.struct_body(d, "    ")
        else:
            self.union(name, d)
            return
        self.emit("    return o")
        self.emit()
        self.emit()

    def struct_body(self, d: dict[str, Any], indent: str) -> None:
        """A struct's fields, with runs of plain fixed-size fields folded into one jump."""
        for step in self.g.struct_plan(d, self.strict):
            if step[0] == "jump":
                self.emit(f"{indent}o += {self.u(step[1])}")
            elif step[0] == "checks":
                self.inline_checks(step[1], step[2], indent, step[3])
            else:
                self.skip_expr(step[1], indent, step[2])

    def union(self, name: str, d: dict[str, Any]) -> None:
        g = self.g
        unsigned = g.unsigned_disc(d)
        self.emit(f"    v = {self.read(0, unsigned)}")
        self.emit(f"    o += {self.u(4)}")
        first = True
        groups: dict[str, list[int]] = {}
        bodies: dict[str, dict[str, Any] | None] = {}
        table: dict[int, int] = {}
        for arm in d["arms"]:
            t = arm.get("type")
            size = 0 if t is None else g.fixed(t)
            plain = t is None or not (g.needs_check(t) or (self.strict and g.needs_strict(t)))
            if size is not None and plain and len(d["arms"]) > 2:
                table.update({c["value"]: self.u(size) for c in arm["cases"]})
                continue
            key = json.dumps(arm.get("type"), sort_keys=True)
            groups.setdefault(key, []).extend(c["value"] for c in arm["cases"])
            bodies[key] = arm.get("type")
        if table:
            tname = ("CF_" if self.strict else "F_") + name
            self.tables.append(f"{tname}: Final = {table!r}")
            self.emit(f"    size = {tname}.get(v)")
            self.emit("    if size is not None:")
            self.emit("        return o + size")
        for key, values in groups.items():
            cond = f"v == {values[0]}" if len(values) == 1 else f"v in {tuple(sorted(values))!r}"
            self.emit(f"    {'if' if first else 'elif'} {cond}:")
            first = False
            body = bodies[key]
            if body is None:
                self.emit("        return o")
            else:
                self.skip_expr(body, "        ", name)
                self.emit("        return o")
        self.emit(f"    raise SkipError({name!r}, o - {self.u(4)})")
        self.emit()
        self.emit()


HEADER: Final = '''"""Generated by ``cdp/_tools/gen_xdr.py`` from the Stellar XDR grammar: do not edit.

``s_<Type>(w, o)`` returns the index just past the ``<Type>`` starting at word ``o`` of ``w``, the
ledger as big-endian signed 32-bit words (``words(raw)``); ``c_<Type>(b, o)`` does the same on
bytes and also demands the canonical encoding; ``P_<Type>`` is a ``re`` pattern (``re.DOTALL``) for
the common shapes of a ``<Type>`` in the bytes, a match ending where ``s_<Type>`` would end
(``cdp/_tools/_regex.py``).
"""

# ruff: noqa
# mypy: ignore-errors
from __future__ import annotations

import struct
import sys
from array import array
from typing import Final

U32 = struct.Struct(">I").unpack_from
I32 = struct.Struct(">i").unpack_from


def words(raw: bytes | bytearray) -> array[int]:
    """The XDR as 32-bit big-endian signed words: every XDR item is word-aligned."""
    if len(raw) % 4:
        raise SkipError("XDR length not a multiple of 4", len(raw))
    w = array("i")
    w.frombytes(raw)
    if sys.byteorder == "little":
        w.byteswap()
    return w


class SkipError(Exception):
    """The bytes are not a value of the expected type (or nest deeper than we follow)."""

    def __init__(self, what: str, offset: int) -> None:
        super().__init__(f"{what} at byte {offset}")
        self.what = what
        self.offset = offset


'''


def generate(data: dict[str, Any]) -> str:
    g = Grammar(data)
    w = Writer(g)
    for name in sorted(n for n, d in g.defs.items() if d["kind"] == "enum"):
        w.function(name)
    for name in sorted(n for n, d in g.defs.items() if d["kind"] != "enum"):
        w.function(name)
    strict = Writer(g, strict=True)
    for name in g.closure(STRICT_ROOTS):
        if g.defs[name]["kind"] != "enum":
            strict.function(name)
    for name, counts in PATTERN_ROOTS.items():
        w.tables.append(f"P_{name}: Final = {Patterns(g, counts).named(name)!r}")
    w.tables.append(f"P_UnwantedPair: Final = {unwanted_pair(g)!r}")
    tables = "\n".join(w.tables + strict.tables) + "\n\n\n"
    return HEADER + tables + "\n".join(w.lines + strict.lines).rstrip() + "\n"


def main() -> None:
    grammar, output = sys.argv[1:3]
    with open(grammar, encoding="utf-8") as f:
        text = generate(json.load(f))
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
