"""Seed order (consensus of the other sources) and the length of the seed phase."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from hpo_service.domain import (
    FittedTransfer,
    Objective,
    SearchSpace,
    StudyConfig,
    TransferSpec,
    Trial,
    TrialState,
)
from hpo_service.domain.region import Box
from hpo_service.domain.transfer import TrustSpec
from hpo_service.engine.encoding import SpaceEncoder
from hpo_service.engine.gp import GPDesigner
from hpo_service.engine.registry import make_designer
from hpo_service.services.transfer import designer_for
from hpo_service.transfer.designer import DEFAULT_TRUST, RegionDesigner, narrowed_space
from hpo_service.transfer.exploit import TrustOptions
from hpo_service.transfer.fit import Winners
from hpo_service.transfer.seeds import (
    consensus_point,
    seed_phase_length,
    source_bests,
    support_order,
)


def winners(groups: list[list[list[float]]], min_width: float = 0.01) -> Winners:
    """One group of rows per source task, each group's best first."""
    rows = [row for group in groups for row in group]
    task = [t for t, group in enumerate(groups) for _ in group]
    d = len(rows[0])
    return Winners(
        names=[f"x{i}" for i in range(d)],
        z=np.asarray(rows, dtype=np.float64),
        task=np.asarray(task, dtype=np.int64),
        min_width=np.full(d, min_width),
        axis_ok=[True] * d,
    )


def test_source_bests_are_each_tasks_first_row() -> None:
    w = winners([[[0.1, 0.1], [0.2, 0.2]], [[0.5, 0.5]], [[0.9, 0.8], [0.7, 0.7]]])
    tasks, bests = source_bests(w)
    assert tasks == [0, 1, 2]
    assert bests.tolist() == [[0.1, 0.1], [0.5, 0.5], [0.9, 0.8]]


def test_consensus_first_outlier_last() -> None:
    # five sources agree around (0.5, 0.5); source 0 is far away; listed first on purpose
    rng = np.random.default_rng(0)
    groups = [[[0.95, 0.05], [0.9, 0.1]]]
    for c in [(0.46, 0.52), (0.55, 0.47), (0.5, 0.5), (0.52, 0.55), (0.43, 0.45)]:
        groups.append([list(c), *(np.asarray(c) + rng.normal(0, 0.03, (3, 2))).tolist()])
    order = support_order(winners(groups))
    assert sorted(order) == [0, 1, 2, 3, 4, 5]
    assert order[-1] == 0
    assert order[0] == 3  # the one in the middle of the others


def test_each_source_votes_once_and_never_for_itself() -> None:
    # Source 0 has many winners stacked on its own best: they must not count for it.
    # Sources 1 and 2 agree with each other, so one of them comes first.
    groups = [
        [[0.2, 0.2]] * 6,
        [[0.8, 0.8], [0.79, 0.81]],
        [[0.81, 0.79], [0.8, 0.82]],
    ]
    order = support_order(winners(groups))
    assert order[0] in (1, 2)
    assert order[-1] == 0


def test_missing_coordinates_are_ignored() -> None:
    nan = float("nan")
    groups = [[[0.5, nan]], [[0.52, 0.3]], [[0.9, 0.31]]]
    order = support_order(winners(groups))
    assert sorted(order) == [0, 1, 2]
    assert order[-1] == 2  # far from both others along the one coordinate all share


def test_single_source() -> None:
    assert support_order(winners([[[0.3, 0.3], [0.4, 0.4]]])) == [0]


@pytest.mark.parametrize(("d", "expected"), [(1, 2), (2, 3), (5, 6)])
def test_seed_phase_is_d_plus_one(d: int, expected: int) -> None:
    assert seed_phase_length(d) == expected


SPACE = SearchSpace.model_validate(
    {
        "parameters": [
            {"name": "a", "type": "float", "low": 0.0, "high": 1.0},
            {"name": "b", "type": "float", "low": 0.0, "high": 1.0},
        ]
    }
)
BOX = Box(names=["a", "b"], lower=[0.2, 0.2], upper=[0.6, 0.6])
SEEDS = [{"a": 0.3, "b": 0.3}, {"a": 0.4, "b": 0.4}, {"a": 0.5, "b": 0.5}, {"a": 0.35, "b": 0.5}]


def region_designer(seed_phase: int | None) -> RegionDesigner:
    config = StudyConfig(space=SPACE, objective=Objective(metric="y"), algorithm="random")
    return RegionDesigner(
        config,
        0,
        region=BOX,
        seeds=SEEDS,
        make_inner=make_designer,
        make_encoder=SpaceEncoder,
        seed_phase=seed_phase,
    )


ACTIVE = TrialState.ACTIVE


def done(number: int, params: dict, source: str = "transfer_region") -> Trial:
    return Trial(
        id=f"t{number}",
        study_id="s",
        number=number,
        params=params,
        state=TrialState.COMPLETED,
        source=source,
        result={"y": float(number)},
    )


def test_seed_phase_caps_the_seeds_in_one_request() -> None:
    d = region_designer(seed_phase=2)
    d.update([], [])
    out = d.suggest(5)
    assert [s.source for s in out] == ["transfer_seed"] * 2 + ["transfer_region"] * 3
    assert [s.params for s in out[:2]] == SEEDS[:2]


def test_seed_phase_counts_history_inside_the_region() -> None:
    d = region_designer(seed_phase=3)
    seed_tried = done(0, SEEDS[0], "transfer_seed")
    own_inside = done(1, {"a": 0.5, "b": 0.25})
    outside = Trial(id="p", study_id="s", number=2, params={"a": 0.9, "b": 0.9}, state=ACTIVE)
    d.update([seed_tried, own_inside], [outside])
    out = d.suggest(3)
    assert [s.source for s in out] == ["transfer_seed", "transfer_region", "transfer_region"]
    assert out[0].params == SEEDS[1]
    running = Trial(id="q", study_id="s", number=3, params=SEEDS[1], state=ACTIVE)
    d.update([seed_tried, own_inside], [outside, running])
    assert all(s.source != "transfer_seed" for s in d.suggest(2))


def test_without_a_seed_phase_every_seed_comes_first() -> None:
    d = region_designer(seed_phase=None)
    d.update([done(i, {"a": 0.2 + 0.01 * i, "b": 0.4}) for i in range(10)], [])
    out = d.suggest(6)
    assert [s.params for s in out[:4]] == SEEDS
    assert out[4].source == "transfer_region"


def fitted_config(algorithm: str, spec: TransferSpec | None = None) -> StudyConfig:
    """A study whose stored transfer record holds BOX and SEEDS (no source prior)."""
    fitted = FittedTransfer(
        version=1,
        method="box",
        top_k=5,
        fitted_at=datetime(2026, 1, 1, tzinfo=UTC),
        sources=("s0",),
        region=BOX,
        seeds=tuple(SEEDS),
    )
    return StudyConfig(
        space=SPACE,
        objective=Objective(metric="y"),
        algorithm=algorithm,
        transfer=spec or TransferSpec(method="box"),
        fitted_transfer=fitted,
    )


def test_inner_gp_starts_modelling_after_the_seed_phase() -> None:
    d = designer_for(fitted_config("gp"), 0)
    assert isinstance(d, RegionDesigner)
    narrowed = replace(d.config, space=narrowed_space(SPACE, BOX, SpaceEncoder))
    inner = d.make_inner(narrowed, 0)
    assert isinstance(inner, GPDesigner)
    assert inner.options.n_initial == 3
    # no source prior stored: the model keeps its default lengthscales and zero mean
    assert inner.options.lengthscale_prior is None
    assert inner.options.prior_mean is None


def test_consensus_averages_the_agreeing_sources() -> None:
    rng = np.random.default_rng(3)
    centre = np.array([0.5, 0.5])
    groups = [
        [list(centre + rng.normal(0, 0.05, 2)), *rng.random((3, 2)).tolist()] for _ in range(6)
    ]
    groups.append([[0.95, 0.05], [0.9, 0.1]])  # an outlier task
    w = winners(groups)
    order = support_order(w)
    z = consensus_point(w, order[0])
    assert z is not None
    _, bests = source_bests(w)
    # nearer the centre the six agreeing tasks share than their bests are on average
    typical = np.linalg.norm(bests[:6] - centre, axis=1).mean()
    assert np.linalg.norm(z - centre) < 0.5 * typical


def test_consensus_stays_in_its_mode() -> None:
    groups = [[[0.2 + 0.02 * i, 0.2 - 0.01 * i]] for i in range(4)]
    groups += [[[0.8 - 0.02 * i, 0.8 + 0.01 * i]] for i in range(3)]
    w = winners(groups)
    z = consensus_point(w, 0)
    assert z is not None
    assert np.all(np.abs(z - 0.23) < 0.05)


def test_no_consensus_from_fewer_than_three_sources() -> None:
    assert consensus_point(winners([[[0.3, 0.3]], [[0.32, 0.31]]]), 0) is None
    # three sources, but the third is far from the agreeing two
    pair_and_outlier = winners([[[0.3, 0.3]], [[0.31, 0.3]], [[0.9, 0.9]]], min_width=0.001)
    assert consensus_point(pair_and_outlier, 0) is None


CROSS = [[[0.5, 0.5]], [[0.5005, 0.5]], [[0.4, 0.4]], [[0.6, 0.6]], [[0.4, 0.6]], [[0.6, 0.4]]]


def test_spread_order_skips_near_duplicates() -> None:
    w = winners([*CROSS, [[0.05, 0.95]]])  # the centre twice, four corners, an outlier
    plain = support_order(w)
    spread = support_order(w, spread=True)
    assert spread[0] == plain[0]
    assert plain[0] in (0, 1)
    assert plain[1] in (0, 1)  # by support alone the twin comes next
    assert sorted(spread[1:5]) == [2, 3, 4, 5]  # spread: the corners before the twin
    assert spread.index(6) > max(spread.index(c) for c in (2, 3, 4, 5))
    assert sorted(spread) == list(range(7))


def test_anchor_counts_as_already_proposed() -> None:
    first = support_order(winners(CROSS), spread=True, anchor=np.array([0.5, 0.5]))[0]
    assert first in (2, 3, 4, 5)


@pytest.mark.parametrize(("algorithm", "phase"), [("gp", 3), ("random", None), ("sobol", None)])
def test_only_model_based_designers_cut_the_seeds_short(algorithm: str, phase: int | None) -> None:
    d = designer_for(fitted_config(algorithm), 0)
    assert isinstance(d, RegionDesigner)
    assert d.seed_phase == phase


@pytest.mark.parametrize(("spec_phase", "phase"), [(None, 3), (2, 2), (6, 6)])
def test_spec_may_set_the_seed_phase(spec_phase: int | None, phase: int) -> None:
    d = designer_for(fitted_config("gp", TransferSpec(method="box", seed_phase=spec_phase)), 0)
    assert isinstance(d, RegionDesigner)
    assert d.seed_phase == phase


@pytest.mark.parametrize(
    ("trust", "expected"),
    [(True, DEFAULT_TRUST), (False, None), (TrustSpec(start=0.25), TrustOptions(start=0.25))],
)
def test_spec_sets_the_trust_region(trust: bool | TrustSpec, expected: TrustOptions | None) -> None:
    d = designer_for(fitted_config("gp", TransferSpec(method="box", trust=trust)), 0)
    assert isinstance(d, RegionDesigner)
    assert d.trust == expected
