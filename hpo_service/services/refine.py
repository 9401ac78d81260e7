"""Staged tuning: a per-module study seeded from a global study's best trial.

Users tune in two stages. The first study searches bare, global names (``lr``,
``init_std``, ...) under a ``scale`` configuration; the second searches per-module names
(``lr.hidden.attn_qkv``, ``init_std.readout``, ...) near the first one's optimum, as
Complete(d)P did. ``refine_study`` builds the second study from the first, so nobody
copies values by hand. The semantics, each chosen for a reason:

- **Absolute per-role values.** ``scaling/naming.resolve_value`` gives a tensor of role
  ``hidden.attn_qkv`` the value of ``lr.hidden.attn_qkv``, else ``lr.hidden``, else bare
  ``lr``: a per-role name *replaces* the bare one, it does not multiply it. The proxies'
  torch setup and ``extrapolate`` read names the same way, so the child stores absolute
  values too; multipliers would need every consumer to learn a second meaning.
- **The bare name stays, pinned** (``keep_global``, default): as a one-value ordinal at the
  parent's best, it keeps serving the roles the child does not list (bias, QK-norm, final
  norm, ...) exactly as in the parent, without adding a searched dimension. The service
  has no other notion of a fixed parameter, and a one-value grid encodes to a constant
  column every designer handles. Without it those roles fall back to the training code's
  defaults, which only makes sense when the listed roles cover every tensor.
- **Ranges around the best, not clipped** to the parent's bounds: the parent's range
  bounded one value shared by every role, a compromise, and per-role optima sit on either
  side of it. The project's CompleteP pilot (``research/payoff-pilot.md``) found the
  embedding LR's optimum 1.4–1.8 octaves above the global one at widths 256–512 (4.5 at
  width 32), the readout's 0.4–1.3 above, and its best joint setting at width 256 depth 8
  put the norm gains' LR 1.5 below; a global optimum near its range's edge would cut
  those off. Log-scaled floats get ``best · 2^±span_octaves``
  (default 2, to cover those offsets at the widths where µP transfer was shown), centred
  so the child's cube centre is the parent's best; linear, integer and grid parameters
  keep the parent's range (octaves mean nothing on a linear scale, whose ends are often
  hard limits such as ``wd ≥ 0``).
- **The parent's best is queued, not imported.** It is the same configuration in meaning
  (every tensor resolves to the parent's value), but a re-run measures it under the
  child's conditions (today's code and workers, the noise of a fresh seed), gives the
  ``local`` designer an honest incumbent, and shows the noise against the parent's value,
  which its metadata keeps.
- **No transfer region** for the child: its names differ from the family's global
  studies, and the parent's best already anchors the search.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy.orm import Session

from hpo_service.db.database import Database
from hpo_service.db.ids import new_id
from hpo_service.db.mapping import study_config, to_study, to_trial
from hpo_service.db.models import StudyRow, TrialRow
from hpo_service.db.repositories import StudyRepository, TrialRepository
from hpo_service.db.repositories.trials import set_state
from hpo_service.domain import (
    FloatParameter,
    OrdinalParameter,
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
from hpo_service.domain.space import AnyParameter
from hpo_service.engine import registry
from hpo_service.engine.pareto import best_trial
from hpo_service.errors import FieldError, InvalidInputError, NoCompletedTrialError
from hpo_service.scaling.config import ScaleConfig, validate_scale
from hpo_service.scaling.naming import parse_name
from hpo_service.services.access import require_role, visible_study

__all__ = [
    "DEFAULT_ALGORITHM",
    "DEFAULT_SPAN_OCTAVES",
    "ChildPlan",
    "Refinement",
    "default_roles",
    "parent_best",
    "pin",
    "plan_child",
    "refinable_names",
    "refine_study",
    "require_scale",
]

DEFAULT_ALGORITHM = "local"
DEFAULT_SPAN_OCTAVES = 2.0

# Complete(d)P tuned the in-block matrices separately first; embedding, readout and norm
# gains complete the roles whose optima differ most from the hidden LR.
_DENSE_LR = (
    "hidden.attn_qkv",
    "hidden.attn_out",
    "hidden.mlp_in",
    "hidden.mlp_out",
    "embedding",
    "readout",
    "norm",
)
# MoE blocks have experts and a router instead of the dense MLP (proxies/models.py).
_MOE_LR = (
    "hidden.attn_qkv",
    "hidden.attn_out",
    "hidden.expert_up",
    "hidden.expert_down",
    "router",
    "embedding",
    "readout",
    "norm",
)
_INIT = ("hidden", "embedding", "readout")


@dataclass(frozen=True)
class Refinement:
    """What a client asks for (every field optional; see the module docstring).

    Attributes:
        name: the child's name; default ``<parent name> (per-module)``.
        roles: bare name → roles to derive ``<name>.<role>`` for; bare names not listed
            are carried over as they are. None: ``default_roles``.
        span_octaves: half-width of a derived log-scaled range, in octaves of the best.
        algorithm: the child's designer.
        max_trials: the child's cap on engine trials (the queued best is not counted).
        keep_global: keep each derived bare name, pinned at the parent's best.
    """

    name: str | None = None
    roles: Mapping[str, Sequence[str]] | None = None
    span_octaves: float = DEFAULT_SPAN_OCTAVES
    algorithm: str = DEFAULT_ALGORITHM
    max_trials: int | None = None
    keep_global: bool = True


@dataclass(frozen=True)
class ChildPlan:
    """The derived part of a child study.

    Attributes:
        space: the child's search space.
        seed_params: the parent's best, expressed in the child's names.
        derived: bare name → the per-role names derived from it, in space order.
    """

    space: SearchSpace
    seed_params: dict[str, ParamValue]
    derived: dict[str, list[str]]


def refinable_names(space: SearchSpace) -> list[str]:
    """The bare names of ``space`` whose rule depends on the role (``lr``, ``init_std``...).

    Role-free names (``beta2``, ``warmup_frac``) have one value for every role by the
    tables' own definition, so splitting them per role would search nothing new.
    """
    return [n for n in space.names if _kind(n) == "bare"]


def default_roles(space: SearchSpace, scale: ScaleConfig) -> dict[str, list[str]]:
    """A per-module set for the refinable names of ``space``: LR and init, the rest global.

    Every derived name is a searched dimension, so the default stays small: Complete(d)P
    attributes most of its gain to different LRs for the module types inside the residual
    block, the project's pilot found the rest of the LR room in embedding, readout and norm
    gains, and init scale is the other per-role knob µP sets. WD and ε stay global (and
    QK-norm and final-norm LRs with the pinned bare ``lr``) unless ``roles`` names them:
    they may not exist in the user's model, and an absent role is a wasted dimension.
    """
    out: dict[str, list[str]] = {}
    for name in refinable_names(space):
        if name == "lr":
            out[name] = list(_MOE_LR if scale.is_moe else _DENSE_LR)
        elif name in ("init_std", "init_var"):
            out[name] = [*_INIT, "router"] if scale.is_moe else list(_INIT)
    return out


def _kind(name: str) -> str:
    try:
        return parse_name(name).kind
    except ValueError:
        return "unknown"


def _check_roles(
    roles: Mapping[str, Sequence[str]], space: SearchSpace, best: Mapping[str, ParamValue]
) -> dict[str, list[str]]:
    """Validate a client's ``roles``, every problem located under ``("body", "roles")``."""
    refinable = refinable_names(space)
    errors: list[FieldError] = []
    out: dict[str, list[str]] = {}
    for bare, listed in roles.items():
        loc: tuple[str | int, ...] = ("body", "roles", bare)
        if bare not in refinable:
            known = ", ".join(refinable) or "none"
            errors.append(
                FieldError(loc, f"{bare!r} is not a global name of the parent; refinable: {known}")
            )
            continue
        if bare not in best:
            errors.append(FieldError(loc, f"{bare!r} is inactive in the parent's best trial"))
            continue
        unique = list(dict.fromkeys(listed))
        for i, role in enumerate(unique):
            try:
                parsed = parse_name(f"{bare}.{role}")
            except ValueError as exc:
                errors.append(FieldError((*loc, i), str(exc)))
                continue
            if parsed.kind != "role":
                errors.append(FieldError((*loc, i), f"{role!r} is not a module role"))
        out[bare] = unique
    if errors:
        raise InvalidInputError("roles do not fit the parent study", errors)
    return out


def _derived(p: AnyParameter, name: str, best: ParamValue, span: float) -> AnyParameter:
    """The parent's parameter ``p`` re-ranged for one role (see the module docstring)."""
    if isinstance(p, FloatParameter) and p.scale == "log":
        factor = 2.0**span
        value = float(best)
        return FloatParameter(
            name=name, low=value / factor, high=value * factor, scale="log", conditions=p.conditions
        )
    return p.model_copy(update={"name": name})


def pin(p: AnyParameter, best: ParamValue) -> AnyParameter:
    """``p`` fixed at ``best``: a one-value ordinal, the service's notion of a constant."""
    if isinstance(best, str):  # a categorical cannot become a one-value numeric grid
        return p
    return OrdinalParameter(name=p.name, values=[best], conditions=p.conditions)


def plan_child(
    space: SearchSpace,
    best: Mapping[str, ParamValue],
    roles: Mapping[str, Sequence[str]],
    *,
    span_octaves: float,
    keep_global: bool,
) -> ChildPlan:
    """Derive the child's space and first trial from the parent's space and best params.

    Pure: the same inputs give the same space, parameter order included (each derived
    name takes its bare name's place, the pinned bare name last among them).

    Raises:
        InvalidInputError: nothing to derive, or the derived space is not a valid space
            (a condition on a dropped bare name).
    """
    taken = set(space.names)
    params: list[AnyParameter] = []
    seed: dict[str, ParamValue] = {}
    derived: dict[str, list[str]] = {}
    for p in space.parameters:
        listed = [r for r in roles.get(p.name, ()) if f"{p.name}.{r}" not in taken]
        if not listed or p.name not in best:
            params.append(p)
            if p.name in best:
                seed[p.name] = best[p.name]
            continue
        value = best[p.name]
        names = [f"{p.name}.{role}" for role in listed]
        for name in names:
            params.append(_derived(p, name, value, span_octaves))
            seed[name] = value
        derived[p.name] = names
        if keep_global:
            params.append(pin(p, value))
            seed[p.name] = value
    if not derived:
        raise InvalidInputError.at(
            ("body", "roles"),
            "nothing to refine: no role to derive for the parent's global names "
            f"({', '.join(refinable_names(space)) or 'none'}); by default only lr and "
            "init_std/init_var are split, so name others in 'roles', e.g. "
            '{"wd": ["hidden", "embedding"]}, and roles the parent already names are skipped',
        )
    try:
        child = SearchSpace(parameters=params)
    except ValidationError as exc:
        msg = "; ".join(str(e["msg"]) for e in exc.errors())
        raise InvalidInputError.at(
            ("body", "keep_global"), f"the derived search space is invalid: {msg}"
        ) from None
    return ChildPlan(child, child.validate_params(seed, loc=("trial", "params")), derived)


def parent_best(session: Session, row: StudyRow, config: StudyConfig) -> Trial:
    """The study's best completed feasible trial, which a derived study starts from."""
    rows = TrialRepository(session).completed_by_value(row.id, config.objective.goal)
    best = best_trial([to_trial(r) for r in rows], config.objective, config.constraints)
    if best is None or best.state is not TrialState.COMPLETED:
        raise NoCompletedTrialError(
            f"study {row.id!r} has no completed feasible trial yet: a derived study starts "
            "from its best"
        )
    return best


def require_scale(row: StudyRow) -> ScaleConfig:
    """The study's ``scale``: per-module names and shapes mean nothing without one."""
    scale = validate_scale(row.scale)
    if scale is None:
        raise InvalidInputError.at(
            ("path", "study_id"),
            f"study {row.id!r} has no 'scale' configuration: per-module names are resolved "
            "by a parameterisation, so this needs a study created with 'scale'",
        )
    return scale


def _child_row(
    parent: StudyRow, plan: ChildPlan, request: Refinement, best: Trial, algorithm: str
) -> StudyRow:
    name = request.name or f"{parent.name} (per-module)"[:256]
    return StudyRow(
        id=new_id("st"),
        tenant=parent.tenant,
        name=name,
        family=parent.family,
        objective=dict(parent.objective),
        objectives=parent.objectives,
        constraints=parent.constraints,
        stopping=parent.stopping,
        space=plan.space.model_dump(mode="json", exclude_none=True),
        algorithm=algorithm,
        transfer=None,
        scale=parent.scale,
        max_trials=request.max_trials,
        max_attempts=parent.max_attempts,
        seed=parent.seed,
        meta={
            "parent_study": parent.id,
            "refined_from_trial": best.id,
            "refined_params": plan.derived,
        },
        state=StudyState.ACTIVE.value,
        next_number=0,
    )


def refine_study(
    db: Database, principal: Principal, study_id: str, request: Refinement, *, now: datetime
) -> Study:
    """Create the per-module child of a study, its best trial queued as the first trial.

    The child belongs to the parent's tenant (it continues the parent's work, and an
    admin refining another tenant's study should not move it into the admin's own).

    Raises:
        PermissionDeniedError: for worker keys.
        StudyNotFoundError: unknown id, or another tenant's study.
        UnknownAlgorithmError: ``algorithm`` names no designer.
        InvalidInputError: the parent has no ``scale``, nothing to refine, or bad
            ``roles``/``span_octaves``.
        NoCompletedTrialError: the parent has no completed feasible trial yet.
    """
    require_role(principal, Role.CLIENT)
    algorithm = registry.check_algorithm(request.algorithm)
    if not (math.isfinite(request.span_octaves) and request.span_octaves > 0):
        raise InvalidInputError.at(("body", "span_octaves"), "span_octaves must be positive")
    with db.write() as session:
        parent = visible_study(session, principal, study_id)
        config = study_config(parent)
        scale = require_scale(parent)
        if not refinable_names(config.space):
            raise InvalidInputError.at(
                ("path", "study_id"),
                f"study {parent.id!r} has no global role-dependent name (lr, wd, eps, init_std, "
                "init_var) to split per module",
            )
        best = parent_best(session, parent, config)
        roles = (
            _check_roles(request.roles, config.space, best.params)
            if request.roles is not None
            else default_roles(config.space, scale)
        )
        plan = plan_child(
            config.space,
            best.params,
            roles,
            span_octaves=request.span_octaves,
            keep_global=request.keep_global,
        )
        validate_scale(scale, param_names=plan.space.names, names_loc=("body", "roles"))
        row = StudyRepository(session).add(_child_row(parent, plan, request, best, algorithm))
        seed = TrialRow(
            id=new_id("tr"),
            study_id=row.id,
            number=0,
            params=plan.seed_params,
            source=TrialSource.USER.value,
            attempt=0,
            meta={
                "refined_from": {"study": parent.id, "trial": best.id},
                "parent_value": best.result.get(config.objective.metric) if best.result else None,
            },
            created_at=now,
        )
        set_state(seed, TrialState.REQUESTED)
        TrialRepository(session).add(seed)
        row.next_number = 1
        session.flush()
        counts = StudyRepository(session).trial_counts([row.id])
        return to_study(row, counts[row.id])
