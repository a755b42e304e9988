"""The compiled skippers (`cdp.xdr._cskip`, generated from the grammar) against the generated Python
ones: the same end offset, or the same refusal, on every shared ledger and on mutated ones; and the
same rows through `extract_rows_fast` whichever walker is active."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from array import array
from typing import Any

import pytest

from cdp.xdr import _skip as sk

from .conftest import LEDGERS, needs_shared, shared_index
from .helpers import ROOT

ck: Any = pytest.importorskip("cdp.xdr._cskip", reason="the C extension was not built (no C compiler at install)")


def _outcome(module: Any, w: array[int], o: int = 0, name: str = "s_LedgerCloseMeta") -> tuple[Any, ...]:
    try:
        return ("ok", getattr(module, name)(w, o))
    except sk.SkipError as exc:
        return ("refused", exc.what, exc.offset)
    except IndexError:
        return ("past the end",)


def _shared() -> list[bytes]:
    return [(LEDGERS / e["file"]).read_bytes() for e in shared_index()]


@needs_shared
def test_the_same_offsets_on_every_shared_ledger() -> None:
    raws = _shared()
    assert len(raws) > 300
    for raw in raws:
        w = sk.words(raw)
        assert _outcome(sk, w) == _outcome(ck, w) == _outcome(ck, raw) == ("ok", len(w))


@needs_shared
def test_the_same_refusals_on_mutated_ledgers() -> None:
    """Words overwritten with boundary values (lengths, discriminants, counts): both accept or both
    refuse, at the same place for the same reason."""
    rng = random.Random(20261128)
    raws = [r for r in _shared() if len(r) < 300_000]
    refused = 0
    for _ in range(3000):
        raw = bytearray(rng.choice(raws))
        for _ in range(rng.randint(1, 4)):
            k = rng.randrange(len(raw) // 4) * 4
            raw[k : k + 4] = rng.choice([b"\xff\xff\xff\xff", bytes(4), b"\x7f\xff\xff\xff", b"\x00\x00\x00\x01",
                                         b"\x80\x00\x00\x00", rng.randbytes(4)])  # fmt: skip
        if rng.random() < 0.2:
            raw = raw[: rng.randrange(len(raw) // 4) * 4]
        w = sk.words(bytes(raw))
        expected = _outcome(sk, w)
        assert expected == _outcome(ck, w) == _outcome(ck, bytes(raw))  # words, or the XDR bytes in place
        refused += expected[0] != "ok" or expected[1] != len(w)
    assert refused > 1000  # the mutations do reach the checks


def test_the_built_module_is_the_committed_source() -> None:
    """A .c regenerated but not rebuilt (`pip install -e .`, or `just gen`) would walk with old code."""
    from cdp._tools.gen_c import source_of

    assert source_of((ROOT / "cdp" / "xdr" / "_cskip.c").read_text()) == ck.SOURCE, "stale build: pip install -e ."


def test_bounds_and_depth() -> None:
    w = sk.words(bytes(8))
    for o in (2, 100):
        assert _outcome(sk, w, o) == _outcome(ck, w, o) == ("past the end",)
    with pytest.raises(IndexError):
        ck.s_LedgerCloseMeta(w, -1)
    nested = array("i", [16, 1] * 200 + [1, 0])  # SCV_VEC of SCV_VEC ... past the depth limit
    assert _outcome(sk, nested, 0, "s_SCVal") == _outcome(ck, nested, 0, "s_SCVal")
    assert "refused" == _outcome(ck, nested, 0, "s_SCVal")[0]
    with pytest.raises(TypeError, match=r"expected \(words, offset\[, depth\]\)"):
        ck.s_SCVal(w)
    with pytest.raises(sk.SkipError, match="XDR length not a multiple of 4 at byte 6"):
        ck.s_SCVal(bytes(6), 0)
    with pytest.raises(TypeError, match="expected XDR bytes or an array of 32-bit words"):
        ck.s_SCVal(array("q", [0]), 0)
    u32 = bytes([0, 0, 0, 4, 0, 0, 0, 7])  # SCV_U32 7
    assert ck.s_SCVal(u32, 0) == ck.s_SCVal(sk.words(u32), 0) == 2


@needs_shared
def test_rows_are_the_same_with_either_walker() -> None:
    """Every shared ledger, both modes, through `extract_rows_fast`: here (compiled) and in a process
    with DECODER=python (pure), compared by digest."""
    code = (
        "import hashlib, json, sys; from pathlib import Path; from cdp.extract import extract_rows_fast; "
        "from cdp.xdr._walker import WALKER; h = hashlib.sha256(); "
        "index = json.loads((Path(sys.argv[1]) / 'index.json').read_text()); "
        "[h.update(json.dumps(extract_rows_fast((Path(sys.argv[1]) / e['file']).read_bytes(), e['passphrase'], m), "
        "sort_keys=True).encode()) for e in index for m in ('compact', 'changes')]; print(WALKER, h.hexdigest())"
    )
    run = [sys.executable, "-c", code, str(LEDGERS)]
    pure = subprocess.run(run, cwd=ROOT, env={**os.environ, "DECODER": "python"}, capture_output=True, text=True)
    compiled = subprocess.run(run, cwd=ROOT, env={**os.environ, "DECODER": "fast"}, capture_output=True, text=True)
    assert pure.stdout.split()[0] == "python", pure.stderr
    assert compiled.stdout.split()[0] == "compiled", compiled.stderr
    assert pure.stdout.split()[1] == compiled.stdout.split()[1]
    assert hashlib.sha256().hexdigest() != pure.stdout.split()[1]


def _strict_outcome(module: Any, b: bytes, o: int, name: str) -> tuple[Any, ...]:
    import struct

    try:
        return ("ok", getattr(module, name)(b, o))
    except sk.SkipError as exc:
        return ("refused", exc.what, exc.offset)
    except struct.error:
        return ("past the end",)


@needs_shared
def test_the_strict_checks_agree_on_every_entry_and_on_mutated_values() -> None:
    """``c_SCAddress``/``c_SCVal`` (canonical encoding: zero padding, bools and flags 0/1, unsigned
    lengths) compiled and in Python: the same end or the same refusal, on every contract-data entry
    of the shared ledgers and on its key and value with words overwritten or cut short."""
    from cdp.extract._walk import read_raw_changes

    rng = random.Random(20261128)
    values: list[bytes] = []
    for raw in _shared():
        for change in read_raw_changes(raw)[1]:
            for start, end in (r for r in (change.pre, change.post) if r is not None):
                if int.from_bytes(raw[start + 4 : start + 8], "big") != 6:
                    continue
                entry = raw[start + 12 : end]  # contract address, key, durability, value
                o = sk.c_SCAddress(entry, 0)
                assert _strict_outcome(sk, entry, 0, "c_SCAddress") == _strict_outcome(ck, entry, 0, "c_SCAddress")
                for at in (o, sk.c_SCVal(entry, o) + 4):
                    assert _strict_outcome(sk, entry, at, "c_SCVal") == _strict_outcome(ck, entry, at, "c_SCVal")
                values.append(entry[o:])
    assert len(values) > 1000
    refused = 0
    for _ in range(20_000):
        value = bytearray(rng.choice(values))
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(len(value))
            value[k] = rng.choice([0, 1, 2, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        if rng.random() < 0.2:
            value = value[: rng.randrange(len(value) // 4 + 1) * 4]
        data = bytes(value)
        expected = _strict_outcome(sk, data, 0, "c_SCVal")
        assert expected == _strict_outcome(ck, data, 0, "c_SCVal"), data.hex()
        refused += expected[0] != "ok"
    assert refused > 2000  # the mutations do reach the checks
    with pytest.raises(TypeError, match="multiple of 4"):
        ck.c_SCVal(bytes(8), 2)


def _rendered(render: Any, data: bytes, at: int) -> tuple[Any, ...]:
    import json

    from cdp.extract._scval_json import Unsupported

    try:
        value, end = render(data, at)
        return ("ok", json.dumps(value), end)  # JSON text: True and 1 must not compare equal
    except Unsupported as exc:
        return ("unsupported", str(exc))
    except (ValueError, IndexError, TypeError):
        return ("error",)


@needs_shared
def test_scval_json_renders_what_the_python_renderer_renders() -> None:
    """``scval_json`` (C) against ``_scval_json.scval`` on every key and value of the shared ledgers
    and on 20,000 mutated values that pass the canonical check (what the fast path feeds it): the same
    JSON value and end, or the same ``Unsupported``; anything else it gets raises, never crashes."""
    from cdp.extract._scval_json import Unsupported, account_strkey, contract_strkey, scval
    from cdp.extract._walk import key_bounds, read_raw_changes

    def compiled(b: bytes, o: int) -> Any:
        return ck.scval_json(b, o, contract_strkey, account_strkey, Unsupported)

    values: list[bytes] = []
    for raw in _shared():
        for change in read_raw_changes(raw)[1]:
            for start, _ in (r for r in (change.pre, change.post) if r is not None):
                if int.from_bytes(raw[start + 4 : start + 8], "big") != 6:
                    continue
                key_start, key_end = key_bounds(raw, start)
                for at in (key_start, key_end):
                    assert _rendered(scval, raw, at) == _rendered(compiled, raw, at)
                    values.append(raw[at : sk.c_SCVal(raw, at)])
    assert len(values) > 1000
    rng = random.Random(20261128)
    checked = unsupported = 0
    for _ in range(20_000):
        value = bytearray(rng.choice(values))
        for _ in range(rng.randint(1, 3)):
            value[rng.randrange(len(value))] = rng.choice([0, 1, 2, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        data = bytes(value)
        got = _rendered(compiled, data, 0)
        try:
            canonical = sk.c_SCVal(data, 0) <= len(data)
        except Exception:  # noqa: BLE001 - any refusal: not what the fast path would render
            canonical = False
        if canonical:
            assert _rendered(scval, data, 0) == got, data.hex()
            checked += 1
            unsupported += got[0] == "unsupported"
    assert checked > 2000
    assert unsupported > 100
