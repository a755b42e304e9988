"""Plain asyncio loops for the libraries that run their own (Dask, fsspec), beside trio-asyncio."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from cdp._errors import ConfigError


@contextlib.contextmanager
def plain_asyncio() -> Iterator[None]:
    """Let threads started in this block make plain asyncio loops, where trio-asyncio is loaded.

    trio-asyncio makes ``asyncio.new_event_loop()`` outside Trio return its own synchronous loop, on
    which Dask's scheduler, nannies and client cannot run (the cluster never starts), nor fsspec's
    I/O thread (every s3fs call would wait forever). Its per-thread
    policy override has a class-level default: setting that gives every thread that has not chosen
    otherwise the default policy, while code inside ``trio.run`` keeps getting trio-asyncio's loops.
    """
    module = sys.modules.get("trio_asyncio._loop")
    if module is None:
        yield
        return
    import asyncio

    faked = getattr(module, "_FakedPolicy", None)
    if faked is None or not hasattr(faked, "policy"):
        raise ConfigError(
            "this trio-asyncio version cannot be told to leave other threads plain asyncio loops: run "
            "cdp backfill, or read the datastore, in a process that does not load trio-asyncio"
        )
    before = faked.policy
    faked.policy = asyncio.DefaultEventLoopPolicy()
    try:
        yield
    finally:
        faked.policy = before
