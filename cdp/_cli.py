"""``cdp``: run the service, serve a fake upstream, extract rows from files, or run the demo."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from cdp._cli_common import EXIT_INTERRUPTED, EXIT_USAGE, fail
from cdp._cli_files import cmd_datastore, cmd_extract, network_flag
from cdp._config import Config, shown_default
from cdp._errors import CdpError, ConfigError, NothingToDo, unwrap_cdp_error
from cdp._process import tune_gc
from cdp._signals import StopSignals
from cdp._validators import AUTO
from cdp._version import __version__
from cdp.ops._logs import configure_logging
from cdp.xdr._walker import WALKER

if TYPE_CHECKING:  # trio-asyncio replaces asyncio's loops when imported: only commands that need it load it
    from cdp._service import ServiceHandle
    from cdp.processors._base import LedgerProcessor

LOG = logging.getLogger("cdp")

# The fake source, synthetic ledgers and the extractor load stellar-sdk (~50 MB); `cdp run` does not
# need it in the service process (workers load it), so those imports live in their commands.

_SHORT_FLAGS = {"network_passphrase": ("--network",), "datastore_url": ("--datastore",)}  # as `cdp extract` spells them


def _setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config attribute, named after its environment variable in kebab case, with the
    meaning and default the Config field declares (the README's settings table is made from the same)."""
    group = parser.add_argument_group(
        "settings", "each is also read from the environment variable in capitals, or a --config TOML file"
    )
    for a in attrs.fields(Config):
        flag = "--" + a.name.replace("_", "-")
        names = [flag, *_SHORT_FLAGS.get(a.name, ())]
        default = shown_default(a)
        meaning = a.metadata["help"].replace("%", "%%")
        text = f"{meaning} [env {a.name.upper()}; default: {default or 'none'}]"
        group.add_argument(*names, dest=a.name, metavar=a.name.upper(), default=None, help=text)
    parser.add_argument("--config", type=Path, default=None, help="TOML file with settings (lowest precedence)")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0..65535)")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdp",
        description="Stellar ledgers in, Soroban contract-data rows out: run the service, backfill history "
        "over Dask, serve a fake upstream, write or extract datastores and ledger files, or run the demo.",
        epilog="Exit status: 0 done (also when the work was done before), 1 a failure, 2 a usage or "
        "configuration error, 130 a second stop signal. Settings: cdp run --help.",
    )
    parser.add_argument("--version", action="version", version=f"cdp {__version__} (XDR walker: {WALKER})")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="stream from the upstream and write rows")
    _setting_flags(run)

    fill = sub.add_parser(
        "backfill", help="a datastore's ledger range into Parquet, PostgreSQL or Iceberg, partitioned over Dask"
    )
    fill.add_argument("--scheduler", default=None, metavar="ADDRESS", help="an existing Dask cluster (tcp://host:8786)")
    fill.add_argument("--workers", type=int, default=None, help="processes of the embedded cluster (default: cores)")
    fill.add_argument("--verify", action="store_true", help="read finished partitions whole; redo any that fail")
    _setting_flags(fill)

    boot = sub.add_parser("bootstrap", help="the contract-data state at a history-archive checkpoint")
    boot.add_argument("--archive", required=True, metavar="URL", help="a history archive: path, s3://, gs://, https://")
    boot.add_argument("--ledger", type=int, default=None, help="a checkpoint ledger (default: the archive's latest)")
    boot.add_argument("--replace", action="store_true", help="write over tables or a state file that hold data")
    _setting_flags(boot)

    lake = sub.add_parser("lake", help="Iceberg table upkeep")
    compact = lake.add_subparsers(dest="lake_command", required=True).add_parser(
        "compact", help="rewrite each partition's small files into one; expire old snapshots; remove unused files"
    )
    compact.add_argument("--min-files", type=int, default=2, help="rewrite partitions with at least this many files")
    compact.add_argument("--expire-older-than-s", type=float, default=None, metavar="S",
                         help="also expire snapshots older than S seconds (the current one stays)")  # fmt: skip
    _setting_flags(compact)

    demo = sub.add_parser("demo", help="fake source + service in one process, rows on stdout")
    demo.add_argument("--ledgers", type=int, default=5, help="stop after this many ledgers (default 5)")
    demo.add_argument("--seed", type=int, default=0)
    _setting_flags(demo)

    fake = sub.add_parser("fake-source", help="serve RawLedgerService from synthetic ledgers or files")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=_port, default=50053, help="0 picks a free port (default 50053)")
    fake.add_argument("--ledgers", type=Path, nargs="*", default=[], help="raw XDR files, *.xdr.zst batches, or dirs")
    fake.add_argument("--datastore", default="", metavar="URL", help="serve a galexie datastore, following it live")
    fake.add_argument("--poll-interval", type=float, default=1.0, help="seconds between looks for a new store file")
    fake.add_argument("--seed", type=int, default=0)
    fake.add_argument(
        "--network", default=None, help="pubnet/testnet/futurenet or a passphrase: the synthetic ledgers' (testnet)"
    )
    fake.add_argument("--soroban-txs", type=int, default=4, help="Soroban txs per synthetic ledger")
    fake.add_argument("--ledger-bytes", type=int, default=0, help="pad synthetic ledgers to about this size")
    fake.add_argument("--end-stream", action="store_true", help="end the stream after the last ledger")
    fake.add_argument("--rate", type=float, default=0.0, help="ledgers per second (0: unlimited)")
    fake.add_argument("--fail-after", type=int, default=0, help="abort each stream with UNAVAILABLE after N")
    fake.add_argument("--die-after", type=int, default=0, help="exit the process after N ledgers")
    fake.add_argument("--stall-after", type=int, default=0, help="stop sending after N, keep the connection")
    for name in ("skip", "duplicate", "corrupt", "mislabel", "reorder", "garbage"):
        fake.add_argument(f"--{name}", type=int, action="append", default=[], metavar="SEQ")
    fake.add_argument("--corrupt-kind", choices=("random", "truncated", "wrong-type", "oversize"), default="random")

    store = sub.add_parser("datastore", help="galexie datastores (SEP-54)")
    store_sub = store.add_subparsers(dest="datastore_command", required=True)
    write = store_sub.add_parser("write", help="write a datastore (a directory or an fsspec URL) from ledger files")
    write.add_argument("store", metavar="URL", help="a directory, file://, s3://bucket/prefix, gs://bucket/prefix")
    write.add_argument("paths", type=Path, nargs="*", metavar="FILE", help="raw XDR files, batches, or dirs")
    write.add_argument("--synthetic", action="store_true", help="write synthetic ledgers --start..--end")
    write.add_argument("--start", type=int, default=2)
    write.add_argument("--end", type=int, default=101)
    write.add_argument("--seed", type=int, default=0)
    write.add_argument(
        "--network", default=None, help="auto, pubnet, testnet, futurenet or a passphrase (default: NETWORK_PASSPHRASE)"
    )
    write.add_argument("--ledgers-per-file", type=int, default=1)
    write.add_argument("--files-per-partition", type=int, default=64000)

    ext = sub.add_parser("extract", help="rows from ledger files as JSONL on stdout")
    ext.add_argument("paths", type=Path, nargs="*", metavar="PATH")
    ext.add_argument("--datastore", default=None, metavar="URL", help="read --start-ledger..--end-ledger from a store")
    ext.add_argument("--start-ledger", type=int, default=None)
    ext.add_argument("--end-ledger", type=int, default=None)
    net = ext.add_mutually_exclusive_group()
    net.add_argument("--network", default=None, help="auto, pubnet, testnet, futurenet (default: NETWORK_PASSPHRASE)")
    net.add_argument("--passphrase", default=None, help="a network passphrase, as NETWORK_PASSPHRASE takes it")
    ext.add_argument("--mode", choices=("compact", "changes"), default="compact")
    ext.add_argument("--instance-extras", action="store_true", help="add contract_instance_type/_wasm_hash")
    ext.add_argument("--decoder", choices=("fast", "full"), default="fast", help="full: decode whole ledgers")
    for a in attrs.fields(Config):
        if a.name.startswith("filter_") or a.name == "include_deleted":
            ext.add_argument("--" + a.name.replace("_", "-"), dest=a.name, metavar=a.name.upper(), default=None)
    return parser


def _config(args: argparse.Namespace, **overrides: Any) -> Config:
    flags = {a.name: getattr(args, a.name) for a in attrs.fields(Config)}
    flags.update({k: v for k, v in overrides.items() if flags.get(k) is None})
    return Config.load(toml_path=args.config, flags=flags)


async def _with_signals(
    config: Config,
    stops: StopSignals,
    *,
    prelude: Callable[[trio.Nursery], Awaitable[Config]] | None = None,
    processor: LedgerProcessor | None = None,
) -> bool:
    """Run the service; the first SIGINT/SIGTERM stops it gracefully, a second one at once.
    True: it left an Arrow Flight call open (``ServiceHandle.left_calls_open``)."""
    import trio_asyncio

    from cdp._service import serve

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        if stops.received:
            return False  # stopped before anything started: nothing to finish
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            handle: ServiceHandle | None = None

            async def on_signals() -> None:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if handle is None:  # still starting: nothing committed yet, nothing to finish
                        nursery.cancel_scope.cancel(f"{name} during start-up")
                        return
                    if handle.stopping:
                        stops.immediate = True
                        nursery.cancel_scope.cancel(f"second signal {name}")
                        _exit_130_after(1.0)  # whatever a thread is doing: in-flight work is abandoned anyway
                        return
                    handle.stop()

            nursery.start_soon(on_signals)
            if prelude is not None:
                config = await prelude(nursery)
            handle = await nursery.start(partial(serve, config, processor=processor))
            await handle.wait_done()
            nursery.cancel_scope.cancel("service finished")
        return handle is not None and handle.left_calls_open


def _exit_130_after(seconds: float) -> None:
    """A second stop signal promises an exit now: if cancelling does not end the run within ``seconds``
    (a thread blocked in a library call), leave at once. The checkpoint is durable state: nothing is
    lost, in-flight ledgers are redone by the next run."""

    def leave() -> None:
        logging.getLogger("cdp").error("second stop signal: not waiting for a blocked call; exiting")
        logging.shutdown()
        os._exit(EXIT_INTERRUPTED)

    timer = threading.Timer(seconds, leave)
    timer.daemon = True
    timer.start()


def _run_service(run: Callable[[], Awaitable[bool]]) -> None:
    """``trio.run(run)``; where a Flight call was left open, exit now, everything being committed:
    the interpreter's exit would otherwise wait for that client to read again."""
    tune_gc()
    if trio.run(run):
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)


def _cmd_run(args: argparse.Namespace) -> None:
    from cdp.processors._registry import load_processor

    config = _config(args)
    configure_logging(config.log_level, config.log_format)
    processor = load_processor(config.processor, config)  # fails here, with status 2, if it is bad
    _run_service(partial(_with_signals, config, args.stops, processor=processor))


def _cmd_backfill(args: argparse.Namespace) -> None:
    from cdp.batch import backfill

    if args.workers is not None and args.workers < 1:
        fail(f"--workers={args.workers}: must be >= 1", EXIT_USAGE)
    config = _config(args)
    if config.format == "jsonl":  # the default: a backfill writes Parquet unless given a database
        config = attrs.evolve(config, format="parquet")
    configure_logging(config.log_level, config.log_format)
    if config.log_level != "DEBUG":  # Dask narrates every connection at INFO, on loggers it sets itself
        for handler in logging.getLogger().handlers:
            handler.addFilter(
                lambda r: r.levelno >= logging.WARNING or not r.name.startswith(("distributed", "tornado"))
            )
    if args.stops.received:
        return

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    before = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:  # plain blocking code: a stop interrupts it
        backfill(config, scheduler=args.scheduler, workers=args.workers, progress=sys.stderr, verify=args.verify)
    except KeyboardInterrupt:
        LOG.warning("backfill stopped: finished partitions are kept; rerun the command to do the rest")
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous)


def _cmd_bootstrap(args: argparse.Namespace) -> None:
    from cdp.batch._bootstrap import bootstrap

    config = _config(args)
    configure_logging(config.log_level, config.log_format)
    bootstrap(config, args.archive, args.ledger, replace=args.replace, progress=sys.stderr)


def _cmd_lake(args: argparse.Namespace) -> None:
    from cdp.batch._lake import compact

    config = _config(args)
    configure_logging(config.log_level, config.log_format)
    expire = args.expire_older_than_s
    older = None if expire is None else dt.timedelta(seconds=expire)
    done = compact(config, min_files=max(1, args.min_files), expire_older_than=older)
    print(f"{done.table}: {done.partitions} partitions rewritten, files {done.files_before} -> {done.files_after}, "
          f"{done.snapshots_expired} snapshots expired, {done.files_removed} unused files removed")  # fmt: skip


def _cmd_demo(args: argparse.Namespace) -> None:
    if args.ledgers < 1:
        fail(f"--ledgers={args.ledgers}: must be >= 1", EXIT_USAGE)
    base = _config(args, health_port="0", end_ledger=str(args.ledgers + 1), start_ledger="2")
    configure_logging(base.log_level, base.log_format)

    from cdp.testing._fake_source import FakeSourceOptions, serve_fake_source

    async def start_fake(nursery: trio.Nursery) -> Config:
        synthetic = None if base.network_passphrase == AUTO else base.network_passphrase  # auto: testnet's
        options = FakeSourceOptions(port=0, seed=args.seed, passphrase=synthetic)
        port = await nursery.start(serve_fake_source, options)
        end = base.end_ledger or base.start_ledger + args.ledgers - 1
        return attrs.evolve(base, source_endpoint=(f"127.0.0.1:{port}",), end_ledger=end)

    _run_service(partial(_with_signals, base, args.stops, prelude=start_fake))


def _cmd_fake_source(args: argparse.Namespace) -> None:
    from cdp.testing._fake_source import FakeSourceOptions, serve_fake_source

    if args.datastore and args.ledgers:
        fail("fake-source: give --ledgers or --datastore, not both", 2)
    configure_logging(os.environ.get("LOG_LEVEL", "INFO").upper(), os.environ.get("LOG_FORMAT", "text"))
    passphrase = network_flag(args.network, "--network", auto=False)
    options = FakeSourceOptions(
        host=args.host, port=args.port, ledgers=tuple(args.ledgers), datastore=args.datastore,
        poll_interval=args.poll_interval, seed=args.seed, passphrase=passphrase,
        soroban_txs=args.soroban_txs, ledger_bytes=args.ledger_bytes, end_stream=args.end_stream,
        rate=args.rate, fail_after=args.fail_after, die_after=args.die_after, stall_after=args.stall_after,
        skip=frozenset(args.skip), duplicate=frozenset(args.duplicate), corrupt=frozenset(args.corrupt),
        mislabel=frozenset(args.mislabel), reorder=frozenset(args.reorder), garbage=frozenset(args.garbage),
        corrupt_kind=args.corrupt_kind,
    )  # fmt: skip

    async def main() -> None:
        import trio_asyncio

        async with trio_asyncio.open_loop():
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:
                    await nursery.start(serve_fake_source, options)
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        break

    trio.run(main)


def main(argv: Sequence[str] | None = None, stops: StopSignals | None = None) -> None:
    """The ``cdp`` command. Exit status: 0 done or stopped by a signal, 1 a failure, 2 a usage or
    configuration error, 130 a second stop signal (in-flight ledgers abandoned; the checkpoint is
    still on the last committed ledger), 141 ``cdp extract`` whose reader closed its output."""
    if stops is None:
        stops = StopSignals()
        stops.install()
    args = build_parser().parse_args(argv)
    args.stops = stops
    commands = {"run": _cmd_run, "backfill": _cmd_backfill, "bootstrap": _cmd_bootstrap, "lake": _cmd_lake,
                "demo": _cmd_demo, "fake-source": _cmd_fake_source, "extract": cmd_extract,
                "datastore": cmd_datastore}  # fmt: skip
    try:
        with unwrap_cdp_error():
            commands[args.command](args)
    except KeyboardInterrupt:  # only where no handler of ours was installed (a caller's own)
        raise SystemExit(130) from None
    except NothingToDo as exc:  # done before: a scheduler retrying a finished job must see success
        print(f"cdp: {exc}", file=sys.stderr)
    except CdpError as exc:
        if LOG.isEnabledFor(logging.DEBUG):  # the one line is for users; the traceback for whoever debugs
            LOG.debug("the failure in full", exc_info=exc)
        fail(str(exc), EXIT_USAGE if isinstance(exc, ConfigError) else 1)
    if stops.immediate:
        raise SystemExit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
