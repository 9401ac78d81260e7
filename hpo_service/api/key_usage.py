"""Records when each API key was last used, after the response has gone out.

Authentication (``deps._principal``) leaves the caller on ``request.state.principal``;
this middleware reads it once the app has answered and hands the key id to a throttled
recorder, so the common case costs a dictionary lookup and never delays a response.
"""

from __future__ import annotations

import logging

from anyio import to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from hpo_service.db.base import utcnow
from hpo_service.domain import Principal
from hpo_service.services.key_usage import KeyUsageRecorder

__all__ = ["KeyUsageMiddleware"]

log = logging.getLogger(__name__)


class KeyUsageMiddleware:
    """After each authenticated request, note the key's use (at most once a minute)."""

    def __init__(self, app: ASGIApp, *, recorder: KeyUsageRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, then record the key it authenticated, if any."""
        await self.app(scope, receive, send)
        if scope["type"] != "http":
            return
        principal = scope.get("state", {}).get("principal")
        if not isinstance(principal, Principal):
            return
        now = utcnow()
        if not self.recorder.due(principal.key_id, now):
            return
        try:
            await to_thread.run_sync(lambda: self.recorder.write(principal.key_id, now))
        except Exception:  # bookkeeping only: never turn a served request into an error
            log.warning("could not record use of key %s", principal.key_id, exc_info=True)
