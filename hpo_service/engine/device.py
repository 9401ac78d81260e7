"""Where the engine's tensors live: CUDA when this process can see a GPU, else the CPU.

Everything numeric in the engine is float64. Gaussian-process marginal likelihoods and
Cholesky factors of nearly singular kernel matrices lose too much in float32 (the
baseline measurements found float32 no faster overall on the CPU either), so precision
is fixed and only the device varies.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["DTYPE", "device", "single_threaded", "to_numpy", "to_tensor"]

DTYPE = torch.float64


@functools.cache
def device() -> torch.device:
    """The device for model tensors: the first CUDA device when present, else the CPU."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def to_tensor(array: npt.ArrayLike) -> torch.Tensor:
    """Copy ``array`` into a float64 tensor on the engine's device."""
    return torch.as_tensor(np.asarray(array, dtype=np.float64), dtype=DTYPE, device=device())


def to_numpy(tensor: torch.Tensor) -> npt.NDArray[np.float64]:
    """Detach ``tensor`` and copy it to a float64 numpy array on the host."""
    return np.asarray(tensor.detach().to("cpu", DTYPE).numpy(), dtype=np.float64)


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 0


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one intra-op thread while the block runs.

    GP fitting and acquisition optimisation issue thousands of small tensor operations;
    with several threads each one waits for the slowest, and on a shared 2-core machine
    a descheduled thread costs milliseconds per operation (measured: a 300-point fit took
    1.3 s on two threads and 0.36 s on one). One thread per request also lets concurrent
    requests use the other cores. Reference-counted, so overlapping blocks from several
    threads restore the setting only when the last one leaves.
    """
    global _threads_users, _threads_saved
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_saved)
