"""The designer interface: history in, suggestions out (OSS Vizier's two-method designer).

A designer is built fresh for each suggestion request from the study's configuration and
a seed, fed the history with ``update``, and asked for ``count`` points with ``suggest``.
API processes are stateless, so designers must not rely on surviving between requests;
everything they know comes from ``update``. New powers (transfer regions, fallbacks,
trust regions) wrap a designer instead of widening this interface.

Why it lives in the domain: the engine implements designers and ``transfer`` wraps them
(``transfer.designer.RegionDesigner``), and the two are independent siblings in the
layer contract (``pyproject.toml``): neither may import the other. The interface is pure
typing with no dependency, so it sits below both, in the vocabulary they share, and the
wrapper is typed against the very protocol the engine's designers satisfy instead of a
copy of it. ``engine.designer`` re-exports it for code that builds designers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hpo_service.domain.space import Params
from hpo_service.domain.study import StudyConfig
from hpo_service.domain.trial import Trial, TrialSource

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
