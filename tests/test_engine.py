"""engine.py: atomic writes, run directories, metrics log, non-finite loss detection."""
from __future__ import annotations

import json

import pytest
import torch

from datafree import engine
from datafree.errors import NonFiniteLossError, UsageError


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.pth"
    engine.atomic_save({"value": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        engine.atomic_save({"value": Unpicklable()}, path)
    assert torch.load(path, weights_only=False) == {"value": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_run_directory_refuses_reuse_and_resume_without_checkpoint(tmp_path):
    run = tmp_path / "run"
    engine.prepare_run_directory(run, resume=False, overwrite=False)
    (run / "config.yaml").write_text("a: 1\n")
    with pytest.raises(UsageError, match="--resume to continue it, --overwrite to replace it"):
        engine.prepare_run_directory(run, resume=False, overwrite=False)
    with pytest.raises(UsageError, match="last.pth does not exist"):
        engine.prepare_run_directory(run, resume=True, overwrite=False)
    engine.prepare_run_directory(run, resume=False, overwrite=True)
    assert not (run / "config.yaml").exists()
    stale = run / ".last.pth.abc123.tmp"  # what a kill -9 in the middle of atomic_save leaves
    stale.write_bytes(b"partial")
    engine.atomic_save({"value": 1}, run / "last.pth")
    engine.prepare_run_directory(run, resume=True, overwrite=False)
    assert not stale.exists() and (run / "last.pth").exists()


def test_metrics_logger_drops_epochs_that_will_be_rerun_on_resume(tmp_path):
    logger = engine.MetricsLogger(tmp_path)
    for epoch in range(3):
        logger.log({"epoch": epoch, "acc1": float(epoch)})
    logger.close()
    with (tmp_path / "metrics.jsonl").open("a") as file:
        file.write('{"epoch": 3, "acc')  # a line cut short by a crash
    logger = engine.MetricsLogger(tmp_path, start_epoch=2)
    logger.log({"epoch": 2, "acc1": 9.0})
    logger.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"epoch": 0, "acc1": 0.0}, {"epoch": 1, "acc1": 1.0}, {"epoch": 2, "acc1": 9.0}]


def test_loss_watch_names_epoch_step_and_term():
    watch = engine.LossWatch(torch.device("cpu"))
    watch.reset()
    watch.observe(0, {"loss_student": torch.tensor(1.0)})
    watch.observe(1, {"loss_student": torch.tensor(2.0), "loss_bn": torch.tensor(float("nan"))})
    watch.observe(2, {"loss_student": torch.tensor(float("inf"))})
    with pytest.raises(NonFiniteLossError, match="'loss_bn' at epoch 7, step 1"):
        watch.check(7)
    watch.reset()
    watch.observe(3, {"loss_student": torch.tensor(1.0)})
    watch.check(8)


def test_evaluate_counts_top1_and_top5():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x[:, :, 0, 0] + 0 * self.weight

    # logits = first pixel of each of 6 channels; labels chosen so 1 of 3 is top-1, 2 of 3 top-5
    logits = torch.tensor([[6.0, 5, 4, 3, 2, 1], [1.0, 2, 3, 4, 5, 6], [6.0, 5, 4, 3, 2, 1]])
    images = logits[:, :, None, None].expand(3, 6, 2, 2).contiguous()
    labels = torch.tensor([0, 1, 5])
    result = engine.evaluate(Fixed(), [(images, labels)])
    assert result["acc1"] == pytest.approx(100 / 3)
    assert result["acc5"] == pytest.approx(200 / 3)
    expected_loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_derived_generators_are_reproducible_and_distinct():
    cpu = torch.device("cpu")
    a = torch.rand(4, generator=engine.derived_generator(cpu, 1, 2, 3))
    b = torch.rand(4, generator=engine.derived_generator(cpu, 1, 2, 3))
    c = torch.rand(4, generator=engine.derived_generator(cpu, 1, 2, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
