"""Soft-label evaluation: the distillation loss by hand, both labelling modes, the cached teacher, the export helper."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lightning_dd.teacher as teacher_module
from lightning_dd.augment import DSA, cutmix
from lightning_dd.utils.errors import FileFormatError
from lightning_dd.export import load_distilled, save_distilled
from lightning_dd.nets import NetSpec
from lightning_dd.soft_labels import SoftLabeler, attach_soft_labels, distillation_loss, load_soft_labels
from lightning_dd.teacher import TeacherConfig, load_or_train_teacher, teacher_cache_path

NET = NetSpec(width=8, depth=2)

# A tiny batch: 2 images, 3 classes, temperature 2. Each "image" is [3, 1, 1] and holds the
# teacher's logits, so a teacher that flattens its input returns them.
TEACHER_LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
STUDENT_LOGITS = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
T = 2.0


def hand_loss() -> float:
    """T^2 * mean over images of sum_c p_c (log p_c - log q_c), p = softmax(t / T), q = softmax(s / T), written out.

    Image 1: p = (e, 1, 1) / (e + 2) = (0.576117, 0.211942, 0.211942);
             q = (e^.5, e^.5, 1) / (2 e^.5 + 1) = (0.383652, 0.383652, 0.232697).
    Image 2: p = (1, e^.5, e^1.5) / (1 + e^.5 + e^1.5) = (0.140244, 0.231224, 0.628532);
             q = (1, e, 1) / (e + 2) = (0.211942, 0.576117, 0.211942).
    KL_1 = 0.576117 ln(0.576117/0.383652) + 2 * 0.211942 ln(0.211942/...) ..., giving 1.005849 in all.
    """
    e = math.e
    p = [
        [e / (e + 2), 1 / (e + 2), 1 / (e + 2)],
        [1 / (1 + e**0.5 + e**1.5), e**0.5 / (1 + e**0.5 + e**1.5), e**1.5 / (1 + e**0.5 + e**1.5)],
    ]
    q = [
        [e**0.5 / (2 * e**0.5 + 1), e**0.5 / (2 * e**0.5 + 1), 1 / (2 * e**0.5 + 1)],
        [1 / (e + 2), e / (e + 2), 1 / (e + 2)],
    ]
    kl = [sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(pi, qi)) for pi, qi in zip(p, q)]
    return T**2 * sum(kl) / 2


def images() -> torch.Tensor:
    return TEACHER_LOGITS.view(2, 3, 1, 1).clone()


def student(x: torch.Tensor) -> torch.Tensor:
    return STUDENT_LOGITS + 0.0 * x.flatten(1)


def test_the_hand_value():
    assert hand_loss() == pytest.approx(1.0058492, abs=1e-6)


def test_distillation_loss_is_t_squared_kl_of_teacher_and_student():
    p = torch.softmax(TEACHER_LOGITS / T, dim=1)
    assert float(distillation_loss(STUDENT_LOGITS, p, T)) == pytest.approx(hand_loss(), abs=1e-5)
    # It equals the soft cross-entropy -T^2 sum p log q minus the teacher's entropy (a constant): same gradients.
    soft_ce = float(-(T**2) * (p * torch.log_softmax(STUDENT_LOGITS / T, dim=1)).sum(1).mean())
    entropy = float(-(T**2) * (p * p.log()).sum(1).mean())
    assert soft_ce - entropy == pytest.approx(hand_loss(), abs=1e-5)


@pytest.mark.parametrize("mode", ["per_view", "per_image"])
def test_soft_label_loss_by_hand_on_a_tiny_batch(mode):
    labeler = SoftLabeler(nn.Flatten(), mode, temperature=T)
    x, hard = images(), torch.tensor([0, 2])
    targets = labeler.targets(x, hard)
    if mode == "per_image":  # one soft label per image, computed once from the un-augmented image
        torch.testing.assert_close(targets, torch.softmax(TEACHER_LOGITS / T, dim=1))
    else:
        assert torch.equal(targets, hard)
    loss = labeler(student, x, targets, DSA("none"), torch.Generator().manual_seed(0), 0.0)
    assert float(loss) == pytest.approx(hand_loss(), abs=1e-5)


def test_per_image_labels_of_a_cutmixed_view_are_mixed_by_area():
    x = torch.randn(4, 3, 4, 4)
    probs = torch.softmax(torch.randn(4, 3), dim=1)
    seen = []
    labeler = SoftLabeler(nn.Flatten(), "per_image", temperature=1.0)
    labeler(lambda v: seen.append(v) or torch.zeros(4, 3), x, probs, DSA("none"), torch.Generator().manual_seed(3), 1.0)
    # the same draws, made here with CutMix alone: the mixed images and which labels meet
    mixed, y_a, y_b, lam = cutmix(x, probs, torch.Generator().manual_seed(3), 1.0)
    assert 0.0 < lam < 1.0 and torch.equal(seen[0], mixed)
    expected = lam * y_a + (1 - lam) * y_b
    zeros = torch.zeros(4, 3)  # student logits 0: q uniform, so the loss is KL(expected || uniform)
    assert float(
        labeler(lambda v: zeros, x, probs, DSA("none"), torch.Generator().manual_seed(3), 1.0)
    ) == pytest.approx(float((expected * (expected.log() + math.log(3))).sum(1).mean()), abs=1e-6)


def test_per_view_labels_come_from_the_teacher_on_each_augmented_view():
    teacher_inputs, student_inputs = [], []
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    teacher.register_forward_pre_hook(lambda m, a: teacher_inputs.append(a[0].clone()))
    labeler = SoftLabeler(teacher, "per_view", temperature=4.0)
    x = torch.randn(6, 3, 4, 4)
    logits = lambda v: student_inputs.append(v.clone()) or torch.zeros(6, 3)  # noqa: E731
    labeler(logits, x, torch.zeros(6, dtype=torch.long), DSA("color_crop"), torch.Generator().manual_seed(0), 1.0)
    assert len(teacher_inputs) == 1 and torch.equal(teacher_inputs[0], student_inputs[0])
    assert not torch.allclose(student_inputs[0], x)  # augmented, not the stored images
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training


# ------------------------------------------------------------------------------ teacher
def tiny_teacher(tmp_path, **changes) -> TeacherConfig:
    return TeacherConfig(
        **{"net": NET, "epochs": 1, "batch_size": 256, "cache_dir": str(tmp_path / "teachers"), **changes}
    )


def test_the_teacher_is_trained_once_then_loaded_from_the_cache(digits, tmp_path, monkeypatch):
    trained = []
    original = teacher_module.train_classifier
    monkeypatch.setattr(teacher_module, "train_classifier", lambda *a, **k: trained.append(1) or original(*a, **k))
    config = tiny_teacher(tmp_path)
    first = load_or_train_teacher(config, NetSpec(), digits.train_data, progress=False)
    second = load_or_train_teacher(config, NetSpec(), digits.train_data, progress=False)
    assert (first.source, second.source, len(trained)) == ("trained", "cached", 1)
    assert first.path == second.path and first.path.exists() and first.net == NET
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())
    # another recipe (or other training images) is another teacher
    other = load_or_train_teacher(tiny_teacher(tmp_path, seed=1), NetSpec(), digits.train_data, progress=False)
    assert other.source == "trained" and other.path != first.path and len(trained) == 2


def test_a_teacher_is_read_from_a_checkpoint(digits, tmp_path):
    trained = load_or_train_teacher(tiny_teacher(tmp_path), NetSpec(), digits.train_data, progress=False)
    state = tmp_path / "state.pt"
    torch.save(trained.model.state_dict(), state)
    for path in (trained.path, state):  # a teacher file names its net; a state dict takes teacher.net or the default
        loaded = load_or_train_teacher(TeacherConfig(checkpoint=str(path)), NET, digits.train_data)
        assert loaded.source == "checkpoint" and loaded.net == NET
        assert torch.equal(loaded.model.classifier.weight, trained.model.classifier.weight)
    with pytest.raises(FileFormatError, match="does not hold weights of convnet depth 2 width 16"):
        load_or_train_teacher(TeacherConfig(checkpoint=str(state)), NetSpec(width=16, depth=2), digits.train_data)
    with pytest.raises(FileFormatError, match="is not a readable teacher file"):
        load_or_train_teacher(TeacherConfig(checkpoint=str(tmp_path / "missing.pt")), NET, digits.train_data)


def test_a_damaged_cache_file_is_retrained(digits, tmp_path):
    first = load_or_train_teacher(tiny_teacher(tmp_path), NetSpec(), digits.train_data, progress=False)
    first.path.write_bytes(b"not a teacher")
    again = load_or_train_teacher(tiny_teacher(tmp_path), NetSpec(), digits.train_data, progress=False)
    assert again.source == "trained" and again.path == first.path == teacher_cache_path(
        tiny_teacher(tmp_path), first.key
    )


# ------------------------------------------------------------------------------- export
def test_soft_labels_can_be_stored_with_an_exported_set(tmp_path, digits):
    path = save_distilled(tmp_path / "set.pt", torch.rand(10, 1, 8, 8), torch.arange(10), 1, digits.info, {"ipc": 1})
    assert load_soft_labels(path) is None
    probs = torch.softmax(torch.randn(10, 10), dim=1)
    attach_soft_labels(path, probs, temperature=4.0, teacher={"net": NET.to_dict()})
    stored, temperature = load_soft_labels(path)
    assert torch.equal(stored, probs) and temperature == 4.0
    assert load_distilled(path).images.shape == (10, 1, 8, 8)  # still a set every reader opens
    with pytest.raises(FileFormatError, match="do not fit the 10 decoded images"):
        attach_soft_labels(path, probs[:3], temperature=4.0)
