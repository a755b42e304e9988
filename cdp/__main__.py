"""``python -m cdp`` and the ``cdp`` command: stop signals are noted before anything heavy is imported."""

from __future__ import annotations


def main() -> None:
    from cdp._signals import StopSignals

    stops = StopSignals()
    stops.install()  # before trio, stellar-sdk and the rest load: a stop during start-up is a clean exit
    from cdp._process import tune_malloc

    tune_malloc()
    from cdp._cli import main as cli_main

    cli_main(stops=stops)


if __name__ == "__main__":
    main()
