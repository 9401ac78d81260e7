"""Opaque, prefixed resource ids (``st_…``, ``tr_…``, ``key_…``)."""

from __future__ import annotations

import secrets

__all__ = ["new_id"]


def new_id(prefix: str) -> str:
    """A random id with a readable prefix; 96 random bits, never reused."""
    return f"{prefix}_{secrets.token_hex(12)}"
