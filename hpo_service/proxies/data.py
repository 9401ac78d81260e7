"""Data the built-in proxies train on: nothing is downloaded.

- ``TeacherStudent``: a fixed random two-layer teacher labels fresh Gaussian inputs, so
  every step sees new samples and there is no memorisation.
- ``Digits``: scikit-learn's bundled 8×8 digits (1,797 images), standardised.
- ``CharCorpus``: a character-level corpus made of the installed Python's standard-library
  sources (read at run time from its ``Lib`` directory, files in sorted order, so the same
  Python gives the same text), bytes mapped to a 128-symbol ASCII vocabulary.
- ``CharContext``: the same corpus as a classification task for an MLP: the one-hot
  previous ``context`` characters predict the next one (a Bengio-style n-gram model).

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

__all__ = ["Batch", "CharContext", "CharCorpus", "Digits", "TeacherStudent", "char_corpus"]

Batch = tuple[Tensor, Tensor]

_TEACHER_SEED = 20240607
_VOCAB = 128


@dataclass
class TeacherStudent:
    """Classification labels from a fixed teacher MLP (input dim → 64 tanh (× layers) → classes).

    Attributes:
        d_in: input dimension.
        classes: number of classes.
        layers: tanh layers of the teacher; more layers with ``gain`` > 1 give a more
            nonlinear (chaotic-regime) target that a shallow student fits worse.
        gain: std × √64 of the teacher's hidden-to-hidden weights.
    """

    d_in: int = 32
    classes: int = 10
    layers: int = 1
    gain: float = 1.0

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(_TEACHER_SEED)
        self._w1 = torch.randn(64, self.d_in, generator=g) / self.d_in**0.5
        self._w2 = torch.randn(self.classes, 64, generator=g) / 8.0
        # Drawn after the one-layer teacher's weights, so ``layers=1`` is unchanged.
        self._deep = [
            torch.randn(64, 64, generator=g) * self.gain / 8.0 for _ in range(self.layers - 1)
        ]

    def label(self, x: Tensor) -> Tensor:
        """Teacher labels (a vector of class indices) for inputs of shape batch × d_in."""
        h = torch.tanh(x @ self._w1.T)
        for w in self._deep:
            h = torch.tanh(h @ w.T)
        return (h @ self._w2.T).argmax(dim=-1)

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


@dataclass
class CharContext:
    """Next character from the one-hot previous ``context`` characters (stdlib corpus).

    Why: a depth benchmark needs a task whose loss keeps falling with capacity and whose
    LR optimum is sharp; the teacher task saturates (its labels come from a shallow
    teacher the smallest student already represents). Character n-gram prediction is a
    real, unsaturated task an MLP can train on without attention, and every step sees fresh
    windows of a 2M-character corpus. The last 10% of the corpus is validation.

    Attributes:
        context: characters of context (input dimension ``context × 128``).
        max_chars: corpus size cap (the first files in sorted order).
    """

    context: int = 4
    max_chars: int = 2_000_000
    classes: int = _VOCAB

    @property
    def d_in(self) -> int:
        """Input dimension: one-hot context characters, concatenated."""
        return self.context * _VOCAB

    def _split(self) -> tuple[Tensor, Tensor]:
        ids = char_corpus(self.max_chars)
        cut = int(len(ids) * 0.9)
        return ids[:cut], ids[cut:]

    def _examples(self, ids: Tensor, starts: Tensor) -> Batch:
        ctx = ids[starts[:, None] + torch.arange(self.context)[None, :]]
        x = torch.nn.functional.one_hot(ctx, _VOCAB).to(torch.float32).reshape(len(starts), -1)
        return x, ids[starts + self.context]

    def batches(self, batch_size: int, seed: int) -> Callable[[], Batch]:
        """Random windows: inputs batch × d_in, next-character labels of length batch."""
        train, _ = self._split()
        g = torch.Generator().manual_seed(seed)

        def draw() -> Batch:
            starts = torch.randint(0, len(train) - self.context, (batch_size,), generator=g)
            return self._examples(train, starts)

        return draw

    def validation(self, n: int = 4096) -> Batch:
        """``n`` evenly spaced validation windows, the same for every run."""
        _, val = self._split()
        starts = torch.linspace(0, len(val) - self.context - 1, n).long()
        return self._examples(val, starts)
