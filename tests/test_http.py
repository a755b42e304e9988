"""serve_http on its own: the bound port is read back, and shutdown lets requests in flight finish."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio
import trio.testing
from quart_trio import QuartTrio

from cdp._errors import CdpError
from cdp.ops import serve_http


def _slow_app(entered: trio.Event, release: trio.Event) -> QuartTrio:
    app = QuartTrio("slow")

    @app.get("/slow")
    async def slow() -> str:
        entered.set()
        await release.wait()
        return "done"

    return app


async def test_a_request_in_flight_at_shutdown_gets_its_answer() -> None:
    entered, release, shutdown = trio.Event(), trio.Event(), trio.Event()
    answers: list[httpx.Response] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_http, _slow_app(entered, release), "127.0.0.1", 0, shutdown.wait)

            async def request() -> None:
                async with httpx.AsyncClient() as client:
                    answers.append(await client.get(f"http://127.0.0.1:{port}/slow"))

            nursery.start_soon(request)
            await entered.wait()
            shutdown.set()  # the request is being handled: Hypercorn stops listening, lets it finish
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            with pytest.raises(OSError, match="all attempts to connect"):
                await trio.open_tcp_stream("127.0.0.1", port)
            release.set()
    assert [(200, "done")] == [(r.status_code, r.text) for r in answers]


async def test_a_busy_port_is_one_clear_error() -> None:
    with trio.socket.socket() as busy:
        await busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        never = trio.Event()
        async with trio.open_nursery() as nursery:
            with pytest.raises(CdpError, match=f"^HEALTH_PORT={port}: cannot listen on 127.0.0.1:{port}: "):
                await nursery.start(partial(serve_http, QuartTrio("x"), "127.0.0.1", port, never.wait))


async def test_health_names_a_sink_call_stuck_past_its_timeouts() -> None:
    """A commit in flight longer than its statement and lock timeouts (a connection the network dropped
    without a word): `call_seconds` shows it, and the sink is unhealthy, saying why."""
    import time

    from cdp._config import Config
    from cdp.ops import ServiceView
    from cdp.pipeline import Pipeline
    from cdp.processors import ContractDataProcessor
    from cdp.sinks import CallbackSink
    from cdp.sinks._postgres import SinkStatistics
    from cdp.upstream import LedgerSource

    config = Config()
    pipeline = Pipeline(config, ContractDataProcessor("auto"), CallbackSink(lambda s, r: None), checkpoint_path=None)
    stats = SinkStatistics(connected=True, call_timeout_s=360.0)
    view = ServiceView(LedgerSource(config, 2), pipeline, "postgres", sink_stats=lambda: stats)
    stats.call_started_at = time.monotonic() - 5
    _, components = view.health()
    assert (True, 5) == (components["sink"]["healthy"], round(components["sink"]["metrics"]["call_seconds"]))
    stats.call_started_at = time.monotonic() - 400
    _, components = view.health()
    assert components["sink"]["healthy"] is False
    assert "a commit has been running 400s, past its timeouts" == components["sink"]["last_error"]
