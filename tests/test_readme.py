"""The README's commands and SQL, run as written, top to bottom.

Every ``sh`` block after "Using it" is walked in order, in an empty directory beside a ``shared``
link to the shared data (so ``../shared`` works as written), with the real parts behind it: the fake
source, stores on disk and on S3 (SeaweedFS), PostgreSQL, Dask. The test fills in only placeholders:
ports (free ones instead of 50053..50056, and ``SOURCE_ENDPOINT`` to match), the S3 endpoint and keys
where the README writes ``...``, ``$DB``, and the ids in the SQL (``'C...'``, ``'...'``), taken from
the database itself. Lines ending in ``&`` are started and left serving until the end; lines marked
``(internet)`` are not run (nothing here reaches the internet). Each other command must exit 0, a
command with a checkpoint again (``nothing to do``), and each query must return what its comment says.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cdp
from cdp._config import Config

from .conftest import SHARED
from .helpers import ROOT
from .pg_server import PostgresServer, _bindir

PORTS = ("50053", "50054", "50055", "50056")


def _blocks() -> list[list[str]]:
    """The commands of each ``sh`` block after "## Using it": continuation lines and quoted strings over
    several lines joined, comment lines dropped (a command's trailing comment is kept: it may mark it)."""
    text = (ROOT / "README.md").read_text()
    text = text[text.index("## Using it") :]
    blocks = []
    for body in re.findall(r"^```sh\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL):
        commands, pending = [], ""
        for line in body.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending = f"{pending}\n{line}" if pending else line.strip()
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip() + " "
                continue
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # a quoted string goes on
                continue
            commands.append(pending)
            pending = ""
        blocks.append(commands)
    return blocks


def _free_ports() -> dict[str, str]:
    found = {}
    for name in PORTS:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            found[name] = str(s.getsockname()[1])
    return found


@pytest.fixture
def walk(
    tmp_path: Path,
    s3_endpoint: str,
    postgres: PostgresServer,
) -> Iterator[dict[str, Any]]:
    if not (SHARED / "ledgers").is_dir():
        pytest.skip(f"the shared ledgers are not at {SHARED} (set CDP_SHARED)")
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED.resolve())
    ports = _free_ports()
    bins = [str(Path(sys.executable).parent), str(_bindir())]
    env = {**os.environ, "PATH": os.pathsep.join([*bins, os.environ.get("PATH", "")]), "HEALTH_PORT": "0",
           "SOURCE_ENDPOINT": f"localhost:{ports['50053']}", "AWS_DEFAULT_REGION": "us-east-1",
           "BACKOFF_BASE_S": "0.05"}  # fmt: skip
    state: dict[str, Any] = {"work": work, "ports": ports, "env": env, "s3": s3_endpoint, "pg": postgres,
                             "serving": [], "ran": [], "not_run": []}  # fmt: skip
    postgres.create_database("readme")
    yield state
    for proc in state["serving"]:
        proc.kill()
        proc.wait()


def _fill(line: str, state: dict[str, Any]) -> str:
    for port, free in state["ports"].items():
        line = line.replace(port, free)
    return line


def _export(line: str, state: dict[str, Any]) -> None:
    """``export NAME=VALUE ...``: the S3 endpoint, keys and ``DB`` are placeholders for the test's own;
    ``$PWD`` is the directory the commands run in."""
    pg: PostgresServer = state["pg"]
    own = {"AWS_ENDPOINT_URL": state["s3"], "DB": pg.dsn("readme")}
    for word in shlex.split(line)[1:]:
        name, value = word.split("=", 1)
        value = value.replace("$PWD", str(state["work"]))
        state["env"][name] = own.get(name, "cdp" if value == "..." else value)


def _start(line: str, state: dict[str, Any]) -> None:
    """A server line (``... &``): started, and left running once it listens."""
    proc = subprocess.Popen(["bash", "-c", "exec " + line.rstrip("& ")], cwd=state["work"], env=state["env"],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    state["serving"].append(proc)
    assert proc.stderr is not None
    seen = []
    for out in proc.stderr:
        seen.append(out)
        if "fake source listening" in out:
            break
    else:
        raise AssertionError(f"{line}: did not start: {''.join(seen)[-2000:]}")
    proc.stderr.close()  # it logs little more; a closed pipe only drops those lines


def _run(line: str, state: dict[str, Any], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["bash", "-c", line], cwd=cwd or state["work"], env=state["env"], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert 0 == proc.returncode, f"{line}\n{proc.stderr[-3000:]}"
    state["ran"].append(line)
    return proc


def _sql_of(line: str) -> str:
    return shlex.split(line)[3]


def _query(line: str, state: dict[str, Any]) -> None:
    """Fill the query's ids from the data, run the line (psql), and check the query's claim."""
    import psycopg

    pg: PostgresServer = state["pg"]
    with psycopg.connect(pg.dsn("readme")) as conn:
        one = conn.execute
        now = one("SELECT max(ledger) FROM cdp_checkpoint").fetchone()[0]  # type: ignore[index]
        if "holder = 'C...'" in line:
            holder = one("SELECT holder FROM contract_data_sac_balances LIMIT 1").fetchone()
            assert holder is not None, "no SAC balance in the data"
            line = line.replace("'C...'", f"'{holder[0]}'")
        elif "contract_id = 'C...'" in line:
            contract = one("SELECT contract_id FROM contract_data_current LIMIT 1").fetchone()
            assert contract is not None
            line = line.replace("'C...'", f"'{contract[0]}'")
        elif "ledger_key_hash = '...'" in line:
            key = one("SELECT ledger_key_hash FROM contract_data_history GROUP BY 1 HAVING count(*) > 1 "
                      "LIMIT 1").fetchone()  # fmt: skip
            assert key is not None
            line = line.replace("'...'", f"'{key[0]}'")
        _run(line, state)
        rows = one(_sql_of(line)).fetchall()
    assert rows, line
    if "contract_data_sac_balances" in line:  # balances come with their asset
        assert all(kind == "native" or (code and issuer) for kind, code, issuer, *_ in rows), rows
    if "live_until_ledger_seq BETWEEN" in line:  # expiring: still live, and within the day
        assert all(now <= until <= now + 17280 for *_, until in rows), (now, rows)
        with psycopg.connect(pg.dsn("readme")) as conn:
            expired = conn.execute("SELECT count(*) FROM contract_data_current WHERE live_until_ledger_seq < %s",
                                   [now]).fetchone()  # fmt: skip
        assert expired is not None
        assert expired[0] > 0, "no expired key: the query's lower bound is not tested"


@pytest.mark.slow
def test_the_readme_runs_as_written(walk: dict[str, Any]) -> None:
    state = walk
    blocks = _blocks()
    assert 7 == len(blocks), [b[:1] for b in blocks]
    for block in blocks:
        for raw in block:
            line = _fill(raw, state)
            if "(internet)" in line:
                state["not_run"].append(raw)
            elif line.startswith("export "):
                _export(line.split("  #")[0], state)
            elif line.split("  #")[0].rstrip().endswith("&"):
                _start(line.split("  #")[0], state)
            elif line.startswith("psql "):
                _query(line, state)
            elif line.startswith(("python examples/", "PYTHONPATH=.")):
                _run(line, state, cwd=ROOT)  # the examples are read from the checkout
            else:
                _run(line, state)
                if "--checkpoint-path" in line:  # "rerun it": a finished range exits 0, output unchanged
                    out = state["work"] / "rows.jsonl"
                    before = out.read_bytes()
                    again = _run(line, state)
                    assert again.stderr.rstrip().endswith("cdp: nothing to do: the checkpoint is already at "
                                                          "END_LEDGER=101"), again.stderr[-500:]  # fmt: skip
                    assert before == out.read_bytes()
    work = state["work"]
    faults = sorted({json.loads(line)["ledger_sequence"] for line in (work / "faults.jsonl").read_text().splitlines()})
    assert [s for s in range(2, 61) if s != 40] == faults  # every ledger once but the corrupt one, dead-lettered
    assert 1 == len((work / "cdp-dead-letter.jsonl").read_text().splitlines())
    assert sorted(p.name for p in (work / "history").iterdir()) == [
        "_cdp_backfill.json",
        "contract_data-0000000002-0000000300.parquet",
    ]
    assert 2 == len(state["not_run"]), state["not_run"]  # the two public-store lines
    table = cdp.lake_table(Config.load(environ={**state["env"], "OUTPUT": "iceberg://lake"}))
    assert table.current_snapshot().summary["cdp.last-ledger"] == "300"  # the run, then the backfill after it
    assert len(table.snapshots()) == 1  # compacted, older snapshots expired
    import s3fs

    from cdp.upstream._fs import start_fsspec_loop

    start_fsspec_loop()  # as cdp does: fsspec's loop must not be a trio-asyncio one
    s3 = s3fs.S3FileSystem(
        endpoint_url=state["s3"], key="cdp", secret="cdp", client_kwargs={"region_name": "us-east-1"}
    )
    assert "ledgers/history/contract_data-0000000002-0000000300.parquet" in s3.ls("ledgers/history")
    lines = [line for block in blocks for line in block]
    served = [line for line in lines if line.split("  #")[0].rstrip().endswith("&")]
    reruns = [line for line in lines if "--checkpoint-path" in line]
    exports = [line for line in lines if line.startswith("export ")]
    assert (4, 1, 3) == (len(served), len(reruns), len(exports))
    assert len(lines) - len(served) - len(exports) - len(state["not_run"]) + len(reruns) == len(state["ran"])
