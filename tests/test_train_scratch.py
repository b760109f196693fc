"""train_scratch.py: learning, run directory, checkpoints, exact resumption (METHODS.md §2.2)."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

import registry
import train_scratch
from datafree.run import checkpoints
from datafree.errors import CheckpointError, UsageError


def scratch_args(root, save_dir, *extra):
    return ["--model", "wrn16_1", "--dataset", "cifar10", "--data_root", str(root), "--epochs", "2",
            "--batch_size", "128", "--lr", "0.05", "--device", "cpu", "--no_progress",
            "--save_dir", str(save_dir), "--pretrained_path", str(save_dir / "pretrained.pth"), *extra]


def test_teacher_learns_the_fixture_and_is_saved_for_distillation(teacher_checkpoint):
    checkpoint = torch.load(teacher_checkpoint, weights_only=False)
    assert checkpoint["arch"] == "wrn16_1"
    assert checkpoint["num_classes"] == 10
    assert checkpoint["dataset"] == "cifar10"
    assert checkpoint["acc1"] > 60  # chance is 10 %
    model = registry.get_model("wrn16_1", 10)
    checkpoints.load_classifier(teacher_checkpoint, model, "wrn16_1", 10, "cifar10")


def test_run_directory_holds_config_metrics_events_and_checkpoints(tmp_path, cifar10_root):
    run = tmp_path / "run"
    train_scratch.main(scratch_args(cifar10_root, run))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"] == "wrn16_1" and config["seed"] == 0 and config["lr"] == 0.05
    assert config["milestones"] == "120,150,180" and config["weight_decay"] == 1e-4
    assert config["environment"]["torch"] == torch.__version__
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for record in records:
        for key in ("train_loss", "acc1", "acc5", "loss", "lr", "best_acc1", "epoch_seconds", "images_per_second"):
            assert key in record
        assert 0 <= record["acc1"] <= record["acc5"] <= 100
    assert records[1]["best_acc1"] == max(r["acc1"] for r in records)
    assert list(run.glob("events.out.tfevents.*"))
    assert (run / "best.pth").is_file() and (run / "last.pth").is_file()
    assert (tmp_path / "run" / "pretrained.pth").is_file()
    assert not list(run.glob("*.tmp"))


def test_resume_after_time_budget_equals_uninterrupted_run(tmp_path, cifar10_root):
    full = tmp_path / "full"
    train_scratch.main(scratch_args(cifar10_root, full))
    pieces = tmp_path / "pieces"
    first = train_scratch.main(scratch_args(cifar10_root, pieces, "--max_minutes", "1e-9"))
    assert first["stopped"] and first["position"] == {"epoch": 0, "step": 1}
    assert not (pieces / "pretrained.pth").exists()
    train_scratch.main(scratch_args(cifar10_root, pieces, "--resume"))
    expected = torch.load(full / "last.pth", weights_only=False)
    resumed = torch.load(pieces / "last.pth", weights_only=False)
    assert expected["epoch"] == resumed["epoch"] == 2
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    full_metrics = [json.loads(l)["acc1"] for l in (full / "metrics.jsonl").read_text().splitlines()]
    piece_metrics = [json.loads(l)["acc1"] for l in (pieces / "metrics.jsonl").read_text().splitlines()]
    assert full_metrics == piece_metrics


def test_existing_run_is_refused_without_resume_or_overwrite(tmp_path, cifar10_root):
    run = tmp_path / "run"
    args = scratch_args(cifar10_root, run, "--epochs", "1")
    train_scratch.main(args)
    with pytest.raises(UsageError, match="already holds a run"):
        train_scratch.main(args)
    train_scratch.main([*args, "--overwrite"])
    with pytest.raises(UsageError, match="these flags differ: lr"):
        train_scratch.main([*scratch_args(cifar10_root, run, "--epochs", "1", "--lr", "0.2"), "--resume"])


def test_classifier_checkpoint_round_trip_and_mismatches(tmp_path):
    model = registry.get_model("wrn16_1", 10).eval()
    path = tmp_path / "teacher.pth"
    checkpoints.save_classifier(path, model, "wrn16_1", 10, "cifar10")
    loaded = registry.get_model("wrn16_1", 10).eval()
    checkpoints.load_classifier(path, loaded, "wrn16_1", 10, "cifar10")
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(images), loaded(images))
    with pytest.raises(CheckpointError, match="is a wrn16_1, not a wrn16_2"):
        checkpoints.load_classifier(path, registry.get_model("wrn16_2", 10), "wrn16_2", 10, "cifar10")
    with pytest.raises(CheckpointError, match="has 10 classes but 100"):
        checkpoints.load_classifier(path, registry.get_model("wrn16_1", 100), "wrn16_1", 100, "cifar100")
    with pytest.raises(CheckpointError, match="trained on cifar10, not cifar100"):
        checkpoints.load_classifier(path, registry.get_model("wrn16_1", 10), "wrn16_1", 10, "cifar100")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoints.load_classifier(tmp_path / "corrupt.pth", loaded, "wrn16_1", 10, "cifar10")
    with pytest.raises(CheckpointError, match="not found"):
        checkpoints.load_classifier(tmp_path / "missing.pth", loaded, "wrn16_1", 10, "cifar10")
