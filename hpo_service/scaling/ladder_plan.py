"""Which proxy shapes to tune at, so that the ladder can correct the rules for a target.

The rules carry values from one proxy to the target; a ladder measures what they miss.
Two findings shape the plan (benchmarks/README.md, "Does it pay off?"):

- Depth: under CompleteP the global LR optimum of the built-in transformer still moves
  by about half an octave from depth 2 to depth 8, while across width at depth 2 it moves
  by less than a tenth of an octave. The plan doubles the depth from the proxy's up to
  the target's, so the drift is interpolated, never extrapolated.
- Rung width: how far the optimum moves with depth depends on the width it is measured
  at. With the other values fixed at a global study's best, the depth-8 optimum sat 1.3
  octaves below the tuned LR at width 32 but 0.86 below at width 256 (the tiny size of
  ``bench_e2e_transfer.py``); at widths 64, 128, 256 and 512 (the default size) it sat
  0.83, 0.48, about 0.5 and 0.44 below.
  The narrowest models exaggerate the drift, so the depth rungs run at twice the proxy's
  width (at most a quarter of the target's): a depth-8 model 4× narrower than the target
  still costs a few per cent of a target run.
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
        depth: rungs at twice the proxy's width (at most a quarter of the target's,
            never below the proxy's), depth doubling from the proxy's up to the
            target's; the global LR is swept there.
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
    rung_width = max(proxy.width, min(2 * proxy.width, target.width // 4))
    return LadderPlan(
        depth=tuple(proxy.model_copy(update={"depth": x, "width": rung_width}) for x in depths),
        width=tuple(proxy.model_copy(update={"width": x}) for x in widths),
    )
