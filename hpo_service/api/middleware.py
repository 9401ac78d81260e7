"""ASGI middleware: request size and nesting limits, and Idempotency-Key replay.

Both need the whole request body before the route runs, so one middleware buffers it
(bounded by ``max_body_bytes``), checks it, and replays it to the app.
"""

from __future__ import annotations

import hashlib
from typing import Any

from anyio import to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hpo_service.api.problems import error_response
from hpo_service.config import Settings
from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.errors import FieldError, HPOError, InvalidInputError, PayloadTooLargeError
from hpo_service.services import idempotency

__all__ = ["BodyGuardMiddleware", "json_depth"]


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays/objects in a JSON text, without parsing it.

    Parsing a hostile, deeply nested document can exhaust the recursion limit; counting
    brackets outside strings is linear and safe.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _may_nest_deeper(body: bytes, limit: int) -> bool:
    """False when the body has too few brackets to nest deeper than ``limit``.

    Counting is done in C and settles almost every real request (a report has two or
    three brackets), so the byte-by-byte scan of ``json_depth`` runs only on bodies that
    could be too deep.
    """
    return body.count(b"{") + body.count(b"[") > limit


class BodyGuardMiddleware:
    """Rejects oversized or too deeply nested bodies; replays idempotent POSTs."""

    def __init__(self, app: ASGIApp, *, settings: Settings, db: Database) -> None:
        self.app = app
        self.settings = settings
        self.db = db

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer and check the body, then run the app (or replay a stored response)."""
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, send, limit)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._too_large(scope, send, limit)
                return
        data = bytes(body)
        if _may_nest_deeper(data, self.settings.max_json_depth) and (
            json_depth(data) > self.settings.max_json_depth
        ):
            await self._problem(
                scope,
                send,
                InvalidInputError(
                    f"JSON nesting deeper than {self.settings.max_json_depth} levels",
                    [FieldError(("body",), "nesting too deep")],
                ),
            )
            return
        replay_receive = _replayer(data, receive)
        key = headers.get("idempotency-key")
        if key is None or scope["method"] != "POST":
            await self.app(scope, replay_receive, send)
            return
        await self._idempotent(scope, replay_receive, send, key, headers, data)

    async def _idempotent(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: str,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        if not 1 <= len(key) <= 255:
            await self._problem(
                scope,
                send,
                InvalidInputError(
                    "Idempotency-Key must have 1 to 255 characters",
                    [FieldError(("header", "Idempotency-Key"), "1 to 255 characters")],
                ),
            )
            return
        scope_id = hashlib.sha256(headers.get("authorization", "").encode()).hexdigest()
        digest = hashlib.sha256(
            scope["method"].encode() + b" " + scope["path"].encode() + b"\n" + body
        ).hexdigest()
        ttl = self.settings.idempotency_ttl_seconds
        try:
            stored = await to_thread.run_sync(
                lambda: idempotency.begin(
                    self.db, scope=scope_id, key=key, digest=digest, now=utcnow(), ttl_seconds=ttl
                )
            )
        except HPOError as exc:
            await self._problem(scope, send, exc)
            return
        if stored is not None:
            await send(
                {
                    "type": "http.response.start",
                    "status": stored.status_code,
                    "headers": [
                        (b"content-type", (stored.content_type or "application/json").encode()),
                        (b"content-length", str(len(stored.body)).encode()),
                        (b"idempotent-replayed", b"true"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": stored.body})
            return
        captured: dict[str, Any] = {"status": 500, "content_type": None, "body": bytearray()}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        captured["content_type"] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                captured["body"].extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            status = int(captured["status"])
            if status < 500:
                await to_thread.run_sync(
                    lambda: idempotency.finish(
                        self.db,
                        scope=scope_id,
                        key=key,
                        status_code=status,
                        content_type=captured["content_type"],
                        body=bytes(captured["body"]),
                    )
                )
            else:
                await to_thread.run_sync(
                    lambda: idempotency.abandon(self.db, scope=scope_id, key=key)
                )

    @classmethod
    async def _too_large(cls, scope: Scope, send: Send, limit: int) -> None:
        await cls._problem(scope, send, PayloadTooLargeError(f"request body exceeds {limit} bytes"))

    @staticmethod
    async def _problem(
        scope: Scope,
        send: Send,
        error: HPOError,
    ) -> None:
        response = error_response(error, instance=scope["path"])
        await response(scope, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}


def _replayer(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
