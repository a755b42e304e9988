"""``cdp extract`` and ``cdp datastore``: commands on ledger files and galexie stores, no service."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from cdp._cli_common import EXIT_BROKEN_PIPE, EXIT_USAGE, fail
from cdp._config import Config
from cdp._errors import LedgerDecodeError
from cdp._validators import AUTO, NETWORKS, network_name, passphrase

if TYPE_CHECKING:  # the extractor loads stellar-sdk (~0.4 s): only the commands that extract load it
    from cdp.extract import Ledger

LOG = logging.getLogger("cdp.cli")


def network_flag(value: str | None, flag: str, *, auto: bool = True) -> str | None:
    """A ``--network``/``--passphrase`` value through the one network parser (None when not given)."""
    if value is None:
        return None
    parsed = passphrase(value)
    if not parsed.strip():
        fail(f"{flag}: must not be empty", EXIT_USAGE)
    if parsed == AUTO and not auto:
        fail(f"{flag}=auto: name the network this command makes ledgers for", EXIT_USAGE)
    return parsed


def cmd_extract(args: argparse.Namespace) -> None:
    from cdp.extract import Ledger, row_fields
    from cdp.extract._network import NetworkCheck
    from cdp.processors import ContractDataProcessor
    from cdp.processors._work import RowFilter
    from cdp.sinks import dumps_row
    from cdp.xdr._files import StoredLedger, expand_paths, read_file

    given = network_flag(args.passphrase, "--passphrase") or network_flag(args.network, "--network")
    given = given or Config.load(flags={}).network_passphrase
    processor = ContractDataProcessor(given, args.mode, args.instance_extras, fast=args.decoder == "fast")
    keep = frozenset(row_fields(args.mode, args.instance_extras))
    filters = {a.name: getattr(args, a.name) for a in attrs.fields(Config) if hasattr(args, a.name)}
    row_filter = RowFilter.from_config(Config.load(environ={}, flags=filters))
    check = NetworkCheck(given)  # one invocation reads one network: the first ledger with a transaction proves it
    out = sys.stdout
    # A store's ledgers, extracted by the threads that fetched them (the source checks their network):
    # their lines, or why not, by sequence, until ``emit`` writes them in order.
    extracted: dict[int, tuple[str, bool]] = {}

    def lines(ledger: Ledger) -> tuple[str, bool]:
        """The ledger's JSON lines, or (for a bad ledger) the reason, and whether it is good."""
        try:
            result = processor.process(ledger)
        except (LedgerDecodeError, ValueError) as exc:
            return str(exc), False
        kept = [r for r in result.rows if row_filter.reason_to_skip(r) is None]
        return "".join(dumps_row({k: v for k, v in r.items() if k in keep}) + "\n" for r in kept), True

    def prepare(ledger: Ledger) -> Ledger:
        extracted[ledger.sequence] = lines(ledger)
        return ledger

    def emit(ledger: Ledger, origin: str) -> bool | None:
        """False for a bad ledger, None once the reader of stdout has gone (``cdp extract | head``).

        Raises:
            ConfigError: the ledgers belong to another network than the one given.
        """
        ready = extracted.pop(ledger.sequence, None)
        text, good = lines(check.stamp(ledger)) if ready is None else ready
        if not good:
            print(f"cdp: error: {origin}: {text}", file=sys.stderr)
            return False
        try:
            out.write(text)
        except BrokenPipeError:
            return None
        return True

    if args.datastore is not None:
        if args.paths or args.start_ledger is None or args.end_ledger is None:
            fail("extract --datastore URL takes --start-ledger and --end-ledger, and no PATHs", EXIT_USAGE)
        outcome = trio.run(_extract_store, args, given, emit, prepare)
    else:
        if not args.paths:
            fail("extract: give ledger files, or --datastore URL", EXIT_USAGE)
        outcome = True
        ledgers: list[StoredLedger] = []
        for path in expand_paths(args.paths):
            try:
                ledgers.extend(read_file(path))
            except (LedgerDecodeError, OSError) as exc:
                print(f"cdp: error: {path}: {_reason(exc, path)}", file=sys.stderr)
                outcome = False
        for stored in sorted(ledgers, key=lambda item: item.sequence):
            done = emit(Ledger(stored.sequence, None, stored.raw), stored.origin)
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
    args: argparse.Namespace,
    passphrase: str,
    emit: Callable[[Ledger, str], bool | None],
    prepare: Callable[[Ledger], Ledger],
) -> bool | None:
    """Stream a store's range through ``emit``, each ledger ``prepare``d by the thread that fetched it
    (the extraction, while the next files are fetched); the source checks the store's network as
    ``cdp run`` does.

    True if every ledger was extracted, False if some were bad, None if the output was closed.
    """
    from cdp.extract import Ledger
    from cdp.upstream import DatastoreSource

    config = Config.load(  # the environment's store settings apply (timeouts, CONNECT_MAX_ATTEMPTS, backoff)
        flags={"datastore_url": args.datastore, "network_passphrase": passphrase,
               "start_ledger": args.start_ledger, "end_ledger": args.end_ledger, "output": "-", "format": "jsonl"}
    )  # fmt: skip
    ok: bool | None = True
    send, receive = trio.open_memory_channel[Ledger](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(DatastoreSource(config, config.start_ledger, prepare=prepare).run, send)
        async with receive:
            async for ledger in receive:
                origin = f"{args.datastore} ledger {ledger.sequence}"
                if ledger.problem is not None:
                    print(f"cdp: error: {origin}: {ledger.problem}", file=sys.stderr)
                    ok = False
                    continue
                done = await trio.to_thread.run_sync(emit, ledger, origin)
                ok = None if done is None else done and ok
                if ok is None:  # no return in here: the cancelled close would swallow it
                    nursery.cancel_scope.cancel("stdout closed")
                    break
    return ok


def cmd_datastore(args: argparse.Namespace) -> None:
    from cdp.extract import Ledger
    from cdp.extract._network import NetworkCheck
    from cdp.testing import SyntheticLedgers
    from cdp.upstream._layout import Layout, Manifest, write_store
    from cdp.xdr._files import expand_paths, read_file

    given = network_flag(args.network, "--network") or Config.load().network_passphrase
    if args.ledgers_per_file < 1 or args.files_per_partition < 1:
        fail("--ledgers-per-file and --files-per-partition must be >= 1", EXIT_USAGE)
    if args.synthetic == bool(args.paths):
        fail("datastore write: give ledger FILEs or --synthetic, not both or neither", EXIT_USAGE)
    check = NetworkCheck(given)
    if args.synthetic:
        if not 1 <= args.start <= args.end:
            fail(f"--start={args.start} --end={args.end}: need 1 <= start <= end", EXIT_USAGE)
        gen = SyntheticLedgers(seed=args.seed, passphrase=NETWORKS["testnet"] if given == AUTO else given)
        check.check(gen.ledger(args.start))  # every synthetic ledger has transactions
        ledgers: list[Ledger] | Iterator[Ledger] = (
            Ledger(s, gen.close_time(s), gen.ledger(s)) for s in range(args.start, args.end + 1)
        )
    else:
        try:
            stored = {s.sequence: s for p in expand_paths(args.paths) for s in read_file(p)}
        except LedgerDecodeError as exc:
            fail(str(exc), 1)
        except OSError as exc:
            fail(f"{exc.filename}: {_reason(exc, Path(str(exc.filename)))}", 1)
        ledgers = [Ledger(s, None, stored[s].raw) for s in sorted(stored)]
        for ledger in ledgers:  # the first with a transaction proves the store's network
            check.check(ledger.raw)
            if check.verified:
                break
    if check.network is None:
        fail("datastore write: no ledger has a transaction to prove the network: give --network", EXIT_USAGE)
    if not check.verified:
        LOG.warning("no ledger has a transaction: the network %s is written unverified", network_name(check.network))
    manifest = Manifest(check.network, Layout(args.ledgers_per_file, args.files_per_partition))
    files = write_store(args.store, manifest, ledgers, Config.load().datastore_timeout_s)
    print(f"wrote {files} files to {args.store} ({network_name(check.network)})", file=sys.stderr)


def _reason(exc: Exception, path: Path) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read: {exc.strerror}"
    return str(exc).removeprefix(f"{path}: ")
