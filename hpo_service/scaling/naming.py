"""Per-module hyperparameter names: ``<hparam>.<role>[.<sub>]``, bare globals, ``lr_depth.<i>``.

A study's space names what it tunes. The rules need to know, for each name, which
hyperparameter and which module role it sets, so this module is the one place that reads
names. A finer group (``lr.hidden.attn_qkv``) falls back to its parent role's rule and, when
a value is looked up for a tensor, to the parent role's value and then to the bare name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from hpo_service.domain.space import ParamValue
from hpo_service.scaling.rules import (
    GLOBAL_HPARAMS,
    ROLE_HPARAMS,
    ROLES,
    Exponents,
    Rule,
    RuleTable,
)

__all__ = [
    "BARE_EXPANSION",
    "ParsedName",
    "expansion_roles",
    "lookup_rule",
    "parse_name",
    "resolve_value",
    "table_key",
]

NameKind = Literal["role", "bare", "global", "depth", "unknown"]

# Roles a bare, role-dependent name is expanded into (API.md: ``lr`` → ``lr.<role>``).
BARE_EXPANSION: dict[str, tuple[str, ...]] = {
    "lr": ("embedding", "hidden", "bias", "norm", "qk_norm", "final_norm", "readout"),
    "eps": ("embedding", "hidden", "bias", "norm", "qk_norm", "final_norm", "readout"),
    "wd": ("embedding", "hidden", "readout"),
    "init_std": ("embedding", "hidden", "readout"),
    "init_var": ("embedding", "hidden", "readout"),
}
_MOE_EXPANSION: dict[str, tuple[str, ...]] = {
    "lr": ("router", "expert_bias"),
    "eps": ("router",),
    "wd": ("router",),
    "init_std": ("router",),
    "init_var": ("router",),
}
_ROLE_FREE = ("beta1", "beta2", *GLOBAL_HPARAMS)

_NO_RULE = Rule(Exponents(), ("no rule known for this role and hyperparameter: kept",), "U")


@dataclass(frozen=True)
class ParsedName:
    """What a parameter name addresses.

    Attributes:
        kind: ``role`` (``lr.hidden``), ``bare`` (``lr``, expanded per role), ``global``
            (``beta1``, ``residual_mult``), ``depth`` (``lr_depth.3``) or ``unknown``
            (passed through unchanged).
        hparam: the hyperparameter (``lr``, ``init_std``, ...), None when unknown.
        role: the full role with sub-groups (``hidden.attn_qkv``), None when role-free.
        index: the block index of a ``lr_depth.<i>`` name.
    """

    kind: NameKind
    hparam: str | None = None
    role: str | None = None
    index: int | None = None


def parse_name(name: str) -> ParsedName:
    """Classify a parameter name.

    Raises:
        ValueError: a known hyperparameter with an unknown role (``lr.hiden``), a role
            that cannot carry that hyperparameter, or a malformed ``lr_depth`` index.
    """
    if name in _ROLE_FREE:
        return ParsedName("global", hparam=name)
    if name in BARE_EXPANSION:
        return ParsedName("bare", hparam=name)
    head, _, rest = name.partition(".")
    if head == "lr_depth":
        if not rest.isdigit():
            raise ValueError(f"{name!r}: per-depth multipliers are named lr_depth.<block index>")
        return ParsedName("depth", hparam="lr_depth", index=int(rest))
    if head not in ROLE_HPARAMS or not rest:
        return ParsedName("unknown")
    root = rest.split(".", 1)[0]
    if root not in ROLES:
        raise ValueError(f"{name!r}: unknown module role {root!r}; known roles: {', '.join(ROLES)}")
    if root == "attn" and head != "mult":
        raise ValueError(
            f"{name!r}: role 'attn' only carries 'mult'; attention matrices are "
            "'hidden' (e.g. lr.hidden.attn_qkv)"
        )
    return ParsedName("role", hparam=head, role=rest)


def table_key(hparam: str) -> str:
    """The table's key for a hyperparameter (``init_std`` → variance, betas → 1−β)."""
    if hparam == "init_std":
        return "init_var"
    if hparam in ("beta1", "beta2"):
        return "one_minus_beta"
    return hparam


def lookup_rule(table: RuleTable, hparam: str, role: str | None) -> tuple[Rule, bool]:
    """The rule for ``hparam`` at ``role``, walking sub-groups up to the root role.

    Returns:
        The rule and whether the table has one (False: the ×1 fallback, tagged ``U``).
    """
    key = table_key(hparam)
    if role is None or key in ("one_minus_beta", *GLOBAL_HPARAMS):
        rule = table.get((key, "*"))
        if rule is not None:
            return rule, True
    parts = role.split(".") if role else []
    while parts:
        rule = table.get((key, ".".join(parts)))
        if rule is not None:
            return rule, True
        parts.pop()
    return _NO_RULE, False


def expansion_roles(hparam: str, moe: bool) -> tuple[str, ...]:
    """Roles a bare ``hparam`` expands into for a dense or MoE model."""
    roles = BARE_EXPANSION.get(hparam, ())
    return roles + _MOE_EXPANSION.get(hparam, ()) if moe else roles


def resolve_value(
    values: Mapping[str, ParamValue], hparam: str, role: str
) -> tuple[str, ParamValue] | None:
    """Find the value a tensor of ``role`` gets for ``hparam``.

    Looks up ``<hparam>.<role>``, then each parent role, then the bare ``<hparam>``.

    Returns:
        The name that supplied the value and the value, or None when nothing applies.
    """
    parts = role.split(".")
    while parts:
        name = f"{hparam}.{'.'.join(parts)}"
        if name in values:
            return name, values[name]
        parts.pop()
    if hparam in values:
        return hparam, values[hparam]
    return None
