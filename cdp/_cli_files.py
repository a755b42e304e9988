"""``cdp extract`` and ``cdp datastore``: commands on ledger files and galexie stores, no service."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import trio

from cdp._cli_common import EXIT_BROKEN_PIPE, EXIT_USAGE, fail
from cdp._config import Config
from cdp._errors import LedgerDecodeError
from cdp._validators import NETWORKS
from cdp.extract import row_fields
from cdp.processors._work import RowFilter
from cdp.sinks import dumps_row


def cmd_extract(args: argparse.Namespace) -> None:
    from cdp.extract import extract_rows, extract_rows_fast
    from cdp.xdr._files import StoredLedger, expand_paths, read_file

    passphrase = args.passphrase or NETWORKS.get((args.network or "").lower())
    if args.network and passphrase is None:
        fail(f"--network={args.network}: must be one of {', '.join(NETWORKS)}", EXIT_USAGE)
    passphrase = passphrase or Config.load(flags={}).network_passphrase
    keep = frozenset(row_fields(args.mode, args.instance_extras))
    filters = {a.name: getattr(args, a.name) for a in attrs.fields(Config) if hasattr(args, a.name)}
    row_filter = RowFilter.from_config(Config.load(environ={}, flags=filters))
    out = sys.stdout

    def emit(raw: bytes, origin: str) -> bool | None:
        """False for a bad ledger, None once the reader of stdout has gone (``cdp extract | head``)."""
        try:
            if args.decoder == "fast":
                rows, _ = extract_rows_fast(raw, passphrase, args.mode)
            else:
                rows = extract_rows(raw, passphrase, args.mode)
        except LedgerDecodeError as exc:
            print(f"cdp extract: {origin}: {exc}", file=sys.stderr)
            return False
        kept = [r for r in rows if row_filter.reason_to_skip(r) is None]
        try:
            out.write("".join(dumps_row({k: v for k, v in r.items() if k in keep}) + "\n" for r in kept))
        except BrokenPipeError:
            return None
        return True

    if args.datastore is not None:
        if args.paths or args.start_ledger is None or args.end_ledger is None:
            fail("extract --datastore URL takes --start-ledger and --end-ledger, and no PATHs", EXIT_USAGE)
        outcome = trio.run(_extract_store, args, passphrase, emit)
    else:
        if not args.paths:
            fail("extract: give ledger files, or --datastore URL", EXIT_USAGE)
        outcome = True
        ledgers: list[StoredLedger] = []
        for path in expand_paths(args.paths):
            try:
                ledgers.extend(read_file(path))
            except (LedgerDecodeError, OSError) as exc:
                print(f"cdp extract: {path}: {_strip(exc, path)}", file=sys.stderr)
                outcome = False
        for ledger in sorted(ledgers, key=lambda item: item.sequence):
            done = emit(ledger.raw, ledger.origin)
            outcome = None if done is None else done and outcome
            if outcome is None:
                break
    try:
        out.flush()
    except BrokenPipeError:
        outcome = None
    if outcome is None:  # quietly, like any filter whose reader stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        raise SystemExit(EXIT_BROKEN_PIPE)
    if not outcome:
        raise SystemExit(1)


async def _extract_store(
    args: argparse.Namespace, passphrase: str, emit: Callable[[bytes, str], bool | None]
) -> bool | None:
    """Stream a store's range through ``emit`` (fetches run ahead in threads while a ledger is extracted).

    True if every ledger was extracted, False if some were bad, None if the output was closed.
    """
    from cdp.extract import Ledger
    from cdp.upstream import DatastoreSource

    config = Config.from_mapping(
        {
            "datastore_url": args.datastore,
            "network_passphrase": passphrase,
            "start_ledger": args.start_ledger,
            "end_ledger": args.end_ledger,
        }  # fmt: skip
    )
    ok: bool | None = True
    send, receive = trio.open_memory_channel[Ledger](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(DatastoreSource(config, config.start_ledger).run, send)
        async with receive:
            async for ledger in receive:
                origin = f"{args.datastore} ledger {ledger.sequence}"
                if ledger.problem is not None:
                    print(f"cdp extract: {origin}: {ledger.problem}", file=sys.stderr)
                    ok = False
                    continue
                done = await trio.to_thread.run_sync(emit, ledger.raw, origin)
                ok = None if done is None else done and ok
                if ok is None:  # no return in here: the cancelled close would swallow it
                    nursery.cancel_scope.cancel("stdout closed")
                    break
    return ok


def cmd_datastore(args: argparse.Namespace) -> None:
    from cdp.extract import Ledger
    from cdp.testing import SyntheticLedgers
    from cdp.upstream._layout import Layout, Manifest, write_store
    from cdp.xdr._files import expand_paths, read_file

    passphrase = NETWORKS.get((args.network or "").lower(), args.network) or Config.load().network_passphrase
    if args.ledgers_per_file < 1 or args.files_per_partition < 1:
        fail("--ledgers-per-file and --files-per-partition must be >= 1", EXIT_USAGE)
    if args.synthetic == bool(args.paths):
        fail("datastore write: give ledger FILEs or --synthetic, not both or neither", EXIT_USAGE)
    if args.synthetic:
        if not 1 <= args.start <= args.end:
            fail(f"--start={args.start} --end={args.end}: need 1 <= start <= end", EXIT_USAGE)
        gen = SyntheticLedgers(seed=args.seed, passphrase=passphrase)
        ledgers: list[Ledger] | Iterator[Ledger] = (
            Ledger(s, gen.close_time(s), gen.ledger(s)) for s in range(args.start, args.end + 1)
        )
    else:
        try:
            stored = {s.sequence: s for p in expand_paths(args.paths) for s in read_file(p)}
        except (LedgerDecodeError, OSError) as exc:
            fail(str(exc), 1)
        ledgers = [Ledger(s, None, stored[s].raw) for s in sorted(stored)]
    manifest = Manifest(passphrase, Layout(args.ledgers_per_file, args.files_per_partition))
    files = write_store(args.directory, manifest, ledgers)
    print(f"wrote {files} files to {args.directory}", file=sys.stderr)


def _strip(exc: Exception, path: Path) -> str:
    return str(exc).removeprefix(f"{path}: ")
