"""``schema/fields.md`` is generated from the row definitions and covers every column any output holds."""

from __future__ import annotations

import re

import pytest

from cdp._config import Config
from cdp.extract import Ledger
from cdp.processors import BUILTIN, load_processor
from cdp.processors._base import ProcessResult
from cdp.testing import SyntheticLedgers

from .conftest import ROOT

DOC = ROOT / "schema" / "fields.md"


def _sections() -> dict[str, set[str]]:
    """Each ``## `PROCESSOR=name` `` section's columns, and every column named in any table."""
    out: dict[str, set[str]] = {"*": set()}
    current = "*"
    for line in DOC.read_text().splitlines():
        heading = re.match(r"## `PROCESSOR=(\w+)`", line)
        if heading:
            current = heading[1]
            out[current] = set()
        elif line.startswith("## "):
            current = "*"
        cell = re.match(r"\| `(\w+)`", line)
        if cell:
            out.setdefault(current, set()).add(cell[1])
            out["*"].add(cell[1])
    return out


def test_the_dictionary_is_current() -> None:
    pytest.importorskip("pyarrow")
    from cdp._tools.gen_fields import document

    assert DOC.read_text() == document(), "schema/fields.md is stale: run `just gen`"


@pytest.mark.parametrize("name", sorted(BUILTIN))
@pytest.mark.parametrize("mode", ["compact", "changes"])
def test_every_column_a_processor_writes_is_described(name: str, mode: str) -> None:
    """The rows each built-in processor writes (restores and evictions included), in both modes."""
    config = Config.from_mapping({"processor": name, "mode": mode, "network_passphrase": "testnet"})
    processor = load_processor(name, config)
    gen = SyntheticLedgers(seed=5)
    columns: set[str] = set(getattr(processor, "columns", ()))
    for seq in range(2, 40):
        out = processor.process(Ledger(seq, gen.close_time(seq), gen.ledger(seq)))
        for row in out.rows if isinstance(out, ProcessResult) else out:
            columns |= set(row)
    assert columns
    assert columns <= _sections()[name], columns - _sections()[name]


def test_every_postgresql_and_ttp_column_is_described() -> None:
    from cdp.sinks._parquet import TTP_COLUMNS
    from cdp.sinks._pg_rows import CURRENT_COLUMNS, HISTORY_COLUMNS

    named = _sections()["*"]
    wanted = {n for n, _ in HISTORY_COLUMNS} | {n for n, _ in CURRENT_COLUMNS} | {c for c, _ in TTP_COLUMNS}
    assert wanted | {"row_in_ledger", "archived", "archived_at_ledger"} <= named
