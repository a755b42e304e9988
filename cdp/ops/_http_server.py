"""Hypercorn for the ops endpoints, with a cap on concurrent connections.

Hypercorn's ``serve`` accepts every connection it is offered, so a few hundred slow clients used to
exhaust the process's file descriptors and kill the pipeline ("cannot write checkpoint: Too many
open files"). This runs the same pieces ``hypercorn.trio.serve`` does (lifespan, worker context,
one ``TCPServer`` per connection, graceful close on the shutdown trigger), with one change: a
connection is accepted only while fewer than ``max_connections`` are open; the rest wait in the
kernel's accept queue (``backlog``) or are refused by it, and never cost the pipeline a descriptor.
Hypercorn's internals are touched only here (pinned to 0.18).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app
from quart_trio import QuartTrio

BACKLOG: Final = 64  # connections the kernel queues beyond the cap before refusing more


class _Capped(trio.abc.Listener[trio.SocketStream]):
    """A listener that accepts only while a slot is free; the handler gives the slot back."""

    def __init__(self, inner: trio.SocketListener, slots: trio.Semaphore) -> None:
        self.inner = inner
        self.slots = slots

    async def accept(self) -> trio.SocketStream:
        await self.slots.acquire()
        try:
            return await self.inner.accept()
        except BaseException:
            self.slots.release()
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


async def serve_capped(
    app: QuartTrio,
    config: HypercornConfig,
    sock: socket.socket,
    max_connections: int,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on the bound ``sock`` until ``shutdown_trigger`` returns, then give requests in
    flight ``config.graceful_timeout`` to finish."""
    wrapped = wrap_app(app, config.wsgi_max_body_size, None)
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    slots = trio.Semaphore(max_connections)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            state = ConnectionState(lifespan_state.copy())
            await TCPServer(wrapped, config, context, state, stream)  # type: ignore[arg-type]  # typed for TLS only
        finally:
            slots.release()

    sock.listen(BACKLOG)
    listener = _Capped(trio.SocketListener(trio.socket.from_stdlib_socket(sock)), slots)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                accepting.start_soon(partial(trio.serve_listeners, handle, [listener], handler_nursery=connections))
                task_status.started()
                await shutdown_trigger()
                accepting.cancel_scope.cancel("shutting down: no new connections")
            await context.terminated.set()  # keep-alive connections close after their current request
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
