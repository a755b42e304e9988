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
