"""The one row definition: what both decoders emit is exactly what ``ContractDataRow`` declares."""

from __future__ import annotations

import pytest

from cdp.extract import (
    CHANGE_FIELDS,
    INSTANCE_FIELDS,
    ROW_FIELDS,
    ContractDataRow,
    Mode,
    extract_rows,
    extract_rows_fast,
    field_types,
    row_fields,
)
from cdp.testing import SyntheticLedgers


def test_row_definition_names_every_field_once() -> None:
    declared = list(field_types(ContractDataRow))
    assert len(declared) == len(set(declared))
    assert set(declared) == {*ROW_FIELDS, *INSTANCE_FIELDS, *CHANGE_FIELDS}


@pytest.mark.parametrize("mode", ["compact", "changes"])
def test_both_decoders_emit_the_declared_fields_in_declared_order(mode: Mode) -> None:
    gen = SyntheticLedgers(seed=3)
    seen = 0
    for seq in range(2, 12):
        raw = gen.ledger(seq)
        fast, fell_back = extract_rows_fast(raw, gen.passphrase, mode)
        full = extract_rows(raw, gen.passphrase, mode)
        assert not fell_back
        assert fast == full
        for row in fast:
            assert tuple(row) == tuple(f for f in field_types(ContractDataRow) if f in row_fields(mode, True))
            seen += 1
    assert seen > 20
