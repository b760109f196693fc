"""Shared pytest fixtures: tiny CIFAR-format datasets and a small trained teacher.

Everything runs on the CPU with two threads; nothing here needs the real datasets.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

torch.set_num_threads(2)

from cifar_fixtures import write_cifar  # noqa: E402


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """A learnable CIFAR-10 fixture: 640 train / 200 test images of class patterns."""
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar(root, "cifar10", n_train=640, n_test=200, learnable=True, seed=0)
    return root


@pytest.fixture(scope="session")
def teacher_checkpoint(tmp_path_factory, cifar10_root) -> Path:
    """A wrn16_1 teacher trained by train_scratch.py on the fixture (well above chance)."""
    import train_scratch

    work = tmp_path_factory.mktemp("teacher")
    path = work / "cifar10_wrn16_1.pth"
    result = train_scratch.main([
        "--model", "wrn16_1", "--dataset", "cifar10", "--data_root", str(cifar10_root),
        "--epochs", "4", "--batch_size", "64", "--lr", "0.05", "--milestones", "3",
        "--device", "cpu", "--save_dir", str(work / "run"), "--pretrained_path", str(path),
        "--no_progress"])
    assert result["best_acc1"] > 60, result
    return path


def tiny_method_flags(method: str) -> list[str]:
    """The method's own flags that keep the registry-parametrised suites tiny (its ``TEST_PRESET``)."""
    import registry

    return list(registry.get_method(method).TEST_PRESET.tiny_flags)


def distill_args(method: str, data_root: Path, teacher: Path, save_dir: Path, *extra: str) -> list[str]:
    """A tiny, fast datafree_kd.py configuration (wrn16_1 -> wrn16_1 on the fixture, narrow generators
    for the methods that have one)."""
    return ["--method", method, "--dataset", "cifar10", "--teacher", "wrn16_1", "--student", "wrn16_1",
            "--teacher_ckpt", str(teacher), "--data_root", str(data_root), "--save_dir", str(save_dir),
            "--device", "cpu", "--no_progress", "--batch_size", "16", "--epochs", "1",
            "--ep_steps", "4", "--kd_steps", "2", "--g_steps", "2", *narrow_generator(method),
            *tiny_method_flags(method), *extra]


def narrow_generator(method: str, width: int = 8) -> list[str]:
    """``--ngf width`` for a method with a generator (a flag its options read), nothing for one without (ADI)."""
    import registry

    return ["--ngf", str(width)] if "ngf" in registry.get_method(method).Options.flag_names() else []


@pytest.fixture(scope="session")
def tiny_teacher_path(tmp_path_factory, cifar10_root) -> Path:
    """A tiny_cnn teacher trained on the fixture by train_scratch.py (registered only meanwhile)."""
    import registry
    import train_scratch
    from tiny_models import TinyCNN

    work = tmp_path_factory.mktemp("tiny_teacher")
    path = work / "cifar10_tiny_cnn.pth"
    registry.CLASSIFIERS["tiny_cnn"] = TinyCNN
    try:
        result = train_scratch.main([
            "--model", "tiny_cnn", "--dataset", "cifar10", "--data_root", str(cifar10_root), "--epochs", "6",
            "--batch_size", "32", "--lr", "0.05", "--milestones", "5", "--device", "cpu", "--no_progress",
            "--save_dir", str(work / "run"), "--pretrained_path", str(path)])
    finally:
        registry.CLASSIFIERS.pop("tiny_cnn", None)
    assert result["best_acc1"] >= 90, result
    return path


@pytest.fixture
def tiny_teacher(tiny_teacher_path, monkeypatch) -> Path:
    """The tiny teacher's checkpoint, with the test-only ``tiny_cnn`` registered for this test only."""
    import registry
    from tiny_models import TinyCNN

    monkeypatch.setitem(registry.CLASSIFIERS, "tiny_cnn", TinyCNN)
    return tiny_teacher_path


@pytest.fixture
def three_classes(monkeypatch):
    """The Tiny-ImageNet and ImageNet entries with 3 classes, as the fixture trees of
    ``imagenet_fixtures`` have, for one test."""
    import dataclasses

    from datafree.data import DATASETS

    for name in ("tiny_imagenet", "imagenet"):
        monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], num_classes=3))
