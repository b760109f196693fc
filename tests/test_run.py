"""The run lifecycle's parts: atomic writes, safe loads, run directories, metrics log, NaN watch,
evaluation, RNG states (datafree/run/checkpoints.py, run_directory.py, run.py, stopping.py, seeding.py)."""
from __future__ import annotations

import errno
import json
import os
import random

import numpy as np
import pytest
import torch

from datafree.run import checkpoints, evaluation, seeding
from datafree.errors import CheckpointError, NonFiniteLossError
from datafree.metrics_log import read_metrics_lines, readable_records
from datafree.run.lifecycle import EpochMeter
from datafree.run.directory import MARKER, MetricsLogger, RunDirectory, RunDirectoryError
from datafree.run.stopping import LossWatch


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    checkpoints.atomic_save({"value": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        checkpoints.atomic_save({"value": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"value": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]

    def full_disk(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(checkpoints.WriteError, match=r"cannot write .*last.pth \(No space left on device\); "
                                                     r"the previous last.pth is kept.*--resume"):
        checkpoints.atomic_save({"value": 2}, path)
    assert torch.load(path, weights_only=True) == {"value": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_files_are_created_readable_by_the_group_and_others(tmp_path):
    previous = os.umask(0o022)
    try:
        checkpoints.atomic_save({"value": 1}, tmp_path / "last.pth")
    finally:
        os.umask(previous)
    assert (tmp_path / "last.pth").stat().st_mode & 0o044 == 0o044


def test_load_checkpoint_refuses_pickled_objects_without_running_them(tmp_path):
    sentinel = tmp_path / "sentinel"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    torch.save({"state_dict": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="posix.system.*refused without being run"):
        checkpoints.load_checkpoint(tmp_path / "evil.pth")
    assert not sentinel.exists()
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match=r"whole pickled model \(torch.nn.modules.linear.Linear\).*state_dict\(\)"):
        checkpoints.load_checkpoint(tmp_path / "model.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        checkpoints.load_checkpoint(tmp_path / "corrupt.pth")


def test_rng_state_is_tensors_and_numbers_and_round_trips_through_a_weights_only_load(tmp_path):
    seeding.seed_everything(3)
    state = seeding.capture_rng_state()
    checkpoints.atomic_save({"rng": state}, tmp_path / "rng.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    seeding.seed_everything(99)
    seeding.restore_rng_state(checkpoints.load_checkpoint(tmp_path / "rng.pth")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def new_run(directory: RunDirectory) -> None:
    """What a run does first: validate, create the marker, write its files."""
    directory.open(directory.validate(resume=False, overwrite=False))
    directory.write_config({"a": 1})
    checkpoints.atomic_save({"value": 1}, directory.path / "last.pth")


def test_run_directory_refuses_reuse_and_resumes_only_what_it_wrote(tmp_path):
    directory = RunDirectory(tmp_path / "run", "distillation_run")
    with pytest.raises(RunDirectoryError, match="does not exist; drop --resume"):
        directory.validate(resume=True, overwrite=False)
    new_run(directory)
    assert json.loads((directory.path / MARKER).read_text())["kind"] == "distillation_run"
    with pytest.raises(RunDirectoryError, match="--resume to continue it, --overwrite to replace it"):
        directory.validate(resume=False, overwrite=False)
    assert directory.validate(resume=True, overwrite=False) == "resume"
    with pytest.raises(RunDirectoryError, match="holds a distillation_run, not a scratch_run"):
        RunDirectory(directory.path, "scratch_run").validate(resume=True, overwrite=False)
    (directory.path / "last.pth").unlink()   # stopped between config.yaml and the first checkpoint
    with pytest.raises(RunDirectoryError, match="stopped before its first checkpoint; pass --resume"):
        directory.validate(resume=False, overwrite=False)
    assert directory.validate(resume=True, overwrite=False) == "restart"


def test_overwrite_deletes_only_listed_files_and_never_an_input(tmp_path):
    directory = RunDirectory(tmp_path / "run", "scratch_run")
    new_run(directory)
    (directory.path / "notes.txt").write_text("mine")
    (directory.path / ".notes.txt.tmp").write_text("mine too")
    checkpoints.atomic_save({"value": 1}, directory.path / "best.pth")
    with pytest.raises(RunDirectoryError, match="holds .*best.pth, an input of this run"):
        directory.validate(resume=False, overwrite=True, protected=[str(directory.path / "best.pth")])
    assert directory.validate(resume=False, overwrite=True, protected=[str(tmp_path / "teacher.pth")]) == "overwrite"
    directory.open("overwrite")
    assert sorted(p.name for p in directory.path.iterdir()) == [".datafree-run", ".notes.txt.tmp", "notes.txt"]


def test_unmarked_directory_is_used_only_when_it_holds_nothing_named_like_a_run(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.yaml").write_text("mine")
    for resume, overwrite in ((False, False), (False, True), (True, False)):
        with pytest.raises(RunDirectoryError, match="no .datafree-run marker.*nothing was deleted"):
            RunDirectory(foreign, "scratch_run").validate(resume=resume, overwrite=overwrite)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "teacher.pth").write_text("x")
    (shared / ".last.pth.tmp").write_text("not ours: no marker")
    directory = RunDirectory(shared, "distillation_run")
    assert directory.validate(resume=False, overwrite=False) == "new"
    directory.open("new")
    assert (shared / ".last.pth.tmp").exists() and (shared / "teacher.pth").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file, not a directory"):
        RunDirectory(tmp_path / "file", "scratch_run").validate(resume=False, overwrite=False)
    with pytest.raises(RunDirectoryError, match="lies under the file"):
        RunDirectory(tmp_path / "file" / "run", "scratch_run").validate(resume=False, overwrite=False)


def test_temporaries_are_removed_only_after_validation_and_only_ours(tmp_path):
    directory = RunDirectory(tmp_path / "run", "distillation_run")
    new_run(directory)
    stale = directory.path / ".last.pth.tmp"   # what a kill -9 in the middle of atomic_save leaves
    stale.write_bytes(b"partial")
    other = directory.path / ".scratchpad.tmp"
    other.write_bytes(b"user")
    with pytest.raises(RunDirectoryError):
        directory.validate(resume=False, overwrite=False)
    assert stale.exists()
    directory.open(directory.validate(resume=True, overwrite=False))
    assert not stale.exists() and other.exists() and (directory.path / "last.pth").exists()


def test_metrics_logger_drops_epochs_that_will_be_rerun_and_claims_its_event_file(tmp_path):
    directory = RunDirectory(tmp_path / "run", "scratch_run")
    new_run(directory)
    logger = MetricsLogger(directory)
    for epoch in range(3):
        logger.log({"epoch": epoch, "acc1": float(epoch)})
    logger.close()
    with (directory.path / "metrics.jsonl").open("a") as file:
        file.write('{"epoch": 3, "acc')  # a line cut short by a crash
    logger = MetricsLogger(directory, start_epoch=2)
    logger.log({"epoch": 2, "acc1": 9.0})
    logger.close()
    records = [json.loads(line) for line in (directory.path / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"epoch": 0, "acc1": 0.0}, {"epoch": 1, "acc1": 1.0}, {"epoch": 2, "acc1": 9.0}]
    events = sorted(p.name for p in directory.path.glob("events.out.tfevents.*"))
    listed = json.loads((directory.path / MARKER).read_text())["files"]
    assert len(events) == 2 and set(events) <= set(listed)


def test_metrics_log_numbers_lines_and_reports_a_cut_line(tmp_path):
    """The one reader of metrics.jsonl: editor line numbers, blank lines skipped, a line cut by a
    crash kept as a problem (the report refuses it), left out of the readable records (summary)."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0, "acc1": 1.0}\n\n[1]\n{"epoch": 1, "acc')
    lines = read_metrics_lines(path)
    assert [(line.number, line.epoch) for line in lines] == [(1, 0), (3, None), (4, None)]
    assert lines[1].problem == "expected a JSON object, got list"
    assert lines[2].record is None and lines[2].problem.startswith("malformed JSON (")
    assert readable_records(path) == [{"epoch": 0, "acc1": 1.0}]


def test_epoch_meter_weighted_means_survive_a_stop():
    meter = EpochMeter(torch.device("cpu"))
    meter.add({"train_loss": torch.tensor(1.0)}, weight=3)
    meter.add({"train_loss": torch.tensor(3.0)}, weight=1)
    resumed = EpochMeter(torch.device("cpu"), meter.state())
    resumed.add({"train_loss": torch.tensor(2.0)}, weight=4)
    assert resumed.means() == {"train_loss": pytest.approx((3 + 3 + 8) / 8)}


def test_loss_watch_names_epoch_step_term_and_the_saved_state():
    watch = LossWatch(torch.device("cpu"))
    watch.reset()
    watch.observe(0, {"loss_student": torch.tensor(1.0)})
    watch.observe(1, {"loss_student": torch.tensor(2.0), "loss_bn": torch.tensor(float("nan"))})
    watch.observe(2, {"loss_student": torch.tensor(float("inf"))})
    with pytest.raises(NonFiniteLossError, match="'loss_bn' at epoch 7, step 1; last.pth keeps the state at epoch 7"):
        watch.check(7, "the state at epoch 7")
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
    result = evaluation.evaluate(Fixed(), [(images, labels)])
    assert result["acc1"] == pytest.approx(100 / 3)
    assert result["acc5"] == pytest.approx(200 / 3)
    expected_loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_derived_generators_are_reproducible_and_distinct():
    cpu = torch.device("cpu")
    a = torch.rand(4, generator=seeding.derived_generator(cpu, 1, 2, 3))
    b = torch.rand(4, generator=seeding.derived_generator(cpu, 1, 2, 3))
    c = torch.rand(4, generator=seeding.derived_generator(cpu, 1, 2, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    large = torch.rand(4, generator=seeding.derived_generator(cpu, seeding.MAX_SEED, 2**62))
    assert torch.isfinite(large).all()
