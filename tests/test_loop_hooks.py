"""The loop's method-agnostic hooks: ``after_student_step`` after every KD step, and KD batches of
more than B rows (a replay batch appended to the novel one), counted as the rows they are."""
from __future__ import annotations

import json

import torch

import datafree_kd
from datafree.synthesis.dafl import DAFLSynthesizer


class RecordingSynthesizer(DAFLSynthesizer):
    """DAFL whose KD batches carry 3 extra rows, recording each ``after_student_step`` call."""

    calls: list[int] = []
    rows: list[int] = []

    def sample(self) -> torch.Tensor:
        images = super().sample()
        batch = torch.cat([images, images[:3]])
        type(self).rows.append(batch.shape[0])
        return batch

    def after_student_step(self, kd_step: int) -> None:
        type(self).calls.append(kd_step)


def test_after_student_step_is_called_once_per_kd_step_and_batches_may_exceed_b(tmp_path, cifar10_root,
                                                                              tiny_teacher, monkeypatch):
    import registry

    monkeypatch.setitem(registry.METHODS, "dafl", RecordingSynthesizer)
    monkeypatch.setattr(RecordingSynthesizer, "calls", [])
    monkeypatch.setattr(RecordingSynthesizer, "rows", [])
    result = datafree_kd.main([
        "--method", "dafl", "--dataset", "cifar10", "--teacher", "tiny_cnn", "--student", "tiny_cnn",
        "--teacher_ckpt", str(tiny_teacher), "--data_root", str(cifar10_root), "--save_dir", str(tmp_path / "run"),
        "--device", "cpu", "--no_progress", "--batch_size", "8", "--epochs", "2", "--ep_steps", "4",
        "--kd_steps", "2", "--ngf", "8"])
    assert RecordingSynthesizer.calls == list(range(8))          # run-wide KD-step indices, once each
    assert RecordingSynthesizer.rows == [11] * 8                  # B + 3 rows reach the student
    assert result is not None
    metrics = [json.loads(line) for line in (tmp_path / "run").rglob("*.jsonl").__next__().read_text().splitlines()
               if line.strip()]
    epochs = [entry for entry in metrics if "images_per_second" in entry]
    assert epochs, metrics
