from __future__ import annotations

import pytest

from hpo_service.domain import Measurement, Objective, StoppingSpec, Trial, TrialState
from hpo_service.engine.stopping import (
    StoppingPolicy,
    parse_stopping,
    should_stop,
    stopping_policy,
    validate_stopping,
)
from hpo_service.errors import InvalidInputError

LOSS = Objective(metric="loss", goal="minimize")
ACC = Objective(metric="acc", goal="maximize")


def _trial(
    tid: str,
    values: list[float],
    metric: str = "loss",
    *,
    start: int = 1,
    state: TrialState = TrialState.ACTIVE,
) -> Trial:
    ms = [Measurement(step=start + i, metrics={metric: v}) for i, v in enumerate(values)]
    return Trial(id=tid, study_id="s", number=0, params={}, state=state, measurements=ms)


def test_validate_defaults_and_none() -> None:
    assert validate_stopping(None) is None
    assert validate_stopping({"rule": "none"}) is None
    assert validate_stopping({"rule": "median"}) == StoppingPolicy(rule="median")
    sh = validate_stopping({"rule": "successive_halving", "reduction_factor": 4})
    assert sh == StoppingPolicy(
        rule="successive_halving", min_steps=1, min_trials=4, reduction_factor=4
    )


def test_parse_keeps_the_spec_as_sent_and_the_policy_fills_the_rule_defaults() -> None:
    sent = {"rule": "successive_halving", "reduction_factor": 4}
    spec = parse_stopping(sent)
    assert spec == StoppingSpec(rule="successive_halving", reduction_factor=4)
    assert spec is not None
    assert spec.to_json() == sent
    assert stopping_policy(spec) == StoppingPolicy(
        rule="successive_halving", min_steps=1, min_trials=4, reduction_factor=4
    )
    none = parse_stopping({"rule": "none"})
    assert none is not None
    assert none.to_json() == {"rule": "none"}
    assert stopping_policy(none) is None
    pct = stopping_policy(parse_stopping({"rule": "percentile", "percentile": 25}))
    assert pct == StoppingPolicy(rule="percentile", percentile=25.0)


@pytest.mark.parametrize(
    ("config", "loc", "fragment"),
    [
        ({"rule": "mean"}, ("body", "stopping", "rule"), "rule must be one of"),
        ({"rule": "median", "min_steps": -1}, ("body", "stopping", "min_steps"), ">= 0"),
        ({"rule": "median", "min_trials": 0}, ("body", "stopping", "min_trials"), ">= 1"),
        ({"rule": "median", "min_trials": True}, ("body", "stopping", "min_trials"), "integer"),
        ({"rule": "median", "percentile": 10}, ("body", "stopping", "percentile"), "unknown field"),
        ({"rule": "percentile"}, ("body", "stopping", "percentile"), "(0, 100)"),
        ({"rule": "percentile", "percentile": 100}, ("body", "stopping", "percentile"), "(0, 100)"),
        ({"rule": "successive_halving", "min_steps": 0}, ("body", "stopping", "min_steps"), ">= 1"),
        (
            {"rule": "successive_halving", "reduction_factor": 1},
            ("body", "stopping", "reduction_factor"),
            ">= 2",
        ),
        ({"rule": "median", "metric": ""}, ("body", "stopping", "metric"), "non-empty"),
    ],
)
def test_validate_rejects_with_precise_location(
    config: dict[str, object], loc: tuple[str, ...], fragment: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_stopping(config)
    assert any(e.loc == loc and fragment in e.msg for e in info.value.errors), info.value.errors


def test_validate_lists_every_problem_and_honours_loc() -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_stopping({"rule": "median", "min_steps": "x", "bogus": 1}, loc=("stopping",))
    assert {e.loc for e in info.value.errors} == {("stopping", "min_steps"), ("stopping", "bogus")}


def test_non_object_rejected() -> None:
    with pytest.raises(InvalidInputError):
        validate_stopping(["median"])  # type: ignore[arg-type]


def test_median_stops_a_trial_worse_than_the_median() -> None:
    policy = validate_stopping({"rule": "median", "min_steps": 2, "min_trials": 3})
    others = [_trial(f"o{i}", [1.0 - 0.1 * i, 0.9 - 0.1 * i, 0.8 - 0.1 * i]) for i in range(4)]
    bad = _trial("bad", [2.0, 1.9, 1.8])
    good = _trial("good", [0.5, 0.4, 0.3])
    assert should_stop(policy, bad, others, LOSS).stop
    assert not should_stop(policy, good, others, LOSS).stop


def test_median_waits_for_warmup_and_enough_trials() -> None:
    policy = validate_stopping({"rule": "median", "min_steps": 5, "min_trials": 3})
    others = [_trial(f"o{i}", [0.1] * 10) for i in range(3)]
    early = _trial("early", [9.0, 9.0])
    assert not should_stop(policy, early, others, LOSS).stop
    late = _trial("late", [9.0] * 6)
    assert should_stop(policy, late, others, LOSS).stop
    assert not should_stop(policy, late, others[:2], LOSS).stop
    # Trials that never reached the step do not count.
    short = [_trial(f"s{i}", [0.1, 0.1]) for i in range(5)]
    assert not should_stop(policy, late, short, LOSS).stop


def test_failed_peers_and_self_do_not_count() -> None:
    policy = validate_stopping({"rule": "median", "min_trials": 2})
    failed = [_trial(f"f{i}", [0.0], state=TrialState.FAILED) for i in range(3)]
    me = _trial("me", [5.0])
    assert not should_stop(policy, me, [*failed, me], LOSS).stop


def test_maximize_goal_is_respected() -> None:
    policy = validate_stopping({"rule": "median", "min_trials": 2})
    others = [_trial(f"o{i}", [0.8, 0.85], metric="acc") for i in range(3)]
    assert should_stop(policy, _trial("low", [0.2, 0.3], metric="acc"), others, ACC).stop
    assert not should_stop(policy, _trial("hi", [0.9, 0.95], metric="acc"), others, ACC).stop


def test_best_so_far_is_used_not_the_last_value() -> None:
    policy = validate_stopping({"rule": "median", "min_trials": 2})
    others = [_trial(f"o{i}", [1.0, 1.0, 1.0]) for i in range(3)]
    spiky = _trial("spiky", [0.5, 3.0, 3.0])
    assert not should_stop(policy, spiky, others, LOSS).stop


def test_percentile_is_stricter_than_median() -> None:
    others = [_trial(f"o{i}", [float(i)] * 3) for i in range(10)]
    me = _trial("me", [3.5] * 3)
    median = validate_stopping({"rule": "median", "min_trials": 5})
    top20 = validate_stopping({"rule": "percentile", "percentile": 20, "min_trials": 5})
    assert not should_stop(median, me, others, LOSS).stop
    decision = should_stop(top20, me, others, LOSS)
    assert decision.stop
    assert "20th percentile" in decision.reason


def test_custom_metric_and_missing_measurements() -> None:
    policy = validate_stopping({"rule": "median", "metric": "val", "min_trials": 1})
    others = [_trial("o", [1.0], metric="val")]
    assert not should_stop(policy, _trial("me", [5.0], metric="loss"), others, LOSS).stop
    assert should_stop(policy, _trial("me", [5.0], metric="val"), others, LOSS).stop
    assert not should_stop(None, _trial("me", [5.0]), others, LOSS).stop


def test_successive_halving_decides_only_when_crossing_a_rung() -> None:
    policy = validate_stopping(
        {"rule": "successive_halving", "min_steps": 1, "reduction_factor": 3, "min_trials": 3}
    )
    # Rungs at steps 1, 3, 9. Six peers reached step 3 with values 0..5.
    peers = [_trial(f"p{i}", [float(i)] * 3) for i in range(6)]
    at_rung = _trial("me", [9.0, 9.0, 9.0])  # crosses rung 3 now, ranks last of 7
    decision = should_stop(policy, at_rung, peers, LOSS)
    assert decision.stop
    assert "rung 3" in decision.reason
    between = _trial("me", [9.0] * 4)  # last step 4 crosses no rung
    assert not should_stop(policy, between, peers, LOSS).stop
    best = _trial("me", [-1.0] * 3)
    assert not should_stop(policy, best, peers, LOSS).stop


def test_successive_halving_keeps_top_fraction_and_needs_cohort() -> None:
    policy = validate_stopping({"rule": "successive_halving", "min_steps": 2, "min_trials": 4})
    peers = [_trial(f"p{i}", [float(i)] * 2) for i in range(5)]
    # Cohort of 6 at rung 2, keep 6 // 3 = 2: rank 2 (value 1.5 beats 0 and 1? no) stops.
    assert should_stop(policy, _trial("me", [1.5, 1.5]), peers, LOSS).stop
    assert not should_stop(policy, _trial("me", [0.5, 0.5]), peers, LOSS).stop
    assert not should_stop(policy, _trial("me", [9.0, 9.0]), peers[:2], LOSS).stop
