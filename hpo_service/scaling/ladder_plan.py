"""Which proxy shapes to tune at, so that the ladder can correct the rules for a target.

The rules carry values from one proxy to the target; a ladder measures what they miss.
Two findings shape the plan (benchmarks/README.md, "Does it pay off?"):

- Depth: under CompleteP the global LR optimum of the built-in transformer still moves
  by about half an octave from depth 2 to depth 8, while across width at depth 2 it moves
  by less than a tenth of an octave. Depth rungs at the proxy's width are cheap (a model
  8× narrower than the target costs a few per cent of a target run even at its full
  depth), so the plan doubles the depth from the proxy's up to the target's: the drift is
  then interpolated, never extrapolated.
- Measurement: a depth rung is a one-dimensional sweep of the global LR on a fixed grid
  around the proxy's best (others pinned), each point trained on two seeds, and the
  proxy's own depth is swept the same way. A rung searched by a GP on one seed puts a
  dozen trials where the model believes the optimum is; over the flat bottom of an LR
  curve (0.003 nats across an octave at width 64, depth 8) seed noise then moves the
  estimate by most of an octave, and the drift fitted through three such rungs came out
  1.8 octaves where a two-seed sweep says 0.4. Measuring the proxy's depth the same way
  as the others lets their biases cancel in the slope.
- Width: per-module values (the embedding LR above all) settle only from a width of a
  few hundred. Two width rungs (2× and 4× the proxy, at the proxy's depth) are enough to
  tell a value that settles from one that drifts, which is all the verdicts need.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpo_service.domain.shape import ModelShape

__all__ = ["LR_OFFSETS", "LadderPlan", "ladder_plan"]

LR_OFFSETS = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0)


@dataclass(frozen=True)
class LadderPlan:
    """Proxy shapes for the rungs of a ladder.

    Attributes:
        depth: rungs at the proxy's width, depth doubling up to the target's (the proxy's
            own depth first); the global values are tuned again there, few trials each.
        width: rungs at the proxy's depth, 2× and 4× its width (below the target's);
            the per-module values are searched there to get their transfer verdicts.
        lr_offsets: the depth rungs' LR grid, in octaves from the proxy's best LR. It
            reaches further down than up: above the optimum the loss rises steeply
            towards divergence, so points there say little and risk failed runs.
        replicates: seeds per grid point (the rung's value is their mean).
    """

    depth: tuple[ModelShape, ...]
    width: tuple[ModelShape, ...]
    lr_offsets: tuple[float, ...] = LR_OFFSETS
    replicates: int = 2


def ladder_plan(proxy: ModelShape, target: ModelShape, *, width_rungs: int = 2) -> LadderPlan:
    """The rungs to tune at for ``target``, starting from ``proxy``.

    Args:
        proxy: the proxy shape (width and depth required).
        target: the target shape (width and depth required).
        width_rungs: how many width doublings above the proxy, kept below the target.

    Returns:
        The depth and width rungs; empty where the target is not larger on that axis.

    Raises:
        ValueError: a shape lacks width or depth.
    """
    if not (proxy.width and proxy.depth and target.width and target.depth):
        raise ValueError("ladder_plan needs width and depth on both shapes")
    depths: list[int] = []
    d = proxy.depth
    while d < target.depth:
        depths.append(d)
        d *= 2
    if depths:
        depths.append(target.depth)
    widths = [
        proxy.width * 2**k for k in range(1, width_rungs + 1) if proxy.width * 2**k < target.width
    ]
    return LadderPlan(
        depth=tuple(proxy.model_copy(update={"depth": x}) for x in depths),
        width=tuple(proxy.model_copy(update={"width": x}) for x in widths),
    )
