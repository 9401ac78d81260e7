"""Coordinate check: µP activation updates are flat in width, SP ones grow."""

from __future__ import annotations

import pytest
import torch

from hpo_service.domain.shape import ModelShape
from hpo_service.proxies.coord_check import coord_check
from hpo_service.proxies.data import CharCorpus, TeacherStudent
from hpo_service.proxies.runner import build_proxy
from hpo_service.proxies.torch_setup import ScaledSetup
from hpo_service.scaling.config import ScaleConfig

WIDTHS = [32, 64, 128, 256, 512]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _builder(name: str, param: str):
    def build(width: int, seed: int):
        torch.manual_seed(seed)
        config = ScaleConfig(
            parameterization=param,
            proxy=ModelShape(width=width, depth=2),
            base=ModelShape(width=32, depth=2),
        )
        # Zero readout init (mup's recommendation) removes the 1/√n-decaying init term.
        setup = ScaledSetup(config, config.proxy, {"lr": 1e-2, "init_std.readout": 0.0})
        model = build_proxy(name, setup, seq_len=32)
        return model, setup.optimizer(model)

    return build


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_mup_flat_sp_grows(name: str) -> None:
    if name == "mlp":
        batch = TeacherStudent().validation(256)
        seeds: tuple[int, ...] = (0, 1, 2)
    else:
        batch = CharCorpus(seq_len=32).validation(8)
        seeds = (0, 1)
    mup = coord_check(_builder(name, "mup"), batch, WIDTHS, steps=3, seeds=seeds)
    sp = coord_check(_builder(name, "sp"), batch, WIDTHS, steps=3, seeds=seeds)
    assert all(abs(s) < 0.15 for s in mup.values()), mup
    hidden = [k for k in sp if k not in ("inp", "readout")]
    assert all(sp[k] > 0.3 for k in hidden), sp
    assert sp["readout"] > 0.15
