"""The committed betterproto code is what the committed schema generates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT


def test_generated_code_is_current(tmp_path: Path) -> None:
    """Regenerate into a temp dir; any difference means `just gen` was not run."""
    pytest.importorskip("grpc_tools")
    bin_dir = str(Path(sys.executable).parent)
    if shutil.which("protoc-gen-python_betterproto", path=bin_dir) is None:
        pytest.skip("betterproto[compiler] is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", "schema", f"--python_betterproto_out={tmp_path}",
         "schema/raw_ledger_service.proto"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    committed = ROOT / "cdp" / "upstream" / "proto"
    for generated in sorted(tmp_path.rglob("*.py")):
        rel = generated.relative_to(tmp_path)
        assert (committed / rel).read_text() == generated.read_text(), (
            f"cdp/upstream/proto/{rel} is stale: run `just gen`"
        )


def test_schema_is_the_upstream_contract() -> None:
    """The method path the client calls is the upstream's."""
    from cdp.upstream.proto.raw_ledger_service import RawLedger, StreamLedgersRequest

    text = (ROOT / "schema" / "raw_ledger_service.proto").read_text()
    assert "package raw_ledger_service;" in text
    assert "rpc StreamRawLedgers(StreamLedgersRequest) returns (stream RawLedger)" in text
    msg = RawLedger(sequence=7, ledger_close_meta_xdr=b"\x01")
    assert b"\x08\x07\x12\x01\x01" == bytes(msg)
    assert 9 == StreamLedgersRequest().parse(b"\x08\x09").start_ledger


def test_generated_skippers_are_current(tmp_path: Path) -> None:
    """cdp/xdr/_skip.py is what cdp/_tools/gen_xdr.py makes of the vendored XDR grammar."""
    out = tmp_path / "skip.py"
    subprocess.run(
        [sys.executable, "-m", "cdp._tools.gen_xdr", "schema/xdr-grammar.json", str(out)], cwd=ROOT, check=True
    )
    assert (ROOT / "cdp" / "xdr" / "_skip.py").read_text() == out.read_text(), "stale: run `just gen`"


def test_generated_c_skippers_are_current(tmp_path: Path) -> None:
    """cdp/xdr/_cskip.c is what cdp/_tools/gen_c.py makes of the same grammar."""
    out = tmp_path / "cskip.c"
    subprocess.run(
        [sys.executable, "-m", "cdp._tools.gen_c", "schema/xdr-grammar.json", str(out)], cwd=ROOT, check=True
    )
    assert (ROOT / "cdp" / "xdr" / "_cskip.c").read_text() == out.read_text(), "stale: run `just gen`"


def test_readme_settings_table_is_current() -> None:
    """The README's settings table is what the Config fields declare: run `just gen` after changing one."""
    from cdp._tools.gen_readme import with_table

    readme = (ROOT / "README.md").read_text()
    assert with_table(readme) == readme, "README settings table is stale: run `just gen`"
