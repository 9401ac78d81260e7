"""Opaque page tokens: clients pass back what we gave them and never parse it."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hpo_service.errors import InvalidInputError

__all__ = ["Page", "decode_token", "encode_token"]

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results and the token for the next one (None on the last page)."""

    items: list[T]
    next_page_token: str | None


def encode_token(state: dict[str, Any]) -> str:
    """Pack a cursor into a URL-safe string."""
    raw = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str | None) -> dict[str, Any] | None:
    """Unpack a cursor; a token we did not issue is a 422 on ``page_token``."""
    if token is None:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        state = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError.at(("query", "page_token"), "malformed page token") from exc
    if not isinstance(state, dict):
        raise InvalidInputError.at(("query", "page_token"), "malformed page token")
    return state
