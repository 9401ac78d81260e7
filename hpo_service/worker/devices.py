"""GPU-pinned slots: which devices each slot's trials may see, from ``--gpus``.

A node with several GPUs runs one slot per GPU group, and every trial of a slot sees
only its group (``CUDA_VISIBLE_DEVICES`` in the child's environment). Without that, every
trial a multi-slot worker starts opens ``cuda:0``: four trials share one GPU, three sit
idle, and out-of-memory failures look like bad hyperparameters.

Device ids are strings because CUDA accepts more than indices (``GPU-<uuid>``,
``MIG-<uuid>``). They are the ids written into the child's ``CUDA_VISIBLE_DEVICES``;
when the worker itself runs under ``CUDA_VISIBLE_DEVICES`` (a Slurm or Kubernetes
allocation), ``--gpus`` may only name ids from that list, so a slot can never reach a
GPU the allocation does not own.

Rules (``plan_slots``): ``--gpus 0,1,2,3`` or ``--gpus all`` splits the devices into
consecutive groups of ``--gpus-per-trial`` (default 1), one slot each. With neither flag
nor ``--parallel``, a node where GPUs are detected gets ``all``; elsewhere ``--parallel``
works as before, unpinned. Anything ambiguous is an error rather than a guess.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["ALL", "DeviceSpecError", "SlotPlan", "detect_gpus", "plan_slots"]

ALL = "all"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:/._-]*$")
# CUDA reads these in CUDA_VISIBLE_DEVICES as "no device at all".
_NO_DEVICES = frozenset({"", "-1", "NoDevFiles", "none"})
_SMI_TIMEOUT = 15.0


class DeviceSpecError(ValueError):
    """``--gpus`` / ``--gpus-per-trial`` / ``--parallel`` cannot be satisfied as given."""


@dataclass(frozen=True)
class SlotPlan:
    """How many slots a worker runs, and the devices of each.

    Attributes:
        parallel: number of slots.
        devices: per slot, the value of its trials' ``CUDA_VISIBLE_DEVICES`` (``"0,1"``);
            empty when slots are not pinned (then the trials inherit the worker's view).
    """

    parallel: int
    devices: tuple[str, ...] = ()


def _nvidia_smi() -> list[str]:
    """GPU indices as ``nvidia-smi`` lists them; none when it is missing or fails."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=_SMI_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def detect_gpus(
    environ: Mapping[str, str], query: Callable[[], list[str]] = _nvidia_smi
) -> list[str]:
    """The GPUs this worker may hand out: its ``CUDA_VISIBLE_DEVICES``, else nvidia-smi's.

    The environment wins because a scheduler that sets it has already decided which GPUs
    this job owns; asking the driver would list the whole node.

    Args:
        environ: the worker's environment.
        query: lists the node's GPUs (``nvidia-smi`` by default; tests pass a stub).
    """
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        if visible.strip() in _NO_DEVICES:
            return []
        return [part.strip() for part in visible.split(",") if part.strip()]
    return query()


def _parse_list(spec: str) -> list[str]:
    ids = [part.strip() for part in spec.split(",")]
    if any(not i for i in ids):
        raise DeviceSpecError(f"--gpus {spec}: empty device id (expected e.g. 0,1,2,3 or all)")
    bad = [i for i in ids if not _DEVICE_ID.match(i)]
    if bad:
        raise DeviceSpecError(f"--gpus {spec}: {bad[0]!r} is not a device id")
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise DeviceSpecError(
            f"--gpus {spec}: device {', '.join(twice)} listed twice; two slots on one GPU "
            "would compete for its memory"
        )
    return ids


def _devices(spec: str, detected: Sequence[str]) -> list[str]:
    if spec.strip().lower() == ALL:
        if not detected:
            raise DeviceSpecError(
                "--gpus all: no GPU detected (CUDA_VISIBLE_DEVICES is empty or unset and "
                "nvidia-smi lists none); name the devices (--gpus 0,1) or use --parallel"
            )
        return list(detected)
    ids = _parse_list(spec)
    if detected:
        foreign = [i for i in ids if i not in detected]
        if foreign:
            raise DeviceSpecError(
                f"--gpus {spec}: {', '.join(foreign)} not among the GPUs this worker may "
                f"use ({','.join(detected)})"
            )
    return ids


def plan_slots(
    gpus: str | None,
    gpus_per_trial: int | None,
    parallel: int | None,
    detect: Callable[[], Sequence[str]],
) -> SlotPlan:
    """Decide the worker's slots from its flags and the GPUs found.

    Args:
        gpus: ``--gpus`` (``"0,1,2,3"``, ``"all"``), or None when not given.
        gpus_per_trial: ``--gpus-per-trial``, or None when not given (1).
        parallel: ``--parallel``, or None when not given.
        detect: lists the GPUs this worker may use; called only when the answer matters.

    Raises:
        DeviceSpecError: a duplicate or foreign device, ``all`` with no GPU, a group size
            that does not divide the devices, or a ``--parallel`` that contradicts them.
    """
    if parallel is not None and parallel < 1:
        raise DeviceSpecError(f"--parallel {parallel}: must be at least 1")
    if gpus_per_trial is not None and gpus_per_trial < 1:
        raise DeviceSpecError(f"--gpus-per-trial {gpus_per_trial}: must be at least 1")
    if gpus is None and gpus_per_trial is None and parallel is not None:
        return SlotPlan(parallel)  # an explicit slot count keeps the unpinned behaviour
    detected = list(detect())
    if gpus is None:
        if not detected:
            if gpus_per_trial is not None:
                raise DeviceSpecError(
                    f"--gpus-per-trial {gpus_per_trial}: no GPU detected; name them with --gpus"
                )
            return SlotPlan(1)
        gpus = ALL
    devices = _devices(gpus, detected)
    size = gpus_per_trial or 1
    if len(devices) % size:
        raise DeviceSpecError(
            f"--gpus-per-trial {size} does not split the {len(devices)} GPUs "
            f"({','.join(devices)}) into equal groups"
        )
    groups = tuple(",".join(devices[i : i + size]) for i in range(0, len(devices), size))
    if parallel is not None and parallel != len(groups):
        raise DeviceSpecError(
            f"--parallel {parallel} contradicts --gpus: {len(groups)} GPU group(s) of {size} "
            "make one slot each"
        )
    return SlotPlan(len(groups), groups)
