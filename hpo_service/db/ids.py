"""Opaque, prefixed resource ids (``st_…``, ``tr_…``, ``key_…``)."""

from __future__ import annotations

import re
import secrets

__all__ = ["is_wellformed", "new_id"]

_ID_RE = re.compile(r"^[a-z]{2,3}_[0-9a-f]{24}$")


def new_id(prefix: str) -> str:
    """A random id with a readable prefix; 96 random bits, never reused."""
    return f"{prefix}_{secrets.token_hex(12)}"


def is_wellformed(value: str) -> bool:
    """Whether ``value`` could be an id we issued; others are answered 404 without a query."""
    return _ID_RE.match(value) is not None
