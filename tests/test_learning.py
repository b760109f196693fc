"""Learning check: every method distils a student well above chance without training data.

A tiny teacher (tests/tiny_models.py) is trained by train_scratch.py on the learnable
CIFAR-10-format fixture (10 classes, chance = 10 %); each method then distils a fresh tiny
student from it using only synthetic images, on a CPU budget of seconds. The schedules are
shortened and the generators narrowed (``--ngf 16``) for speed; everything else is the
method's default. Each method declares its schedule and bar in its ``TEST_PRESET``
(``datafree.synthesis.base.TestPreset``): ZSKT, whose generator has no prior besides
disagreement, is the weakest (20-50 % across seeds), so its bar is lower.
"""
from __future__ import annotations

import pytest

import datafree_kd
import registry


@pytest.mark.parametrize("method", sorted(registry.METHODS))
def test_student_beats_chance_without_training_data(method, tmp_path, cifar10_root, tiny_teacher):
    preset = registry.get_method(method).TEST_PRESET   # the method's schedule and bar (TestPreset)
    result = datafree_kd.main([
        "--method", method, "--dataset", "cifar10", "--teacher", "tiny_cnn", "--student", "tiny_cnn",
        "--teacher_ckpt", str(tiny_teacher), "--data_root", str(cifar10_root), "--save_dir", str(tmp_path / "run"),
        "--device", "cpu", "--no_progress", "--batch_size", "32", *preset.learning_flags])
    assert result["best_acc1"] >= preset.learning_bar, result
