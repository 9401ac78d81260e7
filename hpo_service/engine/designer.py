"""The designer interface: history in, suggestions out (OSS Vizier's two-method designer).

A designer is built fresh for each suggestion request from the study's configuration and
a seed, fed the history with ``update``, and asked for ``count`` points with ``suggest``.
API processes are stateless, so designers must not rely on surviving between requests;
everything they know comes from ``update``. New powers (transfer regions, fallbacks,
trust regions) wrap a designer instead of widening this interface.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hpo_service.domain import Params, StudyConfig, Trial, TrialSource

__all__ = ["Designer", "DesignerFactory", "Suggestion"]


@dataclass(frozen=True)
class Suggestion:
    """A proposed parameter assignment and where it came from.

    Attributes:
        params: a full, valid assignment for the study's space.
        source: a ``TrialSource`` value (or another tag) stored on the trial.
        metadata: free-form facts about the proposal, e.g. a fallback's reason.
    """

    params: Params
    source: str = TrialSource.ENGINE
    metadata: dict[str, Any] = field(default_factory=dict)


class Designer(Protocol):
    """Proposes points given what has been tried."""

    def update(self, completed: Sequence[Trial], pending: Sequence[Trial]) -> None:
        """Take the history into account.

        Args:
            completed: finished trials (completed, failed, infeasible), in number order.
            pending: trials queued or under evaluation, whose points must not be proposed
                again and should be treated as soon-to-be-known.
        """
        ...

    def suggest(self, count: int) -> list[Suggestion]:
        """Return exactly ``count`` suggestions (fewer only if the space is exhausted)."""
        ...


DesignerFactory = Callable[[StudyConfig, int | None], Designer]
"""Builds a designer for a study; the second argument is the seed for this request."""
