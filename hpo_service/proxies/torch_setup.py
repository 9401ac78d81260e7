"""The torch side of the rules: init, forward multipliers and optimiser groups per role.

A model tags each parameter tensor with its module role (``tag(p, "hidden.attn_qkv",
block=3)``), or lets ``infer_role`` guess from the name and shape. ``ScaledSetup`` takes the
per-module values as tuned at the base shape, the base shape and the model's shape, applies
the same rule tables that ``extrapolate`` uses, and hands out:

- ``init_(model)``: every tensor drawn at its role's scaled std (gains 1, biases 0);
- ``readout_multiplier``, ``attention_scale(head_dim)``, ``residual_multiplier``,
  ``embedding_multiplier``: the forward multipliers;
- ``param_groups(model)`` / ``optimizer(model)``: LR, WD, ε and betas per group; with
  ``optimizer="muon"`` the hidden matrices go to Muon and the rest to AdamW.

Feed it base values and the model's real shape. Never feed it values that
``extrapolate`` already mapped to the target: the factors would be applied twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hpo_service.domain.shape import ModelShape
from hpo_service.domain.space import ParamValue
from hpo_service.errors import UnsupportedFeatureError
from hpo_service.proxies.muon import Lion, MuonAdamW
from hpo_service.scaling.config import ScaleConfig
from hpo_service.scaling.extrapolate import interpolate_depth, scale_value, shape_multipliers
from hpo_service.scaling.naming import resolve_value
from hpo_service.scaling.rules import RuleTable, build_table

__all__ = ["DEFAULT_BASE_VALUES", "ScaledSetup", "infer_role", "role_of", "tag"]

_ROLE_ATTR = "hpo_role"
_BLOCK_ATTR = "hpo_block"

DEFAULT_BASE_VALUES: dict[str, float] = {
    "lr": 1e-3,
    "wd": 0.0,
    "eps": 1e-8,
    "beta1": 0.9,
    "beta2": 0.95,
    "mult": 1.0,
    "residual_mult": 1.0,
    "init_std.embedding": 1.0,
}
"""Base values used when neither the trial nor the model supplies one."""

_GAIN_ROLES = ("norm", "qk_norm", "final_norm")
_ZERO_ROLES = ("bias", "expert_bias")


def tag(p: nn.Parameter, role: str, *, block: int | None = None) -> nn.Parameter:
    """Mark ``p`` with its module role (and residual block index) and return it."""
    setattr(p, _ROLE_ATTR, role)
    setattr(p, _BLOCK_ATTR, block)
    return p


def infer_role(name: str, p: torch.Tensor) -> str:
    """Guess a role from a parameter's name and rank, for untagged models.

    Embedding-like names → ``embedding``; head/readout names → ``readout``; other matrices
    → ``hidden``; vectors named bias → ``bias``; other vectors → ``norm``.
    """
    lowered = name.lower()
    if any(k in lowered for k in ("embed", "wte", "wpe", "tok_emb", "pos_emb")):
        return "embedding"
    if any(k in lowered for k in ("lm_head", "readout", "unembed", "head.weight")):
        return "readout"
    if p.ndim >= 2:
        return "hidden"
    return "bias" if "bias" in lowered else "norm"


def role_of(name: str, p: torch.Tensor) -> tuple[str, int | None]:
    """The tagged (else inferred) role and block index of ``p``."""
    role = getattr(p, _ROLE_ATTR, None)
    if role is None:
        return infer_role(name, p), None
    block = getattr(p, _BLOCK_ATTR, None)
    return str(role), (int(block) if block is not None else None)


@dataclass
class ScaledSetup:
    """Per-role hyperparameters of one model, scaled from the base shape to its shape.

    Attributes:
        config: the study's scale configuration (parameterisation, flavour, optimiser).
        shape: the shape of the model being built.
        values: the trial's per-module values (at ``config.base_shape``).
        defaults: base values for names the trial does not set (``init_std.hidden``, ...);
            ``DEFAULT_BASE_VALUES`` fills whatever remains.
    """

    config: ScaleConfig
    shape: ModelShape
    values: Mapping[str, ParamValue]
    defaults: Mapping[str, float] = field(default_factory=dict)
    table: RuleTable = field(init=False)
    m: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.table = build_table(
            self.config.parameterization, self.config.readout, self.config.optimizer
        )
        self.m = shape_multipliers(self.config.base_shape, self.shape)

    def base_value(self, hparam: str, role: str | None) -> float:
        """The base value for ``hparam`` at ``role``: trial, then model defaults, then global."""
        for source in (self.values, self.defaults, DEFAULT_BASE_VALUES):
            found = (
                resolve_value(source, hparam, role)
                if role is not None
                else ((hparam, source[hparam]) if hparam in source else None)
            )
            if found is not None:
                return float(found[1])
        raise KeyError(f"no base value for {hparam}.{role}")

    def value(self, hparam: str, role: str | None) -> float:
        """The value at the model's shape: the base value times the rule's factor."""
        base = self.base_value(hparam, role)
        return scale_value(self.table, hparam, role, base, self.m).value

    # ---- forward multipliers ----------------------------------------------------------

    @property
    def readout_multiplier(self) -> float:
        """Multiplier on the readout's output (α_out / m_N in the T8 flavour)."""
        return self.value("mult", "readout")

    @property
    def embedding_multiplier(self) -> float:
        """Multiplier on the embedding's output (α_in, constant)."""
        return self.value("mult", "embedding")

    @property
    def residual_multiplier(self) -> float:
        """Multiplier on every residual branch (m_L^−α for depth-aware parameterisations)."""
        return self.value("residual_mult", None)

    def attention_scale(self, head_dim: int, base_head_dim: int | None = None) -> float:
        """Scale of the q·k logits.

        SP uses 1/√d_head. The µP family uses α/d_head (TP5 Def. 4.1) with α = √d_base so
        that it equals SP at the base head dimension, times the tunable ``mult.attn``.
        """
        mult = self.value("mult", "attn")
        if self.config.parameterization == "sp":
            return mult / math.sqrt(head_dim)
        d0 = base_head_dim or head_dim
        return mult * math.sqrt(d0) / head_dim

    # ---- init -------------------------------------------------------------------------

    def init_(self, model: nn.Module) -> None:
        """Initialise every parameter by its role: gains 1, biases 0, matrices N(0, std²)."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                role, _ = role_of(name, p)
                root = role.split(".", 1)[0]
                if root in _GAIN_ROLES:
                    p.fill_(1.0)
                elif root in _ZERO_ROLES:
                    p.zero_()
                else:
                    std = self.value("init_std", role)
                    if std == 0.0:
                        p.zero_()
                    else:
                        p.normal_(0.0, std)

    # ---- optimiser ----------------------------------------------------------------------

    def _depth_factors(self) -> list[float] | None:
        base_depth = self.config.base_shape.depth
        if base_depth is None or f"lr_depth.{0}" not in self.values:
            return None
        base = [float(self.values.get(f"lr_depth.{i}", 1.0)) for i in range(base_depth)]
        return interpolate_depth(base, self.shape.depth or base_depth)

    def _named(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter, str, int | None]]:
        for name, p in model.named_parameters():
            if p.requires_grad:
                role, block = role_of(name, p)
                yield name, p, role, block

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimiser groups: one per distinct (role, block) setting, with scaled values.

        Each group carries ``lr``, ``weight_decay``, ``eps``, ``betas``, ``use_muon`` and,
        for reading back, ``role`` and ``names``.
        """
        depth_factors = self._depth_factors()
        muon = self.config.optimizer == "muon"
        groups: dict[tuple[str, int | None], dict[str, Any]] = {}
        for name, p, role, block in self._named(model):
            key = (role, block if depth_factors is not None else None)
            group = groups.get(key)
            if group is None:
                lr = self.value("lr", role)
                if depth_factors is not None and block is not None:
                    lr *= depth_factors[min(block, len(depth_factors) - 1)]
                group = {
                    "params": [],
                    "names": [],
                    "role": role,
                    "lr": lr,
                    "weight_decay": self.value("wd", role),
                    "eps": self.value("eps", role),
                    "betas": (self.value("beta1", role), self.value("beta2", role)),
                    "use_muon": muon and role.split(".", 1)[0] == "hidden" and p.ndim >= 2,
                }
                groups[key] = group
            group["params"].append(p)
            group["names"].append(name)
        return list(groups.values())

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The configured optimiser over ``param_groups(model)``."""
        groups = self.param_groups(model)
        name = self.config.optimizer
        if name == "muon":
            return MuonAdamW(groups)
        if name == "lion":
            return Lion(groups)
        if name == "sophia":
            raise UnsupportedFeatureError.at(
                ("body", "scale", "optimizer"),
                "sophia has scaling rules for extrapolation but no built-in implementation",
            )
        for g in groups:
            g.pop("use_muon")
        return torch.optim.AdamW(groups)
