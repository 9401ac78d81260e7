"""A lean HTTP/1.1 load client for bench_load: raw asyncio streams, one kept-alive socket each.

Why not httpx: on a 2-core machine the load generator shares the CPU with the servers it
measures. httpx spends roughly a millisecond of Python per request (request building,
header models, response decoding), which is as much as the server's own work, so it caps
every endpoint at the same rate and hides real differences. This client pre-encodes the
request bytes, writes them in one ``write`` (no Nagle/delayed-ACK stalls from split
header/body writes) and parses only the status line and Content-Length: tens of
microseconds per request.

It speaks only what the benchmark needs: POST with a JSON body, responses with a
Content-Length (FastAPI/uvicorn always send one for JSON), keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

__all__ = ["Connection", "Response"]


class Response:
    """Status and raw body of one response; ``json()`` decodes on demand."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One kept-alive HTTP/1.1 connection to ``host:port``; requests run one at a time."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._fixed = f"Host: {host}:{port}\r\nContent-Type: application/json\r\n{extra}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    def encode(self, path: str, body: Any) -> bytes:
        """The bytes of ``POST path`` with ``body`` as JSON (build once, send many times)."""
        data = json.dumps(body, separators=(",", ":")).encode()
        head = f"POST {path} HTTP/1.1\r\n{self._fixed}Content-Length: {len(data)}\r\n\r\n"
        return head.encode() + data

    async def send(self, raw: bytes) -> Response:
        """Send pre-encoded request bytes, wait for the whole response."""
        if self._writer is None:
            await self.open()
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self._reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return Response(status, body)

    async def post(self, path: str, body: Any) -> Response:
        return await self.send(self.encode(path, body))

    def abort(self) -> None:
        """Drop the connection now (used when a request is abandoned mid-flight)."""
        if self._writer is not None:
            self._writer.transport.abort()
        self._reader = self._writer = None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None
