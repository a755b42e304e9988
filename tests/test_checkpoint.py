"""The checkpoint file: written atomically, read back exactly, refused with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdp._errors import CdpError
from cdp.pipeline import Checkpoint, read_checkpoint, write_checkpoint


def test_round_trip_and_no_temp_file_left(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    assert read_checkpoint(path) is None
    write_checkpoint(path, Checkpoint(41, 1234))
    write_checkpoint(path, Checkpoint(42, 5678))
    assert Checkpoint(42, 5678) == read_checkpoint(path)
    assert ["cp.json"] == [p.name for p in tmp_path.iterdir()]


@pytest.mark.parametrize(
    ("text", "why"),
    [("{", "is not JSON"), ('{"ledger": "x"}', "is not a cdp checkpoint"), ("[1]", "is not a cdp checkpoint"),
     ('{"ledger": -1}', "is not a cdp checkpoint"), ('{"ledger": 3, "output_offset": "9"}', "is not a cdp checkpoint"),
     ('{"ledger": 3, "network": 7}', "is not a cdp checkpoint"), ('{"ledger": 3, "network": ""}', "is not a cdp")],
)  # fmt: skip
def test_a_damaged_checkpoint_is_one_clear_error(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "cp.json"
    path.write_text(text)
    with pytest.raises(CdpError, match=f"^CHECKPOINT_PATH={path}: {why}"):
        read_checkpoint(path)
