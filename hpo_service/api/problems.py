"""The one place errors become RFC 9457 ``application/problem+json`` responses.

Domain errors carry their status and slug; request validation errors become 422 with an
``errors`` list of ``{loc, msg}``; unknown routes and methods become 404/405 problems; a
database that cannot be reached becomes 503 with ``Retry-After``. Anything else is a
500 problem that reveals nothing of the exception.

Every answer is rendered from an ``HPOError`` (``error_response``), so a slug and its
title are written once, on the error's class in ``hpo_service.errors``, whoever raised it:
a service, the web framework or the HTTP middleware.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hpo_service.errors import (
    AuthenticationError,
    BadRequestError,
    FieldError,
    HPOError,
    InvalidInputError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
)

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_RESPONSES",
    "error_response",
    "install_problem_handlers",
]

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://hpo-service.dev/problems/"
PROBLEM_JSON = "application/problem+json"


def _documented(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


# Error answers every API route may give, documented once for the OpenAPI document.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _documented("Missing, invalid, revoked or expired API key"),
    403: _documented("The key's role may not do this"),
    404: _documented("Unknown id, or another tenant's resource"),
    409: _documented("Conflicts with the resource's state (e.g. trial-not-leased)"),
    413: _documented("Request body too large"),
    422: _documented("Invalid input; `errors` lists each field"),
    429: _documented("Too many failed authentication attempts"),
    503: _documented("The database is unavailable; retry"),
}

# The errors the web framework raises as HTTP exceptions, by status.
_HTTP_ERRORS: dict[int, type[HPOError]] = {
    cls.status: cls
    for cls in (
        BadRequestError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        MethodNotAllowedError,
        PayloadTooLargeError,
        UnsupportedMediaTypeError,
        RateLimitedError,
    )
}


def _problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Render one problem."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def error_response(exc: HPOError, *, instance: str | None) -> JSONResponse:
    """Render an error: its class's status, slug and title, its detail and field errors.

    The headers follow from the kind of error: ``WWW-Authenticate`` on 401, ``Retry-After``
    on 429 and 503.
    """
    errors = None
    if isinstance(exc, InvalidInputError):
        errors = [{"loc": list(e.loc), "msg": e.msg} for e in exc.errors]
    return _problem_response(
        exc.status,
        exc.slug,
        exc.title,
        exc.detail,
        instance=instance,
        errors=errors,
        headers=_headers(exc),
    )


def _headers(exc: HPOError) -> dict[str, str] | None:
    if isinstance(exc, RateLimitedError):
        return {"Retry-After": str(max(1, round(exc.retry_after)))}
    if isinstance(exc, ServiceUnavailableError):
        return {"Retry-After": "2"}
    if exc.status == 401:
        return {"WWW-Authenticate": "Bearer"}
    return None


def _from_error(exc: HPOError, request: Request) -> JSONResponse:
    return error_response(exc, instance=request.url.path)


def _clean_msg(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def install_problem_handlers(app: FastAPI) -> None:
    """Register every exception handler on ``app``."""

    @app.exception_handler(HPOError)
    async def _hpo_error(request: Request, exc: HPOError) -> JSONResponse:
        return _from_error(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            FieldError(
                tuple(p for p in e.get("loc", ()) if isinstance(p, str | int)),
                _clean_msg(str(e.get("msg", ""))),
            )
            for e in exc.errors()
        ]
        first = errors[0] if errors else FieldError((), "invalid request")
        where = ".".join(str(p) for p in first.loc)
        detail = f"{where}: {first.msg}" if where else first.msg
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
        return _from_error(InvalidInputError(detail, errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        if exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        kind = _HTTP_ERRORS.get(exc.status_code)
        # A status none of our errors has gets a generic slug: the only one not on a class.
        slug, title = (kind.slug, kind.title) if kind else ("http-error", "HTTP error")
        return _problem_response(
            exc.status_code,
            slug,
            title,
            detail,
            instance=request.url.path,
            headers=dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(OperationalError)
    async def _db_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig)
        return _from_error(
            ServiceUnavailableError("the database is unavailable; retry shortly"), request
        )

    @app.exception_handler(DataError)
    async def _bad_value(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the schemas let through (e.g. a NUL byte in a
        # string on PostgreSQL): that is bad input, and the transaction was rolled back.
        return _from_error(
            InvalidInputError(
                "a value in the request cannot be stored (for example, it contains a NUL byte)",
                [FieldError(("body",), "value cannot be stored")],
            ),
            request,
        )

    @app.exception_handler(DBAPIError)
    async def _db_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return _from_error(
                ServiceUnavailableError("the database connection was lost; retry shortly"), request
            )
        log.exception("database error")
        return error_response(HPOError("database error"), instance=None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _from_error(HPOError("an unexpected error occurred"), request)
