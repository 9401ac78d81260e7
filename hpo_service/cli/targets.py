"""``--target width=4096,depth=32``: the target-shape argument shared by the CLI commands.

Its own module because ``hpo extrapolate`` (server side, ``cli/main.py``) and ``hpo studies
rungs`` (SDK side, ``cli/studies.py``) both read it, and the SDK side may import nothing of
the server.
"""

from __future__ import annotations

__all__ = ["parse_target"]


def parse_target(text: str) -> dict[str, float]:
    """``axis=value`` pairs, comma-separated, as a target body; exits 2 on a bad pair."""
    target: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        axis, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"--target: expected axis=value, got {part!r}")
        try:
            target[axis.strip()] = float(value)
        except ValueError:
            raise SystemExit(f"--target: {value!r} is not a number") from None
    return target
