"""Generate ``cdp/xdr/_cskip.c``: the word skippers of ``_skip.py`` as a C extension, from the same grammar.

Each ``s_<Type>(w, o, depth=0)`` takes what the Python one takes (the ledger as 32-bit words, any
buffer of them, e.g. ``words(raw)``) and returns the same index, or raises the same ``SkipError``.
It accepts and refuses exactly what the Python skipper does (a differential test runs both on
every shared ledger and on mutated ones). Every read is bounds-checked; recursion is capped at
``MAX_DEPTH`` as in Python; nothing is allocated; the GIL is released while a call walks.

Run: ``python -m cdp._tools.gen_c schema/xdr-grammar.json cdp/xdr/_cskip.c`` (``just gen``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any, Final

from ._c_scan import SCAN
from ._c_scval import SCVAL_JSON
from ._c_templates import FOOTER, HEADER
from ._grammar import MAX_DEPTH, Grammar
from .gen_xdr import STRICT_ROOTS


class CWriter:
    """Emits C skippers; ``strict`` ones (``k_<Type>``, behind the Python-facing ``c_<Type>``) also
    demand the canonical encoding, exactly as ``gen_xdr``'s strict writer: lengths and counts read
    unsigned, zero padding, bools and optional flags 0 or 1."""

    def __init__(self, g: Grammar, strict: bool = False) -> None:
        self.g = g
        self.strict = strict
        self.lines: list[str] = []
        self.loop = 0

    def fn(self, name: str) -> str:
        return ("k_" if self.strict else "s_") + name

    def needs_read(self, t: dict[str, Any]) -> bool:
        """Whether skipping ``t`` must read it (``gen_xdr``'s condition, per mode)."""
        return self.g.needs_check(t) or (self.strict and self.g.needs_strict(t))

    def padding(self, indent: str, word: str, used: str, what: str) -> None:
        """Fail unless the bytes of word ``word`` after its first ``used`` (1-3) are zero; a word past
        the end is not checked (Python's ``any()`` over a short slice)."""
        self.emit(f"{indent}if ({word} < c->n && ((uint32_t)WORD(c, {word}) & (0xffffffffu >> (8 * ({used})))))")
        self.emit(f"{indent}  return FAIL(c, {json.dumps(what)}, o);")

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def read(self, indent: str, var: str, k: int = 0) -> None:
        at = f"o + {k}" if k else "o"
        self.emit(f"{indent}if (RD(c, {at}, &{var})) return -1;")

    def fail(self, indent: str, what: str, at: str = "o") -> None:
        self.emit(f"{indent}return FAIL(c, {json.dumps(what)}, {at});")

    def call(self, indent: str, name: str, depth: str) -> None:
        self.emit(f"{indent}o = {self.fn(name)}(c, o, {depth});")
        self.emit(f"{indent}if (o < 0) return -1;")

    @staticmethod
    def cases(values: list[int] | tuple[int, ...], unsigned: bool) -> str:
        return " ".join(f"case {v}{'u' if unsigned else ''}:" for v in sorted(values))

    def member(self, indent: str, var: str, values: tuple[int, ...], unsigned: bool, what: str, at: str) -> None:
        """Fail unless ``var`` is one of ``values``."""
        if len(values) == 1:
            v = values[0]
            lhs = f"(uint32_t){var}" if unsigned else var
            self.emit(f"{indent}if ({lhs} != {v}{'u' if unsigned else ''}) return FAIL(c, {json.dumps(what)}, {at});")
            return
        sw = f"(uint32_t){var}" if unsigned else var
        self.emit(f"{indent}switch ({sw}) {{ {self.cases(values, unsigned)} break; "
                  f"default: return FAIL(c, {json.dumps(what)}, {at}); }}")  # fmt: skip

    def skip(self, t: dict[str, Any], indent: str, what: str) -> None:
        """Statements advancing ``o`` past a value of type ``t`` (mirrors ``Writer.skip_expr``)."""
        g = self.g
        size = g.fixed(t)
        kind = t["kind"]
        if self.strict and kind == "bool":
            self.emit(f"{indent}{{ int32_t v; if (RD(c, o, &v)) return -1;")
            self.emit(f"{indent}  if ((uint32_t)v > 1u) return FAIL(c, {json.dumps(what)}, o); }}")
            self.emit(f"{indent}o += 1;")
            return
        if self.strict and kind == "opaque_fixed" and t["size"] % 4:
            assert size is not None
            self.padding(indent, f"o + {t['size'] // 4}", str(t["size"] % 4), what)
            self.emit(f"{indent}o += {size // 4};")
            return
        if size is not None and not self.needs_read(t):
            self.emit(f"{indent}o += {size // 4};")
            return
        checks = g.fixed_checks(t) if size is not None and not self.strict else None
        if checks is not None and size is not None:
            self.inline_checks(checks, 0, indent, what)
            self.emit(f"{indent}o += {size // 4};")
            return
        if kind == "ref":
            d = g.defs[t["name"]]
            if d["kind"] == "enum":
                values = tuple(sorted({m["value"] for m in d["members"]}))
                self.emit(f"{indent}{{ int32_t v; if (RD(c, o, &v)) return -1;")
                self.member(indent + "  ", "v", values, False, d["name"], "o")
                self.emit(f"{indent}}}")
                self.emit(f"{indent}o += 1;")
            elif d["kind"] == "typedef" and t["name"] not in g.recursive:
                self.skip(d["type"], indent, d["name"])
            elif d["kind"] == "struct" and t["name"] not in g.recursive and len(d["fields"]) <= 6:
                self.struct_body(d, indent)
            else:
                self.call(indent, t["name"], "depth + 1" if t["name"] in g.recursive else "depth")
        elif kind in ("opaque_var", "string") and self.strict:
            limit = t.get("max_size")
            self.emit(f"{indent}{{ int32_t v; if (RD(c, o, &v)) return -1;")
            self.emit(f"{indent}  Py_ssize_t n = (Py_ssize_t)(uint32_t)v;")
            if limit is not None:
                self.emit(f"{indent}  if (n > {limit}) return FAIL(c, {json.dumps(what)}, o);")
            self.emit(f"{indent}  if (n & 3) {{")
            self.padding(indent + "    ", "o + 1 + (n >> 2)", "n & 3", what)
            self.emit(f"{indent}  }}")
            self.emit(f"{indent}  o += 1 + ((n + 3) >> 2); }}")
        elif kind in ("opaque_var", "string"):
            limit = t.get("max_size")
            bound = f"n < 0 || n > {limit}" if limit is not None else "n < 0"
            self.emit(f"{indent}{{ int32_t n; if (RD(c, o, &n)) return -1;")
            self.emit(f"{indent}  if ({bound}) return FAIL(c, {json.dumps(what)}, o);")
            self.emit(f"{indent}  o += 1 + (((Py_ssize_t)n + 3) >> 2); }}")
        elif kind == "optional":
            self.emit(f"{indent}{{ int32_t flag; if (RD(c, o, &flag)) return -1;")
            if self.strict:
                self.emit(f"{indent}  if (flag != 0 && flag != 1) return FAIL(c, {json.dumps(what)}, o);")
            self.emit(f"{indent}  o += 1;")
            self.emit(f"{indent}  if (flag) {{")
            self.skip(t["element"], indent + "    ", what)
            self.emit(f"{indent}  }} }}")
        elif kind == "var_array":
            limit = t.get("max_count")
            elem = t["element"]
            esize = g.fixed(elem)
            if self.strict:  # unsigned, and (as in Python) against the bytes left, not the words
                bound = f"n > {limit} || n > 4 * (c->n - o)" if limit is not None else "n > 4 * (c->n - o)"
                self.emit(f"{indent}{{ int32_t v; if (RD(c, o, &v)) return -1;")
                self.emit(f"{indent}  Py_ssize_t n = (Py_ssize_t)(uint32_t)v;")
            else:
                bound = f"n < 0 || n > {limit} || n > c->n - o" if limit is not None else "n < 0 || n > c->n - o"
                self.emit(f"{indent}{{ int32_t n; if (RD(c, o, &n)) return -1;")
            self.emit(f"{indent}  o += 1;")
            self.emit(f"{indent}  if ({bound}) return FAIL(c, {json.dumps(what)}, o);")
            if esize is not None and not self.needs_read(elem):
                self.emit(f"{indent}  o += (Py_ssize_t)n * {esize // 4}; }}")
            else:
                self.loop += 1
                i = f"i{self.loop}"
                self.emit(f"{indent}  for (Py_ssize_t {i} = 0; {i} < n; {i}++) {{")
                self.skip(elem, indent + "    ", what)
                self.emit(f"{indent}  }} }}")
        elif kind == "array":
            self.loop += 1
            i = f"i{self.loop}"
            self.emit(f"{indent}for (int {i} = 0; {i} < {t['count']}; {i}++) {{")
            self.skip(t["element"], indent + "  ", what)
            self.emit(f"{indent}}}")
        else:
            raise ValueError(f"unhandled type {t}")

    def inline_checks(self, checks: list[tuple[int, str, tuple[int, ...]]], base: int, indent: str, what: str) -> None:
        for off, how, values in checks:
            k = (base + off) // 4
            at = f"o + {k}" if k else "o"
            self.emit(f"{indent}{{ int32_t v; if (RD(c, {at}, &v)) return -1;")
            self.member(indent + "  ", "v", values, how == "u32", what, at)
            self.emit(f"{indent}}}")

    def struct_body(self, d: dict[str, Any], indent: str) -> None:
        for step in self.g.struct_plan(d, self.strict):
            if step[0] == "jump":
                self.emit(f"{indent}o += {step[1] // 4};")
            elif step[0] == "checks":
                self.inline_checks(step[1], step[2], indent, step[3])
            else:
                self.skip(step[1], indent, step[2])

    def union(self, name: str, d: dict[str, Any]) -> None:
        g = self.g
        unsigned = g.unsigned_disc(d)
        self.emit("  int32_t v; if (RD(c, o, &v)) return -1;")
        self.emit("  o += 1;")
        self.emit(f"  switch ({'(uint32_t)v' if unsigned else 'v'}) {{")
        for arm in d["arms"]:
            values = [c["value"] for c in arm["cases"]]
            self.emit(f"  {self.cases(values, unsigned)} {{")
            if "type" in arm:
                self.skip(arm["type"], "    ", name)
            self.emit("    return o; }")
        self.emit("  default: break;")
        self.emit("  }")
        self.fail("  ", name, "o - 1")

    def function(self, name: str) -> None:
        d = self.g.defs[name]
        self.emit(f"static Py_ssize_t {self.fn(name)}(Ctx *c, Py_ssize_t o, int depth) {{")
        self.emit("  (void)depth;")
        if name in self.g.recursive:
            self.emit(f"  if (depth > {MAX_DEPTH}) return FAIL(c, {json.dumps(name)}, o);")
        if d["kind"] == "typedef":
            self.skip(d["type"], "  ", name)
        elif d["kind"] == "struct":
            self.struct_body(d, "  ")
        else:
            self.union(name, d)
            self.emit("}")
            self.emit("")
            return
        self.emit("  return o;")
        self.emit("}")
        self.emit("")


# The skips long enough to be worth letting go of the GIL for: whole ledgers (splitting a batch).
RELEASES_GIL: Final = frozenset(("LedgerCloseMeta", "LedgerCloseMetaBatch"))


def wrapper(name: str) -> str:
    return (
        f"static PyObject *py_s_{name}(PyObject *m, PyObject *const *a, Py_ssize_t n) "
        f"{{ return call(m, s_{name}, a, n, {int(name in RELEASES_GIL)}); }}"
    )


def strict_wrapper(name: str) -> str:
    return (
        f"static PyObject *py_c_{name}(PyObject *m, PyObject *const *a, Py_ssize_t n) "
        f"{{ return call_strict(m, k_{name}, a, n); }}"
    )


def generate(data: dict[str, Any]) -> str:
    g = Grammar(data)
    w = CWriter(g)
    strict = CWriter(g, strict=True)
    names = sorted(n for n, d in g.defs.items() if d["kind"] != "enum")
    strict_names = [n for n in g.closure(STRICT_ROOTS) if g.defs[n]["kind"] != "enum"]
    protos = [f"static Py_ssize_t s_{n}(Ctx *c, Py_ssize_t o, int depth);" for n in names]
    protos += [f"static Py_ssize_t k_{n}(Ctx *c, Py_ssize_t o, int depth);" for n in strict_names]
    for name in names:
        w.function(name)
    for name in strict_names:
        strict.function(name)
    methods = ",\n".join(f'  {{"s_{n}", (PyCFunction)(void (*)(void))py_s_{n}, METH_FASTCALL, NULL}}' for n in names)
    methods += "".join(
        f',\n  {{"c_{n}", (PyCFunction)(void (*)(void))py_c_{n}, METH_FASTCALL, NULL}}' for n in strict_names
    )
    methods += ',\n  {"scan_ledger", (PyCFunction)(void (*)(void))py_scan_ledger, METH_FASTCALL, NULL}'
    methods += ',\n  {"scval_json", (PyCFunction)(void (*)(void))py_scval_json, METH_FASTCALL, NULL}'
    module = f"""
static PyMethodDef methods[] = {{
{methods},
  {{NULL, NULL, 0, NULL}}
}};

static struct PyModuleDef module = {{
  PyModuleDef_HEAD_INIT, "_cskip", "Compiled XDR skippers (generated).", -1, methods
}};

PyMODINIT_FUNC PyInit__cskip(void) {{
  PyObject *skip = PyImport_ImportModule("cdp.xdr._skip");
  if (!skip) return NULL;
  SkipError = PyObject_GetAttrString(skip, "SkipError");
  Py_DECREF(skip);
  if (!SkipError) return NULL;
  PyObject *made = PyModule_Create(&module);
  if (made && PyModule_AddStringConstant(made, "SOURCE", CSKIP_SOURCE) < 0) Py_CLEAR(made);
  return made;
}}
"""
    body = (
        "\n".join(protos)
        + "\n\n"
        + "\n".join(w.lines + strict.lines)
        + FOOTER
        + SCAN
        + SCVAL_JSON
        + "\n".join(wrapper(n) for n in names)
        + "\n"
        + "\n".join(strict_wrapper(n) for n in strict_names)
        + "\n"
        + module
    )
    return HEADER + source_line(body) + body


def source_line(body: str) -> str:
    """The digest of the generated code, compiled in as ``_cskip.SOURCE``: a built module older than
    its ``.c`` (regenerated, not rebuilt) is then caught by a test instead of silently used."""
    return f'#define CSKIP_SOURCE "{hashlib.sha256(body.encode()).hexdigest()}"\n\n'


def source_of(text: str) -> str:
    """The digest ``source_line`` put into a generated file's text."""
    head, sep, body = text.partition('#define CSKIP_SOURCE "')
    return hashlib.sha256(body.partition("\n\n")[2].encode()).hexdigest() if sep else ""


def main() -> None:
    grammar, output = sys.argv[1:3]
    with open(grammar, encoding="utf-8") as f:
        text = generate(json.load(f))
    with open(output, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
