"""The one place errors become RFC 9457 ``application/problem+json`` responses.

Domain errors carry their status and slug; request validation errors become 422 with an
``errors`` list of ``{loc, msg}``; unknown routes and methods become 404/405 problems; a
database that cannot be reached becomes 503 with ``Retry-After``. Anything else is a
500 problem that reveals nothing of the exception.
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
    HPOError,
    InvalidInputError,
    RateLimitedError,
    ServiceUnavailableError,
)

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_RESPONSES",
    "install_problem_handlers",
    "problem_response",
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

_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("too-many-requests", "Too many requests"),
}


def problem_response(
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


def _from_error(exc: HPOError, request: Request) -> JSONResponse:
    errors = None
    if isinstance(exc, InvalidInputError):
        errors = [{"loc": list(e.loc), "msg": e.msg} for e in exc.errors]
    headers = {"Retry-After": "2"} if isinstance(exc, ServiceUnavailableError) else None
    if exc.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, RateLimitedError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    return problem_response(
        exc.status,
        exc.slug,
        exc.title,
        exc.detail,
        instance=request.url.path,
        errors=errors,
        headers=headers,
    )


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
            {
                "loc": [p for p in e.get("loc", ()) if isinstance(p, str | int)],
                "msg": _clean_msg(str(e.get("msg", ""))),
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        detail = f"{where}: {first['msg']}" if where else str(first["msg"])
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
        return problem_response(
            422,
            "validation-error",
            "Invalid input",
            detail,
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        if exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        return problem_response(
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
        return problem_response(
            422,
            "validation-error",
            "Invalid input",
            "a value in the request cannot be stored (for example, it contains a NUL byte)",
            instance=request.url.path,
            errors=[{"loc": ["body"], "msg": "value cannot be stored"}],
        )

    @app.exception_handler(DBAPIError)
    async def _db_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return _from_error(
                ServiceUnavailableError("the database connection was lost; retry shortly"), request
            )
        log.exception("database error")
        return problem_response(500, "internal-error", "Internal error", "database error")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500,
            "internal-error",
            "Internal error",
            "an unexpected error occurred",
            instance=request.url.path,
        )
