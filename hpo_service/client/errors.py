"""The client's error: a problem+json answer from the service, parsed.

What a call through the SDK can raise, and what each means::

    ProblemError              the service answered 4xx/5xx (RFC 9457 problem): the request
                              was refused, or the service is unwell (5xx, 429)
    httpx.TransportError      no answer at all: refused, timed out, connection dropped
    pydantic.ValidationError  an answer the typed methods cannot read: the service broke
                              API.md (the JSON methods never raise it)
    backoff.GiveUpError       only through ``retry_call``: retryable errors outlasted it

``backoff.is_retryable`` draws the line between the first two kinds' retryable members
and the rest.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProblemError"]


class ProblemError(Exception):
    """The service answered with an RFC 9457 problem (any 4xx/5xx).

    Attributes:
        status: HTTP status.
        type: problem type URI; its last segment is the stable slug.
        title: short summary.
        detail: what went wrong.
        errors: field errors of a validation problem (``[{loc, msg}]``).
    """

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.type = str(body.get("type", "about:blank"))
        self.title = str(body.get("title", ""))
        self.detail = str(body.get("detail", ""))
        self.errors: list[dict[str, Any]] = list(body.get("errors") or [])
        self.body = body
        super().__init__(f"{status} {self.title}: {self.detail}")

    @property
    def slug(self) -> str:
        """The stable identifier at the end of ``type`` (e.g. ``trial-not-leased``)."""
        return self.type.rstrip("/").rsplit("/", 1)[-1]
