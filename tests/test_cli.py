"""The `cdp` command as users run it: demo, extract, version, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from cdp.extract._rows import ETL_FIELDS

from .conftest import LEDGERS, expected_rows, needs_shared
from .helpers import CDP, ROOT, fake_source_process


def _run(*args: str, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CDP, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)  # type: ignore[call-overload, no-any-return]


def test_version() -> None:
    """`cdp --version` prints the package version."""
    from cdp import __version__

    proc = _run("--version")
    assert 0 == proc.returncode
    from cdp.xdr._walker import WALKER

    assert f"cdp {__version__} (XDR walker: {WALKER})" == proc.stdout.strip()


def test_demo_prints_rows_with_every_etl_field() -> None:
    """`cdp demo --ledgers 5` prints JSONL rows with all stellar-etl fields and exits 0."""
    proc = _run("demo", "--ledgers", "5")
    assert 0 == proc.returncode, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows
    for row in rows:
        assert set(ETL_FIELDS) <= set(row)
    assert list(range(2, 7)) == sorted({r["ledger_sequence"] for r in rows})
    seqs = [r["ledger_sequence"] for r in rows]
    assert seqs == sorted(seqs)


@needs_shared
def test_extract_matches_expected_rows() -> None:
    """`cdp extract` prints exactly the expected compact rows, sorted keys, compact JSON."""
    files = ["pubnet-56065483.xdr", "pubnet-53312000.xdr", "testnet-4873.xdr"]
    for mode in ("compact", "changes"):
        for f in files:
            network = "pubnet" if f.startswith("pubnet") else "testnet"
            proc = _run("extract", "--network", network, "--mode", mode, str(LEDGERS / f))
            assert 0 == proc.returncode, proc.stderr
            lines = proc.stdout.splitlines()
            assert expected_rows(mode, f) == [json.loads(line) for line in lines]
            for line in lines:
                assert json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"), ensure_ascii=False) == line


@needs_shared
def test_extract_orders_by_sequence_and_survives_a_bad_file(tmp_path: Path) -> None:
    """A bad file gives one error line with file and byte offset, exit 1; the others still print, in order."""
    bad = tmp_path / "bad.xdr"
    good = LEDGERS / "pubnet-53312000.xdr"
    bad.write_bytes(good.read_bytes()[:5000])
    other = LEDGERS / "pubnet-51000294.xdr"
    proc = _run("extract", "--network", "pubnet", str(good), str(bad), str(other))
    assert 1 == proc.returncode
    errors = proc.stderr.strip().splitlines()
    assert 1 == len(errors)
    assert str(bad) in errors[0]
    assert "at byte" in errors[0]
    seqs = [json.loads(line)["ledger_sequence"] for line in proc.stdout.splitlines()]
    assert seqs == sorted(seqs)
    assert {51000294, 53312000} == set(seqs)


def test_extract_reads_galexie_batches(tmp_path: Path) -> None:
    """A zstd LedgerCloseMetaBatch yields the same rows as its ledgers one by one."""
    import zstandard
    from stellar_sdk import xdr

    from cdp.testing import SyntheticLedgers

    gen = SyntheticLedgers(seed=4)
    metas = [gen.ledger_meta(s) for s in (10, 11, 12)]
    batch = xdr.LedgerCloseMetaBatch(xdr.Uint32(10), xdr.Uint32(12), metas)
    path = tmp_path / "FFFFFFF5--10-12.xdr.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(batch.to_xdr_bytes()))
    for s in (10, 11, 12):
        (tmp_path / f"{s}.xdr").write_bytes(gen.ledger(s))
    from_batch = _run("extract", str(path))
    from_files = _run("extract", *(str(tmp_path / f"{s}.xdr") for s in (12, 10, 11)))
    assert 0 == from_batch.returncode == from_files.returncode, from_batch.stderr
    assert from_files.stdout == from_batch.stdout
    assert from_batch.stdout


def test_run_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM mid-run: exit 0 within 5 s, and the checkpoint resumes exactly where the file ends."""
    with fake_source_process() as fake:
        port = fake.port
        out, cp = tmp_path / "out.jsonl", tmp_path / "cp.json"
        env = {**os.environ, "SOURCE_ENDPOINT": f"127.0.0.1:{port}", "HEALTH_PORT": "0", "WORKER_MODE": "thread",
               "CHECKPOINT_PATH": str(cp), "OUTPUT": str(out), "PROGRESS_EVERY": "1"}  # fmt: skip
        run = subprocess.Popen([*CDP, "run"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        assert run.stderr is not None
        for line in run.stderr:
            if "progress ledger=5 " in line:  # logged after ledger 5's checkpoint is written
                break
        run.send_signal(signal.SIGTERM)
        assert 0 == run.wait(timeout=5)
        state = json.loads(cp.read_text())
        assert out.stat().st_size == state["output_offset"]
        last = json.loads(out.read_text().splitlines()[-1])["ledger_sequence"]
        assert last == state["ledger"]
        run.communicate()


def test_busy_ports_are_one_line_errors() -> None:
    """A health port or fake-source port already taken: exit 1 with one line, no traceback."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "HEALTH_PORT": str(port), "HEALTH_HOST": "127.0.0.1"}
        run = _run("run", env=env, timeout=60)
        fake = _run("fake-source", "--port", str(port), timeout=60)
    assert (1, 1) == (run.returncode, fake.returncode)
    assert (
        run.stderr.strip().splitlines()[-1]
        == f"cdp: error: HEALTH_PORT={port}: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert (
        fake.stderr.strip()
        .splitlines()[-1]
        .startswith(f"cdp: error: --port={port}: cannot listen on 127.0.0.1:{port}: ")
    )
    assert "Traceback" not in run.stderr + fake.stderr


def test_documented_exits_for_unusable_settings(tmp_path: Path) -> None:
    """Settings `cdp` cannot use are usage errors (exit 2), one line each, never a traceback."""
    bad_toml = tmp_path / "cdp.toml"
    bad_toml.write_bytes(b'worker_count = "\xff\xfe"\n')
    cases = [
        (["run", "--config", str(bad_toml)], {}, f"cdp: error: --config={bad_toml}: not UTF-8 text (byte 16)"),
        (["fake-source", "--port", "70000"], {}, "argument --port: '70000' is not a port (0..65535)"),
        (["run"], {"HEALTH_HOST": "192.0.2.1", "HEALTH_PORT": "0"}, "cdp: error: HEALTH_HOST=192.0.2.1: cannot listen"),
    ]
    for args, env, expected in cases:
        proc = _run(*args, env={**os.environ, **env}, timeout=60)
        assert 2 == proc.returncode, (args, proc.stderr)
        assert expected in proc.stderr.strip().splitlines()[-1]
        assert "Traceback" not in proc.stderr


def test_rerunning_a_finished_range_exits_0_and_changes_nothing(tmp_path: Path) -> None:
    """A scheduler retrying a job whose work was committed before the process died must see success."""
    with fake_source_process() as fake:
        cmd = ["run", "--source-endpoint", fake.endpoint, "--health-port", "0", "--start-ledger", "2",
               "--end-ledger", "11", "--output", str(tmp_path / "rows.jsonl"), "--checkpoint-path",
               str(tmp_path / "rows.ckpt")]  # fmt: skip
        first = _run(*cmd)
        rows = (tmp_path / "rows.jsonl").read_bytes()
        again = _run(*cmd)
    assert (0, 0) == (first.returncode, again.returncode), first.stderr + again.stderr
    assert "cdp: nothing to do: the checkpoint is already at END_LEDGER=11\n" == again.stderr.splitlines(True)[-1]
    assert rows == (tmp_path / "rows.jsonl").read_bytes()


def test_an_output_directory_gets_parquet_and_a_refused_start_leaves_nothing(tmp_path: Path) -> None:
    """`--output pq/` writes Parquet files into pq/ (no lock file left after the run); a run refused at
    start (its HTTP address unusable) leaves neither its new output nor a lock file, and a file that was
    there before is kept."""
    kept = tmp_path / "kept.jsonl"
    kept.write_text("")
    with fake_source_process() as fake:
        base = ["run", "--source-endpoint", fake.endpoint, "--health-port", "0", "--start-ledger", "2",
                "--end-ledger", "5"]  # fmt: skip
        done = _run(*base, "--output", f"{tmp_path / 'pq'}/")
        assert 0 == done.returncode, done.stderr
        assert ["contract_data-0000000002-0000000005.parquet"] == sorted(p.name for p in (tmp_path / "pq").iterdir())
        unusable = {**os.environ, "HEALTH_HOST": "192.0.2.1"}
        for output in ("new.jsonl", "newdir/", "kept.jsonl"):
            refused = _run(*base, "--output", str(tmp_path / output), "--checkpoint-path",
                           str(tmp_path / "x.ckpt"), env=unusable)  # fmt: skip
            assert 2 == refused.returncode, refused.stderr
            assert refused.stderr.splitlines()[-1].startswith("cdp: error: HEALTH_HOST=192.0.2.1: cannot listen")
    assert ["kept.jsonl", "pq"] == sorted(p.name for p in tmp_path.iterdir())


def test_help_is_plain_text_and_names_every_processor() -> None:
    """`cdp --help` and each command's help are plain text (no reStructuredText markup from docstrings);
    `--processor` names every built-in processor."""
    import contextlib
    import io

    from cdp._cli import build_parser
    from cdp.processors._registry import BUILTIN

    top = _run("--help")  # the command itself once; each command's help from the same parser, in process
    assert 0 == top.returncode, top.stderr
    texts = {"--help": top.stdout}
    for args in (["run", "--help"], ["backfill", "--help"], ["bootstrap", "--help"], ["extract", "--help"],
                 ["datastore", "write", "--help"], ["fake-source", "--help"], ["demo", "--help"]):  # fmt: skip
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            build_parser().parse_args(args)
        texts[" ".join(args)] = out.getvalue()
    for name, text in texts.items():
        assert text.startswith("usage: cdp"), name
        assert [] == [line for line in text.splitlines() if "``" in line or ":func:" in line], name
    help_text = " ".join(texts["run --help"].split())
    processor = help_text[help_text.index("--processor PROCESSOR") :].split("[env PROCESSOR")[0]
    assert [name for name in BUILTIN if name not in processor] == []


def test_a_missing_extra_names_the_install_command_that_works(tmp_path: Path) -> None:
    """Without pyarrow, a Parquet output is refused (exit 2) with `pip install '<this checkout>[parquet]'`:
    the project is on no package index, so the command names the checkout, whose pyproject has that extra."""
    import tomllib

    code = ("import sys; sys.modules['pyarrow'] = None; from cdp._cli import main; "
            f"main(['run', '--output', '{tmp_path}/pq/', '--end-ledger', '3'])")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert 2 == proc.returncode
    said = (
        f"cdp: error: FORMAT=parquet needs the parquet extra (pyarrow is not installed): pip install '{ROOT}[parquet]'"
    )
    assert [said] == proc.stderr.splitlines()
    assert "parquet" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [] == list(tmp_path.iterdir())


def test_a_traceback_only_with_log_level_debug() -> None:
    """A failure is one line; LOG_LEVEL=DEBUG adds its traceback (logged) before that same line."""
    from .helpers import refusing_endpoint

    with refusing_endpoint() as dead:
        args = (
            "run",
            "--source-endpoint",
            dead,
            "--connect-max-attempts",
            "1",
            "--end-ledger",
            "3",
            "--health-port",
            "0",
        )
        quiet = _run(*args)
        debug = _run(*args, env={**os.environ, "LOG_LEVEL": "DEBUG"})
    assert (1, 1) == (quiet.returncode, debug.returncode)
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in debug.stderr
    assert quiet.stderr.splitlines()[-1] == debug.stderr.splitlines()[-1]
    assert quiet.stderr.splitlines()[-1].startswith(f"cdp: error: upstream {dead}: 1 attempt in a row failed")
