"""The trial and study state machines: every pair of states, legal or not.

The expected tables are written out here on purpose, independently of the domain's
``_TRANSITIONS``: a change to the table must change this file too, deliberately.
"""

from __future__ import annotations

import itertools

import pytest

from hpo_service.domain import (
    FINISHED_STATES,
    LEASED_STATES,
    PENDING_STATES,
    StudyState,
    TrialState,
    budget_spent,
    can_transition,
    has_room,
    sources_for,
    study_transition,
    trial_transition,
)
from hpo_service.errors import InvalidTransitionError

R, A, S = TrialState.REQUESTED, TrialState.ACTIVE, TrialState.STOPPING
C, F, INF = TrialState.COMPLETED, TrialState.FAILED, TrialState.INFEASIBLE

# None: a trial being created.
TRIAL_MOVES: dict[TrialState | None, set[TrialState]] = {
    None: {R, A, C},  # queued by a user, suggested and leased at once, imported
    R: {A},  # leased
    A: {R, S, C, F, INF},  # requeued, asked to stop, finished
    S: {R, C, F, INF},  # requeued, finished with its partial result
    C: set(),
    F: set(),
    INF: set(),
}
TRIAL_PAIRS = list(itertools.product([None, *TrialState], TrialState))


def test_the_expected_table_covers_every_state() -> None:
    assert set(TRIAL_MOVES) == {None, *TrialState}


@pytest.mark.parametrize(("current", "target"), TRIAL_PAIRS)
def test_every_trial_move(current: TrialState | None, target: TrialState) -> None:
    legal = target in TRIAL_MOVES[current]
    assert can_transition(current, target) is legal
    if legal:
        assert trial_transition(current, target) is target
        return
    with pytest.raises(InvalidTransitionError) as err:
        trial_transition(current, target)
    assert err.value.status == 409
    assert err.value.slug == "invalid-state-transition"
    assert target.value in err.value.detail


@pytest.mark.parametrize("target", list(TrialState))
def test_sources_for_is_the_table_read_backwards(target: TrialState) -> None:
    expected = {s for s, moves in TRIAL_MOVES.items() if s is not None and target in moves}
    assert sources_for(target) == expected


def test_bulk_statements_get_the_states_they_need() -> None:
    # Reclaiming an expired lease may requeue or fail it: exactly the leased trials.
    assert sources_for(R) & sources_for(F) == LEASED_STATES
    # Leasing takes queued trials only; stopping applies to running ones only.
    assert sources_for(A) == {R}
    assert sources_for(S) == {A}


def test_state_groups() -> None:
    assert {s for s in TrialState if not TRIAL_MOVES[s]} == FINISHED_STATES
    assert set(TrialState) - FINISHED_STATES == PENDING_STATES
    assert {A, S} == LEASED_STATES


# Study moves; completed → active needs a new budget as well.
STUDY_MOVES: dict[StudyState, set[StudyState]] = {
    StudyState.ACTIVE: {StudyState.PAUSED, StudyState.COMPLETED},
    StudyState.PAUSED: {StudyState.ACTIVE, StudyState.COMPLETED},
    StudyState.COMPLETED: {StudyState.ACTIVE},
}


@pytest.mark.parametrize("new_budget", [False, True])
@pytest.mark.parametrize(("current", "target"), list(itertools.product(StudyState, StudyState)))
def test_every_study_move(current: StudyState, target: StudyState, new_budget: bool) -> None:
    reopening = current is StudyState.COMPLETED and target is not current
    legal = current is target or (target in STUDY_MOVES[current] and (new_budget or not reopening))
    if legal:
        assert study_transition(current, target, new_budget=new_budget) is target
        return
    with pytest.raises(InvalidTransitionError) as err:
        study_transition(current, target, new_budget=new_budget)
    assert err.value.status == 409
    assert err.value.slug == "invalid-state-transition"


def test_a_refused_reopening_says_what_to_send() -> None:
    with pytest.raises(InvalidTransitionError, match="max_trials"):
        study_transition(StudyState.COMPLETED, StudyState.ACTIVE)


@pytest.mark.parametrize(
    ("max_trials", "created", "any_pending", "spent"),
    [
        (None, 1000, False, False),  # unlimited: never spent
        (3, 2, False, False),  # room for one more
        (3, 3, True, False),  # budget used, a trial still unfinished
        (3, 3, False, True),
        (3, 5, False, True),  # budget lowered below what was created
        (0, 0, False, True),
    ],
)
def test_budget_spent(max_trials: int | None, created: int, any_pending: bool, spent: bool) -> None:
    assert budget_spent(max_trials, created, any_pending=any_pending) is spent
    assert has_room(max_trials, created) is (max_trials is None or created < max_trials)
