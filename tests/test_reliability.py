"""Every early stop is resumable, and resumption reaches the uninterrupted result (docs/METHODS.md §6.1).

Through the real CLIs as subprocesses: SIGTERM or ``kill -9`` during epoch 0, and SIGINT /
SIGTERM during set-up (while torch imports), each followed by ``--resume``. In the process:
a NaN during epoch 0 or later, a full disk, a run stopped before its first checkpoint, and a
run directory renamed or named with a trailing slash. Bad input: tests/test_bad_input.py.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import datafree_kd
from conftest import REPO, distill_args
from datafree.run.cli import run_cli
from datafree.errors import NonFiniteLossError, UsageError
from datafree.synthesis.dafl import DAFLSynthesizer

PYTHON = sys.executable


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([PYTHON, *args], cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def kd_arguments(cifar10_root, teacher_checkpoint, save_dir, *extra) -> list[str]:
    return [*distill_args("dafl", cifar10_root, teacher_checkpoint, save_dir),
            "--epochs", "2", "--ep_steps", "8", "--kd_steps", "4", "--num_threads", "1", *extra]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pth", weights_only=True)["state_dict"]


def assert_same_weights(expected: dict[str, torch.Tensor], run: Path) -> None:
    final = weights(run)
    for key, value in expected.items():
        assert torch.equal(value, final[key]), key


def epochs_logged(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cifar10_root, teacher_checkpoint) -> dict[str, torch.Tensor]:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    datafree_kd.main(kd_arguments(cifar10_root, teacher_checkpoint, run))
    return weights(run)


def resume_to_the_end(run: Path, cifar10_root, teacher_checkpoint, uninterrupted, *extra) -> None:
    datafree_kd.main(kd_arguments(cifar10_root, teacher_checkpoint, run, "--resume", *extra))
    assert_same_weights(uninterrupted, run)
    assert epochs_logged(run) == [0, 1]
    assert not list(run.glob(".*.tmp"))  # stale temporaries of a killed save are cleaned on resume


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_run_killed_during_epoch_0_resumes_to_the_uninterrupted_result(signum, tmp_path, cifar10_root,
                                                                         teacher_checkpoint, uninterrupted):
    run = tmp_path / "run"
    process = start(["datafree_kd.py", *kd_arguments(cifar10_root, teacher_checkpoint, run)])
    deadline = time.time() + 120
    while not (run / "last.pth").exists():   # the first checkpoint is written before the first step
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    if signum == signal.SIGTERM:
        assert process.returncode == 0, stderr
        assert "stopped by SIGTERM at epoch 0" in stdout and "--resume" in stdout
    else:
        assert process.returncode == -signal.SIGKILL
    torch.load(run / "last.pth", weights_only=True)  # loadable whatever the moment of the kill
    resume_to_the_end(run, cifar10_root, teacher_checkpoint, uninterrupted)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_set_up_stops_cleanly_and_resumes(signum, tmp_path, cifar10_root, teacher_checkpoint,
                                                          uninterrupted):
    run = tmp_path / "run"
    process = start(["datafree_kd.py", *kd_arguments(cifar10_root, teacher_checkpoint, run)])
    time.sleep(0.3)   # torch is still importing
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    name = signal.Signals(signum).name
    assert f"stopped by {name} at epoch 0, round 0, kd in round 0, kd step 0" in stdout, stdout
    assert (run / "last.pth").is_file() and not (run / "metrics.jsonl").exists()
    resume_to_the_end(run, cifar10_root, teacher_checkpoint, uninterrupted)


def test_a_run_stopped_before_its_first_checkpoint_gets_one_advice_and_resumes(tmp_path, cifar10_root,
                                                                              teacher_checkpoint, uninterrupted):
    run = tmp_path / "run"
    datafree_kd.main(kd_arguments(cifar10_root, teacher_checkpoint, run, "--max_minutes", "1e-9"))
    (run / "last.pth").unlink()   # as if killed between config.yaml and the first checkpoint
    with pytest.raises(UsageError, match="stopped before its first checkpoint; pass --resume"):
        datafree_kd.main(kd_arguments(cifar10_root, teacher_checkpoint, run))
    resume_to_the_end(run, cifar10_root, teacher_checkpoint, uninterrupted)


@pytest.mark.parametrize("bad_step", [0, 5])
def test_a_nan_names_epoch_step_term_and_what_last_pth_holds(bad_step, tmp_path, cifar10_root, teacher_checkpoint,
                                                             uninterrupted, monkeypatch):
    original = DAFLSynthesizer.student_loss

    def poisoned(self, student_logits, teacher_logits, kd_step, features=None):
        loss, terms = original(self, student_logits, teacher_logits, kd_step, features)
        return (loss * float("nan") if kd_step == bad_step else loss), terms

    monkeypatch.setattr(DAFLSynthesizer, "student_loss", poisoned)
    run = tmp_path / "run"
    epoch, saved = (0, "epoch 0, round 0, kd in round 0, kd step 0") if bad_step == 0 else \
        (1, "epoch 1, round 0, kd in round 0, kd step 4")
    with pytest.raises(NonFiniteLossError, match=f"'loss_student' at epoch {epoch}, step {bad_step}; last.pth keeps "
                                                 f"the state at {saved}: continue it with --resume --nan_policy skip"):
        datafree_kd.main(kd_arguments(cifar10_root, teacher_checkpoint, run, "--log_interval", "1", "--epochs", "2",
                                      "--ep_steps", "4"))
    held = torch.load(run / "last.pth", weights_only=True)
    assert held["epoch"] == epoch
    assert all(torch.isfinite(v).all() for v in held["state_dict"].values() if v.is_floating_point())
    result = datafree_kd.main(kd_arguments(cifar10_root, teacher_checkpoint, run, "--log_interval", "1",
                                           "--epochs", "2", "--ep_steps", "4", "--resume", "--nan_policy", "skip"))
    assert result["epochs"] == 2


def test_a_full_disk_is_one_line_keeps_the_previous_checkpoint_and_resumes(tmp_path, cifar10_root,
                                                                          teacher_checkpoint, uninterrupted,
                                                                          monkeypatch, capsys):
    run = tmp_path / "run"
    saves = []
    original = torch.save

    def full_disk(obj, file, *args, **kwargs):
        if str(getattr(file, "name", "")).endswith(".last.pth.tmp"):
            saves.append(1)
            if len(saves) == 2:   # the first save (before the first step) fits, the next does not
                raise OSError(errno.ENOSPC, "No space left on device")
        return original(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(SystemExit) as stopped:
        run_cli(datafree_kd.main, kd_arguments(cifar10_root, teacher_checkpoint, run))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stopped.value.code == 2 and len(lines) == 1
    assert "last.pth (No space left on device); the previous last.pth is kept" in lines[0]
    assert torch.load(run / "last.pth", weights_only=True)["tick"] == 0
    assert not list(run.glob(".*.tmp"))
    monkeypatch.setattr(torch, "save", original)
    resume_to_the_end(run, cifar10_root, teacher_checkpoint, uninterrupted)


def test_resume_compares_meaning_not_spelling_of_paths(tmp_path, cifar10_root, teacher_checkpoint, uninterrupted):
    first = tmp_path / "first"
    datafree_kd.main(kd_arguments(cifar10_root, teacher_checkpoint, f"{first}/", "--max_minutes", "1e-9"))
    stopped = datafree_kd.main(kd_arguments(cifar10_root, teacher_checkpoint, first, "--max_minutes", "1e-9",
                                            "--resume"))
    assert stopped["position"]["kd_step"] == 2
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(first, moved)
    teacher_copy = tmp_path / "teacher_copy.pth"
    shutil.copyfile(teacher_checkpoint, teacher_copy)
    resume_to_the_end(moved, cifar10_root, teacher_copy, uninterrupted)


def test_overwrite_keeps_the_users_files(tmp_path, cifar10_root, teacher_checkpoint):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    arguments = distill_args("dafl", cifar10_root, teacher_checkpoint, run)
    datafree_kd.main(arguments)

    def names() -> list[str]:
        return sorted(p.name for p in run.iterdir() if not p.name.startswith("events.out.tfevents."))

    written = names()
    datafree_kd.main([*arguments, "--overwrite"])
    assert (run / "notes.txt").read_text() == "mine"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1   # the old event file was the run's: deleted
    assert names() == written == [".datafree-run", "best.pth", "config.yaml", "last.pth", "metrics.jsonl",
                                  "notes.txt", "summary.json"]
