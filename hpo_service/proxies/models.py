"""The built-in proxy models, every tensor tagged with its module role.

Both models take a ``ScaledSetup`` and read everything shape-dependent from it: init stds,
the readout, attention and residual multipliers, and (through ``setup.optimizer``) the
per-group LR/WD/ε/β. So the trial's per-module values and the study's parameterisation
decide how the model is built, and the same tables drive ``extrapolate``.

- ``MLP``: input layer (role ``embedding``: finite → width), ``depth`` hidden layers and a
  readout. Plain (ReLU, no biases; TP5's MLP) or residual pre-norm blocks
  ``h + r·W_out relu(W_in norm(h))`` for depth scaling.
- ``Transformer``: decoder-only, pre-norm (RMS norm with gains), optional QK-norm, causal
  attention with a fixed head dimension, GELU MLP or a top-k mixture of experts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpo_service.proxies.torch_setup import ScaledSetup, tag

__all__ = ["MLP", "Dense", "Gain", "MoE", "Transformer"]


class Dense(nn.Module):
    """``mult · x @ Wᵀ`` with a role-tagged weight of shape fan_out × fan_in, no bias.

    ``mult`` is the forward multiplier of the layer's role (readout α_out/m_N, input α_in),
    kept inside the layer so that hooks see what the next layer sees.
    """

    def __init__(self, fan_in: int, fan_out: int, role: str, block: int | None = None) -> None:
        super().__init__()
        self.weight = tag(nn.Parameter(torch.empty(fan_out, fan_in)), role, block=block)
        self.mult = 1.0

    def forward(self, x: Tensor) -> Tensor:
        """Inputs ... × fan_in → outputs ... × fan_out."""
        out = x @ self.weight.T
        return out if self.mult == 1.0 else out * self.mult


class Gain(nn.Module):
    """RMS normalisation over the last dimension with a role-tagged gain vector."""

    def __init__(self, dim: int, role: str, block: int | None = None) -> None:
        super().__init__()
        self.weight = tag(nn.Parameter(torch.ones(dim)), role, block=block)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise each vector to unit RMS, then scale coordinate-wise.

        Computed in float32 whatever the input: under CUDA's bf16 autocast the inputs
        (queries and keys, expert outputs) arrive in bf16 while the gain is float32, and
        ``rms_norm`` neither casts them (it is not on autocast's list) nor keeps its fused
        kernel for mixed dtypes. A bf16 mean of squares also loses precision for nothing.
        """
        out = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), eps=1e-6)
        return out.to(x.dtype)


class MLP(nn.Module):
    """A µP-ready MLP for classification.

    Args:
        d_in: input dimension (finite: does not scale).
        classes: output dimension (finite).
        setup: the scaled hyperparameters; its shape gives width and depth.
        residual: pre-norm residual blocks (two matrices each) instead of plain layers.
    """

    def __init__(
        self, d_in: int, classes: int, setup: ScaledSetup, *, residual: bool = False
    ) -> None:
        super().__init__()
        width, depth = setup.shape.width, setup.shape.depth or 1
        self.setup = setup
        self.residual = residual
        self.inp = Dense(d_in, width, "embedding")
        if residual:
            self.norms = nn.ModuleList(Gain(width, "norm", i) for i in range(depth))
            self.ins = nn.ModuleList(Dense(width, width, "hidden.mlp_in", i) for i in range(depth))
            self.outs = nn.ModuleList(
                Dense(width, width, "hidden.mlp_out", i) for i in range(depth)
            )
            self.final = Gain(width, "final_norm")
        else:
            self.ins = nn.ModuleList(Dense(width, width, "hidden", i) for i in range(depth))
        self.readout = Dense(width, classes, "readout")
        setup.init_(self)
        self.inp.mult = setup.embedding_multiplier
        self.res_mult = setup.residual_multiplier
        self.readout.mult = setup.readout_multiplier

    def forward(self, x: Tensor) -> Tensor:
        """Inputs batch × d_in → logits batch × classes."""
        h = self.inp(x)
        if self.residual:
            for norm, w_in, w_out in zip(self.norms, self.ins, self.outs, strict=True):
                h = h + self.res_mult * w_out(F.relu(w_in(norm(h))))
            h = self.final(h)
        else:
            h = F.relu(h)
            for w in self.ins:
                h = F.relu(w(h))
        out: Tensor = self.readout(h)
        return out


class MoE(nn.Module):
    """Top-k routed experts: ``(1/k) Σ_{i ∈ top-k} g_i · E_i(x)`` (2601.20205's form).

    Expert weights are stacked tensors tagged ``hidden.expert_up`` (experts × width ×
    expert width) and ``hidden.expert_down`` (experts × expert width × width); the router
    is ``router`` (d → E, output-like under µP).
    """

    def __init__(
        self, width: int, experts: int, active: int, expert_width: int, block: int
    ) -> None:
        super().__init__()
        self.active = active
        self.router = Dense(width, experts, "router", block)
        self.up = tag(
            nn.Parameter(torch.empty(experts, width, expert_width)), "hidden.expert_up", block=block
        )
        self.down = tag(
            nn.Parameter(torch.empty(experts, expert_width, width)),
            "hidden.expert_down",
            block=block,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Inputs batch × seq × width → outputs of the same shape."""
        flat = x.reshape(-1, x.shape[-1])
        gates = torch.softmax(self.router(flat).float(), dim=-1)
        top, idx = gates.topk(self.active, dim=-1)
        out = torch.zeros_like(flat)
        for slot in range(self.active):
            for e in torch.unique(idx[:, slot]).tolist():
                rows = (idx[:, slot] == e).nonzero(as_tuple=True)[0]
                h = F.gelu(flat[rows] @ self.up[e]) @ self.down[e]
                # Under bf16 autocast ``h`` is bf16 while ``out`` follows the float32
                # residual stream: accumulate the experts' contributions in ``out``'s dtype.
                out.index_add_(0, rows, (h * top[rows, slot, None]).to(out.dtype))
        return (out / self.active).reshape(x.shape)


class _Block(nn.Module):
    def __init__(
        self, setup: ScaledSetup, i: int, head_dim: int, qk_norm: bool, ffn_ratio: int
    ) -> None:
        super().__init__()
        width = setup.shape.width
        self.heads = max(1, width // head_dim)
        self.head_dim = width // self.heads
        self.norm1 = Gain(width, "norm", i)
        self.qkv = Dense(width, 3 * width, "hidden.attn_qkv", i)
        self.proj = Dense(width, width, "hidden.attn_out", i)
        self.q_norm = Gain(self.head_dim, "qk_norm", i) if qk_norm else None
        self.k_norm = Gain(self.head_dim, "qk_norm", i) if qk_norm else None
        self.norm2 = Gain(width, "norm", i)
        shape = setup.shape
        self.moe: MoE | None = None
        if shape.experts:
            self.moe = MoE(
                width,
                shape.experts,
                shape.active_experts or 1,
                shape.expert_width or width * ffn_ratio,
                i,
            )
        else:
            self.fc_in = Dense(width, ffn_ratio * width, "hidden.mlp_in", i)
            self.fc_out = Dense(ffn_ratio * width, width, "hidden.mlp_out", i)
        self.scale = setup.attention_scale(self.head_dim)
        self.res = setup.residual_multiplier

    def forward(self, x: Tensor) -> Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(w, dim=-1)
        q, k, v = (z.view(b, t, self.heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        x = x + self.res * self.proj(att.transpose(1, 2).reshape(b, t, w))
        h = self.norm2(x)
        mlp = self.moe(h) if self.moe is not None else self.fc_out(F.gelu(self.fc_in(h)))
        out: Tensor = x + self.res * mlp
        return out


class Transformer(nn.Module):
    """Decoder-only character model, pre-norm, optional QK-norm and MoE layers.

    Args:
        vocab: vocabulary size (finite).
        seq_len: maximum context (learned positions).
        setup: scaled hyperparameters; its shape gives width, depth and the MoE axes.
        head_dim: fixed head dimension (heads = width / head_dim).
        qk_norm: RMS-normalise queries and keys per head.
        ffn_ratio: dense MLP hidden width / width.
    """

    def __init__(
        self,
        vocab: int,
        seq_len: int,
        setup: ScaledSetup,
        *,
        head_dim: int = 32,
        qk_norm: bool = False,
        ffn_ratio: int = 4,
    ) -> None:
        super().__init__()
        width, depth = setup.shape.width, setup.shape.depth or 2
        self.tok = nn.Embedding(vocab, width)
        tag(self.tok.weight, "embedding")  # type: ignore[arg-type]
        self.pos = tag(nn.Parameter(torch.empty(seq_len, width)), "embedding.pos")
        self.blocks = nn.ModuleList(
            _Block(setup, i, head_dim, qk_norm, ffn_ratio) for i in range(depth)
        )
        self.final = Gain(width, "final_norm")
        self.readout = Dense(width, vocab, "readout")
        setup.init_(self)
        self.emb_mult = setup.embedding_multiplier
        self.readout.mult = setup.readout_multiplier

    def forward(self, idx: Tensor) -> Tensor:
        """Token ids batch × seq → logits batch × seq × vocab."""
        x = (self.tok(idx) + self.pos[: idx.shape[1]]) * self.emb_mult
        for block in self.blocks:
            x = block(x)
        out: Tensor = self.readout(self.final(x))
        return out


def fan_in_defaults(
    width: int,
    *,
    d_in: int | None = None,
    ffn: int | None = None,
    expert_width: int | None = None,
    readout_std: float | None = None,
    embedding_std: float | None = None,
) -> dict[str, float]:
    """Base init stds that equal PyTorch's fan-in init at the base width.

    ``width`` is the base width; the rules then rescale these with the model's width.
    """
    out = {
        "init_std.hidden": math.sqrt(2.0 / width),
        "init_std.readout": readout_std if readout_std is not None else 1.0 / math.sqrt(width),
        "init_std.router": 1.0 / math.sqrt(width),
        "init_std.embedding": embedding_std
        if embedding_std is not None
        else (1.0 / math.sqrt(d_in) if d_in else 1.0),
    }
    if ffn is not None:
        out["init_std.hidden.mlp_out"] = math.sqrt(2.0 / ffn)
    if expert_width is not None:
        out["init_std.hidden.expert_down"] = math.sqrt(2.0 / expert_width)
    return out
