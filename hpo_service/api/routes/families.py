"""Family routes: diagnostics across the studies of one model family."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hpo_service.api.deps import DatabaseDep, PrincipalDep
from hpo_service.errors import InvalidInputError
from hpo_service.services import scaling

router = APIRouter(prefix="/v1/families", tags=["families"])


def _target(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    out: dict[str, Any] = {}
    for part in text.split(","):
        axis, sep, value = part.partition("=")
        try:
            out[axis.strip()] = float(value) if sep else None
        except ValueError:
            raise InvalidInputError.at(
                ("query", "target"), f"expected axis=number pairs, got {part!r}"
            ) from None
        if not sep:
            raise InvalidInputError.at(("query", "target"), f"expected axis=number, got {part!r}")
    return out


@router.get("/{family}/ladder")
def ladder(
    family: str,
    db: DatabaseDep,
    principal: PrincipalDep,
    axis: str | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """Per-parameter optimum vs proxy scale across the family, with a drift verdict.

    ``target`` (e.g. ``width=4096,depth=32``) carries drifting parameters' fitted trend
    to that shape.
    """
    report = scaling.family_ladder(db, principal, family, axis=axis, target=_target(target))
    return report.to_json()
