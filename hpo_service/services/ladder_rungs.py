"""Depth rungs for the family ladder, created from a tuned global study.

The rules carry a global study's best to a deeper target; under CompleteP the global LR
optimum of a small proxy still moves with depth (``scaling/ladder_plan.py``). The ladder
measures that move, but only as well as its rungs measure each depth's optimum, so the
service builds the rungs itself instead of leaving their design to the user:

- **Which shapes.** ``ladder_plan``: the proxy's own depth, then doubling up to the
  target's, all at twice the proxy's width (at most a quarter of the target's): the
  narrowest models exaggerate the drift, and a model 4× narrower than the target is
  still cheap at full depth. The proxy's depth is measured again, the same way as the others, so
  that the estimator's biases cancel in the fitted slope instead of setting it.
- **What each rung holds.** The parameter (``lr`` by default) on the plan's fixed grid of
  octaves around the parent's best, every other parameter pinned at the best as a
  one-value ordinal (refine's notion of a fixed value), so a rung is a one-dimensional
  sweep. Each grid point is queued ``replicates`` times; workers give every trial its own
  init seed, so the replicates average seed noise out of the flat bottom of the LR curve,
  where a one-seed search puts its estimate almost anywhere within an octave.
- **Nothing else.** ``max_trials`` is 0: the designer adds no trial of its own, and the
  rung completes by itself when its last queued trial finishes.
- **Same base.** A rung keeps the parent's ``scale`` with only the proxy's shape changed,
  so the values are the parent's base values and the torch helper maps them by the rules
  exactly as it does for the parent.

``POST /v1/studies/{id}/extrapolate`` on the family's studies then applies the fitted
drift by default (``use_ladder``), since the family now holds several proxy shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from hpo_service.db.database import Database
from hpo_service.db.ids import new_id
from hpo_service.db.mapping import study_config, to_study, to_trial
from hpo_service.db.models import StudyRow, TrialRow
from hpo_service.db.repositories import StudyRepository, TrialRepository
from hpo_service.db.repositories.trials import set_state
from hpo_service.domain import (
    FloatParameter,
    ParamValue,
    Principal,
    Role,
    SearchSpace,
    Study,
    StudyConfig,
    StudyState,
    Trial,
    TrialSource,
    TrialState,
)
from hpo_service.domain.shape import parse_shape
from hpo_service.domain.space import AnyParameter
from hpo_service.errors import InvalidInputError, TrialNotFoundError
from hpo_service.scaling.config import ScaleConfig
from hpo_service.scaling.ladder_plan import LR_OFFSETS, ladder_plan
from hpo_service.services.access import require_role, visible_study, visible_trial
from hpo_service.services.refine import parent_best, pin, require_scale

__all__ = ["RungRequest", "create_depth_rungs"]

_MAX_TRIALS_PER_RUNG = 64


@dataclass(frozen=True)
class RungRequest:
    """What a client asks for.

    Attributes:
        target: the target's axes (``depth`` required, deeper than the proxy).
        param: the log-scaled float parameter to sweep (the global LR by default).
        offsets: the grid, in octaves from the parent's best; default the plan's.
        replicates: trials per grid point, each on its own seed.
        trial_id: the trial to centre on and pin at (default: the study's best); a
            study that names its best after re-running finalists passes that one.
    """

    target: dict[str, Any]
    param: str = "lr"
    offsets: Sequence[float] = LR_OFFSETS
    replicates: int = 2
    trial_id: str | None = None


def _check(request: RungRequest) -> None:
    if not request.offsets or not all(math.isfinite(o) and abs(o) <= 10 for o in request.offsets):
        raise InvalidInputError.at(("body", "offsets"), "offsets must be finite octaves in ±10")
    if len(set(request.offsets)) < 3:
        raise InvalidInputError.at(
            ("body", "offsets"), "a rung needs at least three distinct offsets to place a vertex"
        )
    if not 1 <= request.replicates <= 8:
        raise InvalidInputError.at(("body", "replicates"), "replicates must be in 1..8")
    if len(request.offsets) * request.replicates > _MAX_TRIALS_PER_RUNG:
        raise InvalidInputError.at(
            ("body", "offsets"),
            f"offsets × replicates must stay within {_MAX_TRIALS_PER_RUNG} trials per rung",
        )


def _swept(space: SearchSpace, name: str) -> AnyParameter:
    for p in space.parameters:
        if p.name == name:
            if isinstance(p, FloatParameter) and p.scale == "log":
                return p
            break
    raise InvalidInputError.at(
        ("body", "param"),
        f"{name!r} is not a log-scaled float of the study's space: a rung sweeps one in octaves",
    )


def _rung_space(
    space: SearchSpace, best: dict[str, ParamValue], name: str, grid: Sequence[float]
) -> SearchSpace:
    """The parent's space with ``name`` over the grid's span and every other value pinned."""
    params: list[AnyParameter] = []
    for p in space.parameters:
        if p.name == name:
            params.append(FloatParameter(name=name, low=min(grid), high=max(grid), scale="log"))
        elif p.name in best:
            params.append(pin(p, best[p.name]))
    return SearchSpace(parameters=params)


def create_depth_rungs(
    db: Database, principal: Principal, study_id: str, request: RungRequest, *, now: datetime
) -> list[Study]:
    """Create one rung study per depth of the plan, its grid queued.

    Raises:
        PermissionDeniedError: for worker keys.
        StudyNotFoundError: unknown id, or another tenant's study.
        InvalidInputError: no family or ``scale``, a proxy or target without depth, a
            target no deeper than the proxy, or a bad ``param``/``offsets``/``replicates``.
        NoCompletedTrialError: the study has no completed feasible trial yet.
        TrialNotFoundError: ``trial_id`` is not a trial of this study.
    """
    require_role(principal, Role.CLIENT)
    _check(request)
    with db.write() as session:
        parent = visible_study(session, principal, study_id)
        if not parent.family:
            raise InvalidInputError.at(
                ("path", "study_id"),
                f"study {parent.id!r} has no family: the ladder is fitted per family, so the "
                "rungs must join the study's",
            )
        config = study_config(parent)
        scale = require_scale(parent)
        _swept(config.space, request.param)
        target = parse_shape({**scale.proxy.axes(), **request.target}, ("body", "target"))
        if not (scale.proxy.width and scale.proxy.depth and target.width and target.depth):
            raise InvalidInputError.at(
                ("body", "target"), "depth rungs need width and depth on the proxy and the target"
            )
        plan = ladder_plan(scale.proxy, target)
        if not plan.depth:
            raise InvalidInputError.at(
                ("body", "target", "depth"),
                f"the target's depth ({target.depth}) is not above the proxy's "
                f"({scale.proxy.depth}): there is no depth to ladder over",
            )
        best = _centre(session, principal, parent, config, request.trial_id)
        value = float(best.params[request.param])
        grid = [value * 2.0**o for o in sorted(set(request.offsets))]
        space = _rung_space(config.space, dict(best.params), request.param, grid)
        pinned = {k: v for k, v in best.params.items() if k != request.param and k in space.names}
        created: list[StudyRow] = []
        for shape in plan.depth:
            rung_scale = _rung_scale(scale, int(shape.width or 0), int(shape.depth or 0))
            row = StudyRepository(session).add(
                StudyRow(
                    id=new_id("st"),
                    tenant=parent.tenant,
                    name=f"{parent.name} ({request.param} rung, w{shape.width} d{shape.depth})"[
                        :256
                    ],
                    family=parent.family,
                    objective=dict(parent.objective),
                    objectives=parent.objectives,
                    constraints=parent.constraints,
                    stopping=None,
                    space=space.model_dump(mode="json", exclude_none=True),
                    algorithm=parent.algorithm,
                    transfer=None,
                    scale=rung_scale,
                    max_trials=0,
                    max_attempts=parent.max_attempts,
                    seed=parent.seed,
                    meta={
                        "parent_study": parent.id,
                        "rung_of_trial": best.id,
                        "rung": {
                            "param": request.param,
                            "width": shape.width,
                            "depth": shape.depth,
                        },
                    },
                    state=StudyState.ACTIVE.value,
                    next_number=0,
                )
            )
            number = 0
            for x in grid:
                for _ in range(request.replicates):
                    trial = TrialRow(
                        id=new_id("tr"),
                        study_id=row.id,
                        number=number,
                        params={**pinned, request.param: x},
                        source=TrialSource.USER.value,
                        attempt=0,
                        meta={"rung_of": {"study": parent.id, "trial": best.id}},
                        created_at=now,
                    )
                    set_state(trial, TrialState.REQUESTED)
                    TrialRepository(session).add(trial)
                    number += 1
            row.next_number = number
            created.append(row)
        session.flush()
        counts = StudyRepository(session).trial_counts([r.id for r in created])
        return [to_study(r, counts[r.id]) for r in created]


def _centre(
    session: Session,
    principal: Principal,
    study: StudyRow,
    config: StudyConfig,
    trial_id: str | None,
) -> Trial:
    """The completed trial the rungs start from: ``trial_id``'s, or the study's best."""
    if trial_id is None:
        return parent_best(session, study, config)
    row, owner = visible_trial(session, principal, trial_id)
    if owner.id != study.id:
        raise TrialNotFoundError(trial_id)
    trial = to_trial(row)
    if trial.state is not TrialState.COMPLETED:
        raise InvalidInputError.at(
            ("body", "trial_id"), f"trial {trial_id!r} is {trial.state.value}, not completed"
        )
    return trial


def _rung_scale(scale: ScaleConfig, width: int, depth: int) -> dict[str, Any]:
    """The parent's ``scale`` with the proxy's width and depth changed and its base kept."""
    body = scale.to_json()
    body["base"] = scale.base_shape.model_dump(mode="json", exclude_none=True)
    proxy = scale.proxy.model_dump(mode="json", exclude_none=True)
    body["proxy"] = {**proxy, "width": width, "depth": depth}
    return body
