"""Small explicit builders for request bodies."""

from __future__ import annotations

from typing import Any


def space(**extra: Any) -> dict[str, Any]:
    return {
        "parameters": [
            {"name": "lr", "type": "float", "low": 1e-5, "high": 1e-1, "scale": "log"},
            {"name": "layers", "type": "int", "low": 1, "high": 8},
            {"name": "optimizer", "type": "categorical", "choices": ["adamw", "muon"]},
            {"name": "batch_size", "type": "ordinal", "values": [16, 32, 64]},
            {
                "name": "ns_steps",
                "type": "int",
                "low": 1,
                "high": 10,
                "conditions": {"parent": "optimizer", "values": ["muon"]},
            },
        ],
        **extra,
    }


def study(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "proxy-w256",
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "space": space(),
        "algorithm": "sobol",
        "seed": 7,
    }
    body.update(overrides)
    return body


def params(lr: float = 1e-3, optimizer: str = "adamw", **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"lr": lr, "layers": 2, "optimizer": optimizer, "batch_size": 32}
    if optimizer == "muon":
        p["ns_steps"] = 5
    p.update(extra)
    return p
