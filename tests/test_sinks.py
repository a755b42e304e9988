"""The sinks on their own: what each writes, what it reports durable, and which one a config opens."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pytest

from cdp._config import Config
from cdp.extract import Row
from cdp.sinks import CallbackSink, Durable, JsonlFileSink, StdoutSink, open_sink

ROWS: list[Row] = [{"b": 2, "a": "é"}, {"a": 1}]


async def test_jsonl_file_reports_offsets_and_truncates_back_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlFileSink(path, None)
    first = await sink.write(2, ROWS)
    second = await sink.write(3, [])
    third = await sink.write(4, ROWS[1:])
    sink.close()
    line = '{"a":"é","b":2}\n{"a":1}\n'.encode()
    assert Durable(2, len(line)) == first
    assert Durable(3, len(line)) == second
    assert third == Durable(4, len(line) + len(b'{"a":1}\n'))
    resumed = JsonlFileSink(path, len(line))  # a restart after the checkpoint of ledger 3
    assert Durable(4, third.offset) == await resumed.write(4, ROWS[1:])
    resumed.close()
    assert line + b'{"a":1}\n' == path.read_bytes()
    assert await JsonlFileSink(path, 0).flush() is None


async def test_stdout_sink_writes_sorted_compact_lines() -> None:
    stream = io.StringIO()
    assert Durable(5) == await StdoutSink(stream).write(5, ROWS)
    assert ['{"a":"é","b":2}', '{"a":1}'] == stream.getvalue().splitlines()


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_callback_sink_takes_sync_and_async_callbacks(asynchronous: bool) -> None:
    got: list[tuple[int, Sequence[Row]]] = []

    def sync(sequence: int, rows: Sequence[Row]) -> None:
        got.append((sequence, rows))

    async def async_(sequence: int, rows: Sequence[Row]) -> None:
        got.append((sequence, rows))

    assert Durable(7) == await CallbackSink(async_ if asynchronous else sync).write(7, ROWS)
    assert [(7, ROWS)] == got


def test_open_sink_follows_the_config(tmp_path: Path) -> None:
    def opened(**values: str) -> str:
        sink = open_sink(Config.from_mapping(values), start=2, resume_offset=None, processor_name="contract_data")
        sink.close()
        return sink.name

    assert "stdout" == opened()
    assert "jsonl_file" == opened(output=str(tmp_path / "x.jsonl"))
    assert "parquet" == opened(output=str(tmp_path / "pq"), format="parquet")
    assert (
        "callback"
        == open_sink(
            Config.from_mapping({}), on_rows=lambda s, r: None, start=2, resume_offset=None, processor_name="x"
        ).name
    )


@pytest.mark.parametrize(
    ("output", "sink", "own_checkpoint", "backfill", "replay"),
    [
        ("-", "StdoutSink", False, None, None),
        ("rows.jsonl", "JsonlFileSink", False, None, "jsonl"),
        ("out/", "ParquetSink", False, "files", "parquet"),
        ("s3://bucket/out/", "ObjectParquetSink", True, "files", None),
        ("postgresql://cdp@/db", "PostgresSink", True, "ordered", None),
        ("iceberg://lake", "IcebergSink", True, "commit", None),
    ],
)
def test_each_output_declares_what_it_can_do(
    output: str, sink: str, own_checkpoint: bool, backfill: str | None, replay: str | None
) -> None:
    from cdp.sinks import sink_type

    kind = sink_type(Config.from_mapping({"output": output}))
    caps = kind.capabilities
    assert (kind.__name__, caps.own_checkpoint, caps.backfill, caps.replay) == (sink, own_checkpoint, backfill, replay)
    if own_checkpoint:  # opened with the settings, says where a run goes on
        assert callable(kind.for_config)
        assert callable(kind.open)
    if backfill is not None:
        assert callable(kind.require)


def test_the_service_and_the_backfill_ask_capabilities_never_a_sinks_name_or_format() -> None:
    import re

    from .helpers import ROOT

    cdp_dir = ROOT / "cdp"
    readers = [cdp_dir / "_service.py", *(cdp_dir / "batch").glob("*.py"), *(cdp_dir / "pipeline").glob("*.py"),
               cdp_dir / "sinks" / "_flight_hub.py"]  # fmt: skip
    name_test = re.compile(
        r"\bsink\.name\s*(==|!=|in\b)|format\s*(==|!=|not in|in)\s*[(\"'](?!iceberg)|isinstance\(sink"
    )
    assert {p.name: name_test.findall(p.read_text()) for p in readers if name_test.search(p.read_text())} == {}
