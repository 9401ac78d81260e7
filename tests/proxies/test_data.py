"""The generated and corpus-backed data sources of the depth benchmark."""

from __future__ import annotations

import torch

from hpo_service.proxies.data import CharContext, TeacherStudent, char_corpus


def test_deep_teacher_keeps_the_shallow_teacher_and_changes_the_labels() -> None:
    x = TeacherStudent().validation(512)[0]
    shallow = TeacherStudent().label(x)
    assert torch.equal(TeacherStudent(layers=1, gain=3.0).label(x), shallow)
    deep = TeacherStudent(layers=6, gain=2.0).label(x)
    agree = float((deep == shallow).float().mean())
    assert agree < 0.5  # a different target, not a relabelling of the same boundaries
    assert len(torch.unique(deep)) >= 5  # and not a collapsed one


def test_char_context_inputs_encode_the_preceding_characters() -> None:
    source = CharContext(context=3, max_chars=50_000)
    x, y = source.batches(16, seed=0)()
    assert x.shape == (16, 3 * 128)
    assert y.shape == (16,)
    assert torch.equal(x.reshape(16, 3, 128).sum(-1), torch.ones(16, 3))  # one-hot per slot
    ids = char_corpus(50_000)
    cut = int(len(ids) * 0.9)
    vx, vy = source.validation(8)
    ctx = vx.reshape(8, 3, 128).argmax(-1)
    starts = torch.linspace(0, len(ids) - cut - 3 - 1, 8).long() + cut
    for k in range(8):
        s = int(starts[k])
        assert torch.equal(ctx[k], ids[s : s + 3])
        assert int(vy[k]) == int(ids[s + 3])


def test_same_seed_same_batches() -> None:
    a = CharContext(max_chars=50_000).batches(8, seed=5)
    b = CharContext(max_chars=50_000).batches(8, seed=5)
    for _ in range(3):
        (xa, ya), (xb, yb) = a(), b()
        assert torch.equal(xa, xb)
        assert torch.equal(ya, yb)
