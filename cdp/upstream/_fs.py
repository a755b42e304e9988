"""One way to open a store URL (a path, ``file://``, ``s3://``, ``gs://``, any fsspec URL), for reading and writing."""

from __future__ import annotations

import threading
from typing import Any, Final

from cdp._asyncio import plain_asyncio
from cdp._errors import ConfigError, missing_extra


def start_fsspec_loop() -> None:
    """Start fsspec's I/O loop (async backends such as s3fs run on it) as a plain asyncio loop.

    Made in a short-lived thread: inside ``trio.run`` trio-asyncio refuses to make a loop at all.
    """
    import fsspec.asyn

    def start() -> None:
        with plain_asyncio():
            fsspec.asyn.get_loop()

    if fsspec.asyn.loop[0] is None:
        thread = threading.Thread(target=start, name="cdp-fsspec-loop-start")
        thread.start()
        thread.join()


def open_fs(url: str, timeout_s: float, setting: str) -> tuple[Any, str, bool]:
    """The filesystem, root path and whether it is local, for ``url``.

    Raises:
        ConfigError: no backend for the URL's scheme (e.g. ``s3://`` without the s3 extra), naming ``setting``.
    """
    import fsspec  # loaded only where a store is used

    start_fsspec_loop()
    options: dict[str, object] = {}
    if url.startswith(("s3://", "s3a://")):  # botocore waits 60 s per attempt, and retries, by default
        options["config_kwargs"] = {"connect_timeout": timeout_s, "read_timeout": timeout_s}
    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:
        raise _refused(url, setting, exc) from None
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return fs, root, bool({"file", "local"} & set(protocols))


_CREDENTIALS: Final = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError", "DefaultCredentialsError", "RefreshError"}
)  # botocore's and google-auth's: no credentials, or ones the provider would not take


def denied(exc: BaseException) -> bool:
    """A failure retrying will not fix: access denied (s3fs and gcsfs say PermissionError), or no usable
    credentials (named, not imported: each backend is optional)."""
    return isinstance(exc, PermissionError) or any(c.__name__ in _CREDENTIALS for c in type(exc).__mro__)


def _refused(url: str, setting: str, exc: BaseException) -> ConfigError:
    """A URL fsspec cannot open: for a scheme whose backend is an extra of ours, the install that works."""
    scheme = url.split("://", 1)[0]
    extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}.get(scheme)
    if isinstance(exc, ImportError) and extra is not None:
        module = {"s3": "s3fs", "gcs": "gcsfs", "http": "aiohttp"}[extra]
        return missing_extra(f"{setting}={url}", extra, module)
    return ConfigError(f"{setting}={url}: {' '.join(str(exc).split())}")
