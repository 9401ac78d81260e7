"""Opaque page tokens: clients pass back what we gave them and never parse it.

A token holds the name of the ordering it was issued for and the sort key of the last row
its page showed (``db/keyset.py`` does the query). Anything that does not decode to a key
of the ordering asked for, including a token of another ordering, is a 422 on
``page_token``: resuming one ordering at another's key would silently skip rows.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hpo_service.db.keyset import Key, Keyset
from hpo_service.errors import InvalidInputError

__all__ = ["Page", "next_token", "read_token"]

T = TypeVar("T")
_WHERE = ("query", "page_token")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results and the token for the next one (None on the last page)."""

    items: list[T]
    next_page_token: str | None


def next_token(keyset: Keyset, key: Key | None) -> str | None:
    """The token that resumes ``keyset`` after ``key`` (None when no page follows)."""
    if key is None:
        return None
    state = {"o": keyset.name, "k": keyset.dump(key)}
    raw = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(token: str | None, keyset: Keyset) -> Key | None:
    """The key a token resumes after; None for the first page.

    Raises:
        InvalidInputError: the token is not one we issued for ``keyset``.
    """
    if token is None:
        return None
    state = _decode(token)
    if not isinstance(state.get("o"), str):
        raise InvalidInputError.at(_WHERE, "malformed page token")
    if state["o"] != keyset.name:
        raise InvalidInputError.at(_WHERE, "this page token was issued for another ordering")
    values = state.get("k")
    try:
        if not isinstance(values, list):
            raise ValueError("no key")
        return keyset.load(values)
    except ValueError as exc:
        raise InvalidInputError.at(_WHERE, "malformed page token") from exc


def _decode(token: str) -> dict[str, Any]:
    try:
        padded = token + "=" * (-len(token) % 4)
        state = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError.at(_WHERE, "malformed page token") from exc
    if not isinstance(state, dict):
        raise InvalidInputError.at(_WHERE, "malformed page token")
    return state
