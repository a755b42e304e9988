"""A misbehaving upstream to point ``cdp run`` at: synthetic ledgers with injected faults.

    python examples/fake_upstream.py &            # listens on 127.0.0.1:50053 (or the port in argv[1])
    SOURCE_ENDPOINT=127.0.0.1:50053 cdp run --end-ledger 60

Every 25 ledgers it aborts the stream with UNAVAILABLE, it sends ledger 10 twice, skips 20 once
(a gap) and labels 30 with the wrong sequence; cdp still writes ledgers 2..60 exactly once each.
"""

from __future__ import annotations

import signal
import sys

import trio
import trio_asyncio

import cdp


async def main(port: int) -> None:
    options = cdp.FakeSourceOptions(
        port=port, rate=20, fail_after=25, duplicate=frozenset({10}), skip=frozenset({20}), mislabel=frozenset({30})
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:  # Ctrl-C: a clean stop, exit 0
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            port = await nursery.start(cdp.serve_fake_source, options)
            print(f"fake upstream on 127.0.0.1:{port}; Ctrl-C to stop", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 50053)
