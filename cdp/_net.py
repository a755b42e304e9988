"""Binding listening sockets ourselves: the port is known at once (port 0 included) and a failed
bind leaves no socket open behind it."""

from __future__ import annotations

import errno
import socket

from cdp._errors import CdpError, ConfigError


def bind_tcp(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening).

    Raises:
        OSError: the bind failed; the socket is already closed.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


def bind_tcp_or_fail(host: str, port: int, host_setting: str, port_setting: str) -> socket.socket:
    """``bind_tcp``, its failure said in one line naming the setting to look at: an address that is not
    this machine's, or does not resolve, is a setting to change (``ConfigError``: exit 2); a port in use
    is a failure that may pass (``CdpError``: exit 1)."""
    try:
        return bind_tcp(host, port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"{host_setting}={host}: cannot listen on {host}:{port}: {reason}") from None
        raise CdpError(f"{port_setting}={port}: cannot listen on {host}:{port}: {reason}") from None
