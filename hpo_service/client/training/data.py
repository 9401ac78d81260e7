"""Data the built-in proxies train on: nothing is downloaded.

- ``TeacherStudent``: a fixed random two-layer teacher labels fresh Gaussian inputs, so
  every step sees new samples and there is no memorisation.
- ``Digits``: scikit-learn's bundled 8×8 digits (1,797 images), standardised.
- ``CharCorpus``: a character-level corpus made of the installed Python's standard-library
  sources (read at run time from its ``Lib`` directory, files in sorted order, so the same
  Python gives the same text), bytes mapped to a 128-symbol ASCII vocabulary.

Every source yields batches from a generator seeded with the data seed alone, so runs that
differ only in their hyperparameters see exactly the same batches.
"""

from __future__ import annotations

import functools
import pathlib
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

__all__ = ["Batch", "CharCorpus", "Digits", "TeacherStudent", "char_corpus"]

Batch = tuple[Tensor, Tensor]

_TEACHER_SEED = 20240607
_VOCAB = 128


@dataclass
class TeacherStudent:
    """Classification labels from a fixed teacher MLP (input dim → 64 tanh → classes).

    Attributes:
        d_in: input dimension.
        classes: number of classes.
    """

    d_in: int = 32
    classes: int = 10

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(_TEACHER_SEED)
        self._w1 = torch.randn(64, self.d_in, generator=g) / self.d_in**0.5
        self._w2 = torch.randn(self.classes, 64, generator=g) / 8.0

    def label(self, x: Tensor) -> Tensor:
        """Teacher labels (a vector of class indices) for inputs of shape batch × d_in."""
        return (torch.tanh(x @ self._w1.T) @ self._w2.T).argmax(dim=-1)

    def batches(self, batch_size: int, seed: int) -> Callable[[], Batch]:
        """Endless fresh training batches: inputs batch × d_in, labels of length batch."""
        g = torch.Generator().manual_seed(seed)

        def draw() -> Batch:
            x = torch.randn(batch_size, self.d_in, generator=g)
            return x, self.label(x)

        return draw

    def validation(self, n: int = 2048) -> Batch:
        """A fixed held-out set, the same for every seed."""
        g = torch.Generator().manual_seed(_TEACHER_SEED + 1)
        x = torch.randn(n, self.d_in, generator=g)
        return x, self.label(x)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return x, np.asarray(bunch.target, dtype=np.int64)


@dataclass
class Digits:
    """scikit-learn's digits: 64 inputs, 10 classes; the last 297 images are validation."""

    d_in: int = 64
    classes: int = 10
    n_val: int = 297

    def batches(self, batch_size: int, seed: int) -> Callable[[], Batch]:
        """Minibatches drawn with replacement from the training images."""
        x, y = _digits_arrays()
        xt, yt = torch.from_numpy(x[: -self.n_val]), torch.from_numpy(y[: -self.n_val])
        g = torch.Generator().manual_seed(seed)

        def draw() -> Batch:
            idx = torch.randint(0, xt.shape[0], (batch_size,), generator=g)
            return xt[idx], yt[idx]

        return draw

    def validation(self) -> Batch:
        """The held-out images and labels."""
        x, y = _digits_arrays()
        return torch.from_numpy(x[-self.n_val :]), torch.from_numpy(y[-self.n_val :])


@functools.lru_cache(maxsize=2)
def char_corpus(max_chars: int = 2_000_000) -> Tensor:
    """The standard-library corpus as a vector of token ids (0–127), at most ``max_chars``."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    chunks: list[bytes] = []
    total = 0
    for path in sorted(root.glob("*.py")):
        data = path.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= max_chars:
            break
    raw = np.frombuffer(b"".join(chunks)[:max_chars], dtype=np.uint8)
    raw = np.where(raw < _VOCAB, raw, ord("?")).astype(np.int64)
    return torch.from_numpy(raw)


@dataclass
class CharCorpus:
    """Next-character prediction on the stdlib corpus; the last 10% is validation.

    Attributes:
        seq_len: context length of every sequence.
        max_chars: corpus size cap (the first files in sorted order).
    """

    seq_len: int = 64
    max_chars: int = 2_000_000
    vocab: int = _VOCAB

    def _split(self) -> tuple[Tensor, Tensor]:
        ids = char_corpus(self.max_chars)
        cut = int(len(ids) * 0.9)
        return ids[:cut], ids[cut:]

    def _windows(self, ids: Tensor, starts: Tensor) -> Batch:
        offsets = torch.arange(self.seq_len + 1)
        seqs = ids[starts[:, None] + offsets[None, :]]
        return seqs[:, :-1], seqs[:, 1:]

    def batches(self, batch_size: int, seed: int) -> Callable[[], Batch]:
        """Random windows: inputs and next-character targets, both batch × seq_len."""
        train, _ = self._split()
        g = torch.Generator().manual_seed(seed)

        def draw() -> Batch:
            starts = torch.randint(0, len(train) - self.seq_len - 1, (batch_size,), generator=g)
            return self._windows(train, starts)

        return draw

    def validation(self, n: int = 256) -> Batch:
        """``n`` evenly spaced validation windows, the same for every run.

        256 windows (8,192 characters at the CPU context of 32) keep the validation noise
        well below the loss differences an LR sweep has to resolve near its optimum.
        """
        _, val = self._split()
        starts = torch.linspace(0, len(val) - self.seq_len - 2, n).long()
        return self._windows(val, starts)
