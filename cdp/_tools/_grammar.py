"""The Stellar XDR grammar (rs-stellar-xdr's ``xdr.json``) as the skipper generator reads it:
definitions by name, fixed sizes, and which types are recursive."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

PRIMITIVE_SIZE: Final = {"int": 4, "unsigned_int": 4, "bool": 4, "hyper": 8, "unsigned_hyper": 8}
MAX_DEPTH: Final = 64  # nesting of recursive types (SCVal in SCVal ...); real ledgers use < 10


class Grammar:
    def __init__(self, data: dict[str, Any]) -> None:
        self.defs: dict[str, dict[str, Any]] = {d["name"]: d for d in data["definitions"] if d["kind"] != "const"}
        self._fixed: dict[str, int | None] = {}
        self.recursive = self._find_recursive()

    # -- sizes -----------------------------------------------------------------------------
    def fixed(self, t: dict[str, Any]) -> int | None:
        """Byte size of a type if it never varies, else None."""
        kind = t["kind"]
        if kind in PRIMITIVE_SIZE:
            return PRIMITIVE_SIZE[kind]
        if kind == "opaque_fixed":
            return int(t["size"] + 3) // 4 * 4
        if kind == "array":
            inner = self.fixed(t["element"])
            return None if inner is None else inner * int(t["count"])
        if kind == "ref":
            return self.fixed_def(t["name"])
        return None

    def fixed_def(self, name: str) -> int | None:
        if name in self._fixed:
            return self._fixed[name]
        self._fixed[name] = None  # breaks cycles: a recursive type is never fixed
        d = self.defs[name]
        size: int | None
        if d["kind"] == "enum":
            size = 4
        elif d["kind"] == "typedef":
            size = self.fixed(d["type"])
        elif d["kind"] == "struct":
            sizes = [self.fixed(f["type"]) for f in d["fields"]]
            size = None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)
        else:  # union: fixed only when every arm has the same fixed size
            arms = {0 if "type" not in a else self.fixed(a["type"]) for a in d["arms"]}
            size = None if None in arms or len(arms) != 1 else 4 + arms.pop()  # type: ignore[operator]
        self._fixed[name] = size
        return size

    def needs_check(self, t: dict[str, Any]) -> bool:
        """Whether skipping the type must read it (enums, unions, lengths) or may just jump."""
        kind = t["kind"]
        if kind in ("int", "unsigned_int", "hyper", "unsigned_hyper", "bool", "opaque_fixed"):
            return False  # stellar-sdk reads bools as any int: so do we
        if kind == "array":
            return self.needs_check(t["element"])
        if kind == "ref":
            d = self.defs[t["name"]]
            if d["kind"] == "typedef":
                return self.needs_check(d["type"])
            if d["kind"] == "struct":
                return any(self.needs_check(f["type"]) for f in d["fields"])
            return True  # enums and unions have values to check
        return True

    def fixed_checks(self, t: dict[str, Any]) -> list[tuple[int, str, tuple[int, ...]]] | None:
        """For a fixed-size type whose only checks are discriminant/enum values at fixed offsets:
        those checks as (offset, "i32"|"u32", allowed values), so a parent can inline them.
        None when the type varies in size or needs more than that."""
        size = self.fixed(t)
        if size is None:
            return None
        kind = t["kind"]
        if kind in PRIMITIVE_SIZE or kind == "opaque_fixed":
            return []
        if kind == "array":
            inner = self.fixed_checks(t["element"])
            esize = self.fixed(t["element"])
            if inner is None or esize is None:
                return None
            return [(k * esize + off, how, vals) for k in range(int(t["count"])) for off, how, vals in inner]
        d = self.defs[t["name"]]
        if d["kind"] == "enum":
            return [(0, "i32", tuple(sorted({m["value"] for m in d["members"]})))]
        if d["kind"] == "typedef":
            return self.fixed_checks(d["type"])
        if d["kind"] == "struct":
            out: list[tuple[int, str, tuple[int, ...]]] = []
            off = 0
            for f in d["fields"]:
                inner = self.fixed_checks(f["type"])
                fsize = self.fixed(f["type"])
                if inner is None or fsize is None:
                    return None
                out.extend((off + o, how, vals) for o, how, vals in inner)
                off += fsize
            return out
        values: list[int] = []
        for arm in d["arms"]:
            if "type" in arm and self.fixed_checks(arm["type"]) != []:
                return None
            values.extend(c["value"] for c in arm["cases"])
        return [(0, "u32" if self.unsigned_disc(d) else "i32", tuple(sorted(values)))]

    def struct_plan(self, d: dict[str, Any], strict: bool = False) -> Iterator[tuple[Any, ...]]:
        """A struct's fields as steps, runs of plain fixed-size fields folded into one jump:
        ("jump", bytes), ("checks", checks, byte offset from here, what), ("skip", type, what)."""
        pending = 0
        for f in d["fields"]:
            t = f["type"]
            what = f"{d['name']}.{f['name']}"
            size = self.fixed(t)
            if size is not None and not (self.needs_check(t) or (strict and self.needs_strict(t))):
                pending += size
                continue
            checks = self.fixed_checks(t) if size is not None and not strict else None
            if checks is not None and size is not None:
                yield ("checks", checks, pending, what)
                pending += size
                continue
            if pending:
                yield ("jump", pending)
                pending = 0
            yield ("skip", t, what)
        if pending:
            yield ("jump", pending)

    def unsigned_disc(self, d: dict[str, Any]) -> bool:
        disc = d["discriminant"]["type"]
        return bool(
            disc["kind"] == "unsigned_int"
            or (disc["kind"] == "ref" and self.defs[disc["name"]].get("type", {}).get("kind") == "unsigned_int")
        )

    def needs_strict(self, t: dict[str, Any], seen: frozenset[str] = frozenset()) -> bool:
        """Whether the canonical check must read the type (it holds a bool or unaligned opaque)."""
        kind = t["kind"]
        if kind == "bool":
            return True
        if kind == "opaque_fixed":
            return bool(t["size"] % 4)
        if kind in ("array", "var_array", "optional"):
            return True if kind != "array" else self.needs_strict(t["element"], seen)
        if kind == "ref" and t["name"] not in seen:
            d = self.defs[t["name"]]
            inner = seen | {t["name"]}
            if d["kind"] == "typedef":
                return self.needs_strict(d["type"], inner)
            if d["kind"] == "struct":
                return any(self.needs_strict(f["type"], inner) for f in d["fields"])
            if d["kind"] == "union":
                return any("type" in a and self.needs_strict(a["type"], inner) for a in d["arms"])
        return False

    def closure(self, roots: tuple[str, ...]) -> list[str]:
        """Every named type reachable from ``roots``."""
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self._edges(n))
        return sorted(seen)

    # -- recursion -------------------------------------------------------------------------
    def _refs(self, t: dict[str, Any]) -> Iterator[str]:
        if t["kind"] == "ref":
            yield t["name"]
        for key in ("element", "type"):
            if key in t:
                yield from self._refs(t[key])

    def _edges(self, name: str) -> set[str]:
        d = self.defs[name]
        out: set[str] = set()
        if d["kind"] == "typedef":
            out.update(self._refs(d["type"]))
        elif d["kind"] == "struct":
            for f in d["fields"]:
                out.update(self._refs(f["type"]))
        elif d["kind"] == "union":
            for a in d["arms"]:
                if "type" in a:
                    out.update(self._refs(a["type"]))
        return out

    def _find_recursive(self) -> set[str]:
        edges = {n: self._edges(n) for n in self.defs}
        recursive = set()
        for start in self.defs:
            seen: set[str] = set()
            stack = list(edges[start])
            while stack:
                n = stack.pop()
                if n == start:
                    recursive.add(start)
                    break
                if n not in seen:
                    seen.add(n)
                    stack.extend(edges[n])
        return recursive
