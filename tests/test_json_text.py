"""The one JSON form rows are written in: orjson's text must be the standard library's, byte for byte."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp._json import json_lines, json_text
from cdp.extract import extract_rows_fast
from cdp.testing import SyntheticLedgers

from .conftest import LEDGERS, needs_shared, shared_index

STDLIB = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


@needs_shared
@pytest.mark.parametrize("entry", shared_index(), ids=lambda e: e["file"])
def test_every_shared_row_is_the_standard_librarys_text(entry: dict[str, Any]) -> None:
    rows, _ = extract_rows_fast((LEDGERS / entry["file"]).read_bytes(), entry["passphrase"], "full")
    for row in rows:
        assert json_text(row) == STDLIB(row)
    assert json_lines(rows) == "".join(STDLIB(r) + "\n" for r in rows).encode()


def test_synthetic_rows_are_the_standard_librarys_text() -> None:
    gen = SyntheticLedgers(seed=7)
    rows = [r for seq in range(2, 40) for r in extract_rows_fast(gen.ledger(seq), gen.passphrase, "full")[0]]
    assert len(rows) > 50
    assert json_lines(rows) == "".join(STDLIB(r) + "\n" for r in rows).encode()


def test_escapes_and_the_values_orjson_refuses() -> None:
    text = "".join(map(chr, range(0x30))) + '\u2028\u2029\x7f\ud7ff\ue000\U0001f600é"\\/'
    values = [
        {"b": text, "a": [1, -(2**63), 2**64 - 1, None, True, False, 0.5]},
        {"z": 2**64, "a": -(2**63) - 1},  # past 64 bits: orjson refuses, the standard library writes them
        {1: "x", 2: {"b": 1, "a": 2}},  # keys that are not strings
        {"n": {"y": {"b": [], "a": {}}}},
    ]
    for value in values:
        assert json_text(value) == STDLIB(value)
    assert json_lines(values) == "".join(STDLIB(v) + "\n" for v in values).encode()


def test_nan_and_infinities_are_null() -> None:
    """Not JSON in either spelling; written as null rather than Python's NaN/Infinity."""
    assert json_text({"a": math.nan, "b": math.inf, "c": -math.inf}) == '{"a":null,"b":null,"c":null}'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_is_the_standard_librarys_text(value: Any) -> None:
    try:
        expected = STDLIB(value)
    except UnicodeEncodeError:  # lone surrogates: neither can write them as UTF-8
        return
    assert json_text(value) == expected
