"""The hot loop stays on the device (issue: speed, deliverable 1).

For every method, one synthesis round plus several KD steps — exactly what the driver runs
between two logging points — must make **no host synchronisation** from this package's code:
no ``.item()``, ``bool()``, ``float()``, ``int()`` or ``.tolist()`` of a tensor. On a GPU each
of those would stall the pipeline once per step. The check counts calls made from files of
this repository (``datafree/`` and ``datafree_kd.py``); torch's own CPU bookkeeping (e.g.
Adam reading its CPU step counter) is not a device sync and is not counted.

Also checked here: the teacher is frozen once and never receives gradients, and the student
optimizer is the foreach SGD.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

import datafree_kd
from conftest import narrow_generator, tiny_method_flags
import registry
from datafree.run import stopping
from datafree.run.distributed import DistributedContext
from datafree.run.numerics import Numerics

REPO_FILES = (f"{os.sep}datafree{os.sep}", f"{os.sep}datafree_kd.py")
SYNCING_METHODS = ("item", "__bool__", "__float__", "__int__", "tolist")
KD_STEPS = 3


def build(method: str, cifar10_root, tiny_teacher, tmp_path, device: str = "cpu",
          autocast_dtype: torch.dtype | None = None, channels_last: bool = False):
    """Teacher and training parts of a tiny run, as the driver builds them (also used on CUDA)."""
    args = datafree_kd.build_parser().parse_args([
        "--method", method, "--dataset", "cifar10", "--teacher", "tiny_cnn", "--student", "tiny_cnn",
        "--teacher_ckpt", str(tiny_teacher), "--data_root", str(cifar10_root), "--save_dir", str(tmp_path / "run"),
        "--device", device, "--batch_size", "8", "--ep_steps", str(KD_STEPS), "--kd_steps", str(KD_STEPS),
        "--g_steps", "2", *narrow_generator(method), *tiny_method_flags(method),
        # CuDFKD: adversarial weight on from epoch 0, so its student query is exercised too.
        *(["--adv", "1"] if method == "cudfkd" else [])])
    options = datafree_kd.resolve_options(args)
    teacher = datafree_kd.load_teacher(options, torch.device(device), channels_last=channels_last)
    parts = datafree_kd.build_training(options, teacher, DistributedContext(),
                                       Numerics(torch.device(device), autocast_dtype, channels_last))
    return teacher, parts


def count_host_syncs(patch: pytest.MonkeyPatch) -> list[str]:
    """Patch the tensor methods that read a value back to the host; returns the list of offenders."""
    offenders: list[str] = []

    def guarded(name: str):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_code
            if any(part in caller.co_filename for part in REPO_FILES):
                offenders.append(f"{name} in {caller.co_filename}:{caller.co_name}")
            return original(self, *args, **kwargs)

        return wrapper

    for name in SYNCING_METHODS:
        patch.setattr(torch.Tensor, name, guarded(name))
    return offenders


@pytest.mark.parametrize("method", sorted(registry.METHODS))
def test_a_synthesis_round_and_its_kd_steps_make_no_host_sync(method, tmp_path, cifar10_root, tiny_teacher):
    teacher, parts = build(method, cifar10_root, tiny_teacher, tmp_path)
    watch = stopping.LossWatch(torch.device("cpu"))
    parts.synthesizer.begin_epoch(0)
    parts.student.train()
    before = {name: value.detach().clone() for name, value in parts.student.state_dict().items()}

    with pytest.MonkeyPatch.context() as patch:
        offenders = count_host_syncs(patch)
        terms = parts.synthesizer.synthesize()
        watch.observe(0, terms)
        for kd_step in range(KD_STEPS):
            loss, student_terms, _ = datafree_kd.student_step(parts.synthesizer, teacher, parts.trained_student,
                                                              parts.optimizer, parts.scaler, None, kd_step)
            watch.observe(kd_step, {"loss_student": loss, **student_terms})

    assert offenders == []
    # The guard really watched the loop: the student was trained and the losses are finite.
    after = parts.student.state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before)
    watch.check(0)
    # The teacher is frozen once: no parameter asks for, or received, a gradient.
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert parts.optimizer.defaults["foreach"] is True


def test_the_guard_catches_a_host_sync(tmp_path, cifar10_root, tiny_teacher, monkeypatch):
    """The check above can fail: a loss read with ``.item()`` inside the package is reported."""
    teacher, parts = build("dafl", cifar10_root, tiny_teacher, tmp_path)
    synthesizer = parts.synthesizer
    original = type(synthesizer).student_loss

    def syncing_student_loss(self, student_logits, teacher_logits, kd_step, features=None):
        loss, terms = original(self, student_logits, teacher_logits, kd_step, features)
        stopping.all_finite(iter([loss]))  # a helper of this package that syncs on purpose
        return loss, terms

    monkeypatch.setattr(type(synthesizer), "student_loss", syncing_student_loss)
    with pytest.MonkeyPatch.context() as patch:
        offenders = count_host_syncs(patch)
        datafree_kd.student_step(synthesizer, teacher, parts.trained_student, parts.optimizer, parts.scaler,
                                 None, 0)
    assert offenders and all("stopping.py" in entry for entry in offenders)
