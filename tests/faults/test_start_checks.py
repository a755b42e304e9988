"""What `cdp run` refuses before it writes anything: a checkpoint and output that disagree, a second
instance on the same files, and settings it cannot use; and outputs that are streams, not files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from ..helpers import CDP, ROOT, FakeSourceProcess


def _run(tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"SOURCE_ENDPOINT": "127.0.0.1:9", "HEALTH_PORT": "0", "WORKER_MODE": "thread",
            "CHECKPOINT_PATH": str(tmp / "cp.json"), "OUTPUT": str(tmp / "out.jsonl")}  # fmt: skip
    return subprocess.run([*CDP, "run"], cwd=ROOT, env={**os.environ, **base, **env}, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def _snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


JSONL_CASES = {
    "file-shorter-than-offset": ({"ledger": 5, "output_offset": 100}, b"x" * 10, "the output has 10 bytes but"),
    "missing-file": ({"ledger": 5, "output_offset": 100}, None, "but the output file is missing"),
    "null-offset-beside-a-file": ({"ledger": 5, "output_offset": None}, b"{}\n", "has no output offset"),
    "bool-ledger": ({"ledger": True, "output_offset": 0}, b"", "is not a cdp checkpoint"),
    "text-ledger": ({"ledger": "5", "output_offset": 0}, b"", "is not a cdp checkpoint"),
    "float-offset": ({"ledger": 5, "output_offset": 1.5}, b"", "is not a cdp checkpoint"),
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_checkpoint_and_jsonl_output_that_disagree_stop_the_start(tmp_path: Path, case: str) -> None:
    checkpoint, output, why = JSONL_CASES[case]
    (tmp_path / "cp.json").write_text(json.dumps(checkpoint))
    if output is not None:
        (tmp_path / "out.jsonl").write_bytes(output)
    before = _snapshot(tmp_path)
    proc = _run(tmp_path)
    assert 2 == proc.returncode, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("cdp: error: CHECKPOINT_PATH=")
    assert why in last
    assert "Traceback" not in proc.stderr
    assert before == {k: v for k, v in _snapshot(tmp_path).items() if not k.endswith(".lock")}


@pytest.mark.parametrize(
    ("checkpoint", "files", "why"),
    [
        ({"ledger": 7, "output_offset": None}, ["contract_data-0000000002-0000000004.parquet"], "no contract_data"),
        ({"ledger": 3, "output_offset": None}, ["contract_data-0000000002-0000000004.parquet"], "runs past"),
        ({"ledger": 4, "output_offset": 512}, ["contract_data-0000000002-0000000004.parquet"], "by a JSONL run"),
    ],
    ids=["no-file-at-the-checkpoint", "file-past-the-checkpoint", "checkpoint-from-a-jsonl-run"],
)
def test_checkpoint_and_parquet_files_that_disagree_stop_the_start(
    tmp_path: Path, checkpoint: dict[str, object], files: list[str], why: str
) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow (the parquet extra) is not installed")
    out = tmp_path / "pq"
    out.mkdir()
    for name in files:
        (out / name).write_bytes(b"PAR1")
    (tmp_path / "cp.json").write_text(json.dumps(checkpoint))
    proc = _run(tmp_path, OUTPUT=str(out), FORMAT="parquet")
    assert 2 == proc.returncode, proc.stderr
    assert why in proc.stderr.strip().splitlines()[-1]
    assert files == sorted(p.name for p in out.glob("*.parquet"))


@pytest.mark.parametrize("shared", ["checkpoint", "output"])
def test_a_second_instance_on_the_same_files_exits_2_naming_the_first(tmp_path: Path, shared: str) -> None:
    fake = FakeSourceProcess("--rate", "20")
    fake.start()
    first_env = {**os.environ, "SOURCE_ENDPOINT": fake.endpoint, "HEALTH_PORT": "0", "WORKER_MODE": "thread",
                 "CHECKPOINT_PATH": str(tmp_path / "cp.json"), "OUTPUT": str(tmp_path / "out.jsonl")}  # fmt: skip
    first = subprocess.Popen([*CDP, "run"], cwd=ROOT, env=first_env, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stderr is not None
        assert any("service started" in line for line in first.stderr)
        other = {"checkpoint": {"OUTPUT": str(tmp_path / "other.jsonl")},
                 "output": {"CHECKPOINT_PATH": str(tmp_path / "other.json")}}[shared]  # fmt: skip
        second = _run(tmp_path, SOURCE_ENDPOINT=fake.endpoint, **other)
    finally:
        first.terminate()
        first.communicate(timeout=30)
        fake.stop()
    assert 2 == second.returncode, second.stderr
    setting = "CHECKPOINT_PATH" if shared == "checkpoint" else "OUTPUT"
    assert f"in use by another cdp process (pid {first.pid})" in second.stderr.strip().splitlines()[-1]
    assert second.stderr.strip().splitlines()[-1].startswith(f"cdp: error: {setting}=")
    assert 0 == first.returncode


def test_output_to_dev_null_and_to_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(fifo.read_text().splitlines()))
    reader.start()
    fake = FakeSourceProcess()
    fake.start()
    try:
        to_null = _run(tmp_path, SOURCE_ENDPOINT=fake.endpoint, OUTPUT="/dev/null", END_LEDGER="10",
                       CHECKPOINT_PATH=str(tmp_path / "null.json"))  # fmt: skip
        to_fifo = _run(tmp_path, SOURCE_ENDPOINT=fake.endpoint, OUTPUT=str(fifo), END_LEDGER="10",
                       CHECKPOINT_PATH=str(tmp_path / "fifo.json"))  # fmt: skip
    finally:
        fake.stop()
        reader.join(timeout=30)
    assert (0, 0) == (to_null.returncode, to_fifo.returncode), to_null.stderr + to_fifo.stderr
    assert got
    assert {2, 10} <= {json.loads(line)["ledger_sequence"] for line in got}
