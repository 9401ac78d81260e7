"""Typed errors of hpo_service, each with an HTTP status and a stable slug.

Services and the engine raise these; ``api/problems.py`` is the one place that turns them
into RFC 9457 ``application/problem+json`` responses. Nothing here imports a web framework,
so the same errors serve the CLI and the Python client. Each slug is written once, on its
class: the problem renderer and the HTTP middleware take slug and title from these classes,
including for the protocol errors the web framework raises itself (400, 405, 415).

The tree::

    HPOError (500, internal-error)
    ├── BadRequestError (400, bad-request)
    ├── InvalidInputError (422, validation-error)
    │   ├── UnknownAlgorithmError (422, unknown-algorithm)
    │   └── UnsupportedFeatureError (422, unsupported-feature)
    ├── AuthenticationError (401, unauthenticated)
    ├── PermissionDeniedError (403, forbidden)
    ├── NotFoundError (404, not-found)
    │   ├── StudyNotFoundError
    │   ├── TrialNotFoundError
    │   └── ApiKeyNotFoundError
    ├── MethodNotAllowedError (405, method-not-allowed)
    ├── ConflictError (409, conflict)
    │   ├── TrialNotLeasedError (409, trial-not-leased)
    │   ├── InvalidTransitionError (409, invalid-state-transition)
    │   ├── CompletionConflictError (409, completion-conflict)
    │   ├── IdempotencyConflictError (409, idempotency-conflict)
    │   └── NoCompletedTrialError (409, no-completed-trial)
    ├── PayloadTooLargeError (413, payload-too-large)
    ├── UnsupportedMediaTypeError (415, unsupported-media-type)
    ├── RateLimitedError (429, too-many-requests)
    └── ServiceUnavailableError (503, service-unavailable)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "ApiKeyNotFoundError",
    "AuthenticationError",
    "BadRequestError",
    "CompletionConflictError",
    "ConflictError",
    "FieldError",
    "HPOError",
    "IdempotencyConflictError",
    "InvalidInputError",
    "InvalidTransitionError",
    "MethodNotAllowedError",
    "NoCompletedTrialError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "StudyNotFoundError",
    "TrialNotFoundError",
    "TrialNotLeasedError",
    "UnknownAlgorithmError",
    "UnsupportedFeatureError",
    "UnsupportedMediaTypeError",
]


@dataclass(frozen=True)
class FieldError:
    """One validation failure: where (a path into the input) and what is wrong."""

    loc: tuple[str | int, ...]
    msg: str


class HPOError(Exception):
    """Root of every error the service reports to a caller.

    Attributes:
        status: HTTP status code the error maps to.
        slug: stable, documented identifier; the problem ``type`` ends with it.
        title: short human summary, the same for every instance of the class.
        detail: what went wrong in this instance.
    """

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequestError(HPOError):
    """The request cannot be parsed at all (e.g. a malformed form body).

    Raised by the web framework rather than by services; the class gives it its slug.
    """

    status = 400
    slug = "bad-request"
    title = "Bad request"


class InvalidInputError(HPOError):
    """The request is well-formed JSON but its content is not acceptable."""

    status = 422
    slug = "validation-error"
    title = "Invalid input"

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = list(errors)

    @classmethod
    def at(cls, loc: Sequence[str | int], msg: str) -> InvalidInputError:
        """Build an error for a single location, the detail repeating the message."""
        return cls(msg, [FieldError(tuple(loc), msg)])


class UnknownAlgorithmError(InvalidInputError):
    """The study names a designer the engine does not offer."""

    slug = "unknown-algorithm"
    title = "Unknown algorithm"


class UnsupportedFeatureError(InvalidInputError):
    """The request asks for a capability this build does not provide."""

    slug = "unsupported-feature"
    title = "Unsupported feature"


class AuthenticationError(HPOError):
    """No API key, or one that is unknown, revoked or expired."""

    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class PermissionDeniedError(HPOError):
    """The key is valid but its role may not do this."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFoundError(HPOError):
    """The resource does not exist, or belongs to another tenant."""

    status = 404
    slug = "not-found"
    title = "Not found"


class StudyNotFoundError(NotFoundError):
    """No study with this id is visible to the caller."""

    def __init__(self, study_id: str) -> None:
        super().__init__(f"study {study_id!r} not found")


class TrialNotFoundError(NotFoundError):
    """No trial with this id is visible to the caller."""

    def __init__(self, trial_id: str) -> None:
        super().__init__(f"trial {trial_id!r} not found")


class ApiKeyNotFoundError(NotFoundError):
    """No API key with this id exists."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"api key {key_id!r} not found")


class MethodNotAllowedError(HPOError):
    """The path exists but not with this HTTP method (raised by the web framework)."""

    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class ConflictError(HPOError):
    """The request contradicts the current state of a resource."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class TrialNotLeasedError(ConflictError):
    """A worker acted on a trial it does not hold the lease of."""

    slug = "trial-not-leased"
    title = "Trial not leased by this worker"


class InvalidTransitionError(ConflictError):
    """The trial or study state machine forbids this change."""

    slug = "invalid-state-transition"
    title = "Invalid state transition"


class CompletionConflictError(ConflictError):
    """The trial already finished with a different result."""

    slug = "completion-conflict"
    title = "Trial already finished differently"


class IdempotencyConflictError(ConflictError):
    """An Idempotency-Key was reused with a different request, or is still in flight."""

    slug = "idempotency-conflict"
    title = "Idempotency key conflict"


class NoCompletedTrialError(ConflictError):
    """The study has no completed trial yet, and the action starts from its best one.

    A conflict rather than invalid input: the request is fine and becomes valid once a
    trial completes, so a client may retry it later unchanged.
    """

    slug = "no-completed-trial"
    title = "No completed trial yet"


class PayloadTooLargeError(HPOError):
    """The request body exceeds the configured limit."""

    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaTypeError(HPOError):
    """The body's content type is not one the route reads (raised by the web framework)."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class RateLimitedError(HPOError):
    """Too many failed authentication attempts from one source; retry later."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ServiceUnavailableError(HPOError):
    """A dependency (the database) cannot be reached right now; retrying later may work."""

    status = 503
    slug = "service-unavailable"
    title = "Service unavailable"
