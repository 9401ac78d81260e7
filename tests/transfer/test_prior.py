"""Source-informed GP prior: lengthscales and mean learned from the sources (prior.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from hpo_service.db.base import utcnow
from hpo_service.db.database import Database
from hpo_service.db.models import StudyRow
from hpo_service.domain import (
    FittedTransfer,
    Objective,
    Principal,
    Role,
    SearchSpace,
    SourcePrior,
    StudyConfig,
    Trial,
    TrialState,
)
from hpo_service.domain.region import Box
from hpo_service.engine.device import to_tensor
from hpo_service.engine.encoding import SpaceEncoder
from hpo_service.engine.gp import GPDesigner
from hpo_service.engine.gp_model import (
    AveragedPosteriorMean,
    LengthscalePrior,
    _mean_weights,
    fit_gp,
)
from hpo_service.services import studies, suggestions, transfer
from hpo_service.services import trials as trial_service
from hpo_service.services.transfer import _fit_hypers as fit
from hpo_service.transfer.designer import RegionDesigner, narrowed_space
from hpo_service.transfer.prior import PriorOptions, inner_frame, inner_prior, source_prior
from hpo_service.transfer.select import SourceStudy
from hpo_service.transfer.source_mean import source_gps

SPACE = SearchSpace.model_validate(
    {
        "parameters": [
            {"name": "x", "type": "float", "low": 0.0, "high": 1.0},
            {"name": "y", "type": "float", "low": 0.0, "high": 1.0},
        ]
    }
)
# The region: the left half in x, all of y.
BOX = Box(
    names=["x", "y"],
    lower=[0.0, 0.0],
    upper=[0.5, 1.0],
    categorical_subsets={},
    categorical_choices={},
)
PRINCIPAL = Principal(key_id="t", role=Role.ADMIN, tenant="t")


def wiggly(p: dict, shift: float) -> float:
    """Fast in x (period 0.2), slow in y: a short lengthscale in x, a long one in y."""
    return math.sin(2 * math.pi * (p["x"] - shift) / 0.2) + 0.3 * (p["y"] - 0.5) ** 2


def sources(n_sources: int = 5, n: int = 40) -> list[SourceStudy]:
    out = []
    for s in range(n_sources):
        rng = np.random.default_rng(s)
        trials = []
        for i, (a, b) in enumerate(rng.random((n, 2))):
            p = {"x": float(a), "y": float(b)}
            trials.append(
                Trial(
                    id=f"{s}-{i}",
                    study_id=f"s{s}",
                    number=i,
                    params=p,
                    state=TrialState.COMPLETED,
                    result={"loss": wiggly(p, 0.01 * s)},
                )
            )
        out.append(SourceStudy(f"s{s}", SPACE, Objective(metric="loss"), trials))
    return out


def test_the_prior_is_centred_on_the_sources_lengthscales() -> None:
    record = source_prior(SPACE, sources(), BOX, SpaceEncoder, fit)
    assert record is not None
    ls = np.exp(-0.5 * np.array(record.log_rho))  # cube units
    assert ls[0] < 0.15  # a period of 0.2: short in x
    assert ls[1] > 5 * ls[0]  # slow in y
    assert len(record.sources) == 5
    assert all(0 < s <= 2.0 for s in record.sigma)


def test_large_sources_are_capped() -> None:
    opts = PriorOptions(max_rows=12, max_sources=3)
    record = source_prior(SPACE, sources(n_sources=4, n=60), BOX, SpaceEncoder, fit, opts)
    assert record is not None
    assert list(record.rows) == [12, 12, 12]
    assert [len(s.y) for s in record.sources] == [12, 12, 12]


def test_too_few_sources_give_no_prior() -> None:
    assert source_prior(SPACE, sources(n_sources=1), BOX, SpaceEncoder, fit) is None


def test_the_inner_prior_follows_the_narrowed_width() -> None:
    record = SourcePrior(
        names=["x", "y"],
        log_rho=[2.0, -1.0],
        sigma=[0.8, 0.8],
        per_source=[],
        rows=[],
        lower=[0.0, 0.0],
        width=[0.5, 1.0],
        sources=(),
    )
    inner = narrowed_space(SPACE, BOX, SpaceEncoder)  # x in [0, 0.5]
    got = inner_prior(record, inner_frame(record.names, SPACE, inner, SpaceEncoder))
    assert got is not None
    centre, sigma = got
    # a lengthscale of l cube units is 2 l units of a half-width space: rho / 4
    assert centre[0] == pytest.approx(2.0 + 2 * math.log(0.5))
    assert centre[1] == pytest.approx(-1.0)
    assert sigma == [0.8, 0.8]


def test_the_frame_is_exact_on_log_int_and_ordinal_parameters() -> None:
    space = SearchSpace.model_validate(
        {
            "parameters": [
                {"name": "lr", "type": "float", "low": 1e-4, "high": 1.0, "scale": "log"},
                {"name": "n", "type": "int", "low": 1, "high": 16},
                {"name": "b", "type": "ordinal", "values": [8, 16, 32, 64, 128], "scale": "log"},
            ]
        }
    )
    box = Box(
        names=["lr", "n", "b"],
        lower=[0.25, 0.2, 0.2],
        upper=[0.75, 0.6, 0.8],
        categorical_subsets={},
        categorical_choices={},
    )
    inner = narrowed_space(space, box, SpaceEncoder)
    frame = inner_frame(box.names, space, inner, SpaceEncoder)
    full, small = SpaceEncoder(space), SpaceEncoder(inner)
    for params in ({"lr": 1e-3, "n": 5, "b": 16}, {"lr": 0.05, "n": 8, "b": 64}):
        z, u = full.encode(params), small.encode(params)
        for name, col in frame.column.items():
            assert z[col] == pytest.approx(frame.origin[name] + frame.scale[name] * u[col])


def test_the_source_mean_is_high_where_the_sources_are_good() -> None:
    record = source_prior(SPACE, sources(), BOX, SpaceEncoder, fit)
    assert record is not None
    inner = narrowed_space(SPACE, BOX, SpaceEncoder)
    gps = source_gps(record, inner_frame(record.names, SPACE, inner, SpaceEncoder))
    assert gps is not None
    mean = AveragedPosteriorMean(*gps)
    enc = SpaceEncoder(inner)
    # wiggly is lowest at x = 0.15 (+ shift) and highest at x = 0.05 (+ shift)
    good = to_tensor(enc.encode({"x": 0.17, "y": 0.5}))
    bad = to_tensor(enc.encode({"x": 0.07, "y": 0.5}))
    values = mean(torch.stack([good, bad]))
    assert values.shape == (2,)
    assert float(values[0]) > float(values[1]) + 1.0  # maximisation convention
    batched = mean(torch.stack([good, bad]).reshape(2, 1, 2))
    assert batched.shape == (2, 1)


def test_a_lengthscale_prior_moves_the_fit_and_nan_centres_are_inert() -> None:
    x = to_tensor([[0.1, 0.2], [0.5, 0.9], [0.8, 0.4]])
    y = to_tensor([[1.0], [0.0], [2.0]])
    _, plain = fit_gp(x, y, cache=None)
    _, inert = fit_gp(x, y, cache=None, learned=LengthscalePrior((math.nan, math.nan), (1.0, 1.0)))
    assert inert == plain
    centre = -2 * math.log(0.05)
    _, short = fit_gp(x, y, cache=None, learned=LengthscalePrior((centre, math.nan), (0.1, 1.0)))
    assert short[0].lengthscales[0] == pytest.approx(0.05, rel=0.2)
    assert plain[0].lengthscales[0] > 0.2


def test_the_mean_weight_is_never_negative_and_fades_with_many_rows() -> None:
    mv = torch.linspace(0, 1, 10, dtype=torch.float64)
    a, b = _mean_weights(mv, 2.0 * mv + 1.0)
    assert (a, b) == (pytest.approx(1.0), pytest.approx(2.0))
    assert _mean_weights(mv, -mv)[1] == 0.0
    long = torch.linspace(0, 1, 40, dtype=torch.float64)
    assert _mean_weights(long, 2.0 * long)[1] == pytest.approx(1.0)  # 20 / 40 of 2


def test_a_study_without_transfer_keeps_the_default_gp() -> None:
    config = StudyConfig(space=SPACE, objective=Objective(metric="loss"), algorithm="gp")
    designer = transfer.designer_for(config, 0)
    assert isinstance(designer, GPDesigner)
    assert designer.options.lengthscale_prior is None
    assert designer.options.prior_mean is None


def _study(db: Database, name: str, seed: int, transfer: dict | None = None) -> str:
    """A study of SPACE: a random-search source, or a GP target with ``transfer``."""
    new = studies.NewStudy(
        name=name,
        objective=Objective(metric="loss"),
        space=SPACE,
        family=None,
        algorithm="random" if transfer is None else "gp",
        seed=seed,
        transfer=transfer,
    )
    return studies.create_study(db, PRINCIPAL, new, default_max_attempts=3).id


def _target(db: Database, source_ids: list[str], seed: int, **spec: object) -> str:
    return _study(db, "target", seed, {"method": "box", "top_k": 3, "sources": source_ids, **spec})


def _drive(db: Database, study_id: str, n: int) -> list[dict]:
    """``n`` suggestions one at a time, each completed with the target's loss."""
    ask = {"worker_id": "w", "count": 1, "lease_seconds": 600, "deadline_s": 600.0}
    out = []
    for _ in range(n):
        (t,) = suggestions.request_suggestions(db, PRINCIPAL, study_id, now=utcnow(), **ask).trials
        loss = {"loss": wiggly(t.params, 0.02)}
        trial_service.complete_trial(
            db, PRINCIPAL, t.id, worker_id="w", metrics=loss, cost=None, now=utcnow()
        )
        out.append(t.params)
    return out


def test_through_the_service_the_prior_is_stored_and_reproducible(db: Database) -> None:
    ids = []
    for s, src in enumerate(sources(n_sources=3, n=20)):
        source_id = _study(db, f"src{s}", s)
        trial_service.add_trials(
            db,
            PRINCIPAL,
            source_id,
            [trial_service.NewTrial(params=t.params, metrics=t.result) for t in src.trials],
            now=utcnow(),
        )
        ids.append(source_id)
    first, second = _target(db, ids, 7), _target(db, ids, 7)
    stored = [_fitted(studies.get_study(db, PRINCIPAL, i).config).prior for i in (first, second)]
    assert stored[0] is not None
    assert stored[0] == stored[1]
    # The queryable effective_space column keeps the summary, not the sources' rows.
    with db.read() as session:
        column = session.get(StudyRow, first).effective_space
    assert column is not None
    assert "prior" not in column
    assert column["effective_space"] == transfer.effective_space(
        studies.get_study(db, PRINCIPAL, first).config
    )
    assert _drive(db, first, 7) == _drive(db, second, 7)
    off = studies.get_study(db, PRINCIPAL, _target(db, ids, 7, prior=False))
    assert _fitted(off.config).prior is None
    with db.read() as session:
        assert "prior" not in session.get(StudyRow, off.id).transfer["fitted"]


def _fitted(config: StudyConfig) -> FittedTransfer:
    assert config.fitted_transfer is not None
    return config.fitted_transfer


def _inner(config: StudyConfig) -> GPDesigner:
    """The GP that the study's region designer builds inside its region."""
    outer = transfer.designer_for(config, 0)
    assert isinstance(outer, RegionDesigner)
    region = _fitted(config).region
    assert region is not None
    narrowed = replace(config, space=narrowed_space(config.space, region, SpaceEncoder))
    inner = outer.make_inner(narrowed, 0)
    assert isinstance(inner, GPDesigner)
    return inner


def test_the_inner_gp_is_built_with_the_sources_prior(db: Database) -> None:
    ids = []
    for s, src in enumerate(sources(n_sources=3, n=20)):
        source_id = _study(db, f"src{s}", s)
        new = [trial_service.NewTrial(params=t.params, metrics=t.result) for t in src.trials]
        trial_service.add_trials(db, PRINCIPAL, source_id, new, now=utcnow())
        ids.append(source_id)
    both = _inner(studies.get_study(db, PRINCIPAL, _target(db, ids, 7)).config)
    assert both.options.n_initial == 3  # seed_phase_length(2): the seeds are the rest
    assert both.options.lengthscale_prior is not None
    assert isinstance(both.options.prior_mean, AveragedPosteriorMean)
    plain = _inner(studies.get_study(db, PRINCIPAL, _target(db, ids, 7, prior_mean=False)).config)
    assert plain.options.lengthscale_prior == both.options.lengthscale_prior
    assert plain.options.prior_mean is None
    none = _inner(studies.get_study(db, PRINCIPAL, _target(db, ids, 7, prior=False)).config)
    assert none.options.n_initial == 3
    assert none.options.lengthscale_prior is None
    assert none.options.prior_mean is None
