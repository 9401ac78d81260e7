"""The HTTP protocol `hpo serve` runs: uvicorn's, with TCP_NODELAY on every connection.

Why: with ``--workers > 1`` uvicorn binds the listening socket itself as
``socket.socket(family)``, whose protocol number is 0, and asyncio only sets TCP_NODELAY
on sockets that say ``IPPROTO_TCP``. The h11 protocol writes a response's head and body
separately, so without TCP_NODELAY Nagle's algorithm holds the body until the client
ACKs the head, and the client delays that ACK by up to 40 ms. Measured on the bare
insert endpoint with 4 processes: every request took 52 ms (p50 at 1 client) instead of
1–10 ms. A single process never hit this (asyncio's own ``create_server`` binds with
``IPPROTO_TCP``), which is why it only showed in the multi-process benchmark cells.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

__all__ = ["NoDelayHTTPProtocol", "set_nodelay"]


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off on a TCP transport (no-op for Unix sockets)."""
    sock: Any = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's default HTTP protocol (httptools if installed, else h11), Nagle off."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set TCP_NODELAY, then let uvicorn take the connection."""
        set_nodelay(transport)
        super().connection_made(transport)
