"""Bad input, interruptions and numerical faults (issue: reliability), through the real CLIs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import datafree_kd
from conftest import REPO, distill_args
from datafree.errors import NonFiniteLossError
from datafree.synthesis.dafl import DAFLSynthesizer

PYTHON = sys.executable


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([PYTHON, *args], cwd=kwargs.get("cwd", REPO), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory, cifar10_root, teacher_checkpoint):
    """Run every bad-input case as a subprocess, two at a time, and collect (code, stderr)."""
    work = tmp_path_factory.mktemp("bad_input")
    corrupt = work / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage")
    partial = work / "partial"
    (partial / "cifar-10-batches-py").mkdir(parents=True)
    existing = work / "existing"
    existing.mkdir()
    (existing / "config.yaml").write_text("method: dafl\n")
    kd = lambda *extra, save="run": ["datafree_kd.py", *distill_args("dafl", cifar10_root, teacher_checkpoint,
                                                                      work / save), *extra]
    scratch = lambda *extra: ["train_scratch.py", "--model", "wrn16_1", "--data_root", str(cifar10_root),
                              "--save_dir", str(work / "scratch"), "--device", "cpu", *extra]
    cases = {
        "unknown method": (kd("--method", "dafx"), "unknown method 'dafx'; valid methods: cudfkd, cmi"),
        "unknown teacher": (kd("--teacher", "resnet99"), "unknown model 'resnet99'; valid models: resnet18"),
        "unknown dataset": (kd("--dataset", "mnist"), "unknown dataset 'mnist'; valid datasets: cifar10, cifar100"),
        "missing teacher": (kd("--teacher_ckpt", str(work / "none.pth")), "teacher checkpoint not found"),
        "corrupt teacher": (kd("--teacher_ckpt", str(corrupt)), "is corrupt or unreadable"),
        "teacher architecture": (kd("--teacher", "wrn16_2"), "is a wrn16_1, not a wrn16_2"),
        "teacher classes": (kd("--dataset", "cifar100"), "has 10 classes but 100 are expected"),
        "zero batch": (kd("--batch_size", "0"), "--batch_size must be positive"),
        "negative epochs": (kd("--epochs", "-1"), "--epochs must be positive"),
        "kd above ep steps": (kd("--kd_steps", "8", "--ep_steps", "4"), "exceeds --ep_steps"),
        "cmi bank": (["datafree_kd.py", *distill_args("cmi", cifar10_root, teacher_checkpoint, work / "cmi"),
                      "--bank_size", "8"], "bank"),
        "missing data root": (kd("--data_root", str(work / "nowhere")), "--download"),
        "partial dataset": (kd("--data_root", str(partial)), "--download"),
        "existing run": (kd(save="existing"), "already holds a run; pass --resume"),
        "scratch unknown model": (scratch("--model", "vgg99"), "unknown model 'vgg99'; valid models:"),
        "scratch milestones": (scratch("--milestones", "a,b"), "--milestones must be comma-separated integers"),
        "scratch missing data": (scratch("--data_root", str(work / "nowhere")), "--download"),
        "report missing run": (["-m", "datafree.report", str(work / "nowhere")], "error:"),
    }
    results = {}
    names = list(cases)
    for start in range(0, len(names), 2):
        running = {name: run_cli(cases[name][0]) for name in names[start:start + 2]}
        for name, process in running.items():
            _, stderr = process.communicate(timeout=120)
            results[name] = (process.returncode, stderr, cases[name][1])
    return results


CASE_NAMES = ["unknown method", "unknown teacher", "unknown dataset", "missing teacher", "corrupt teacher",
              "teacher architecture", "teacher classes", "zero batch", "negative epochs", "kd above ep steps",
              "cmi bank", "missing data root", "partial dataset", "existing run", "scratch unknown model",
              "scratch milestones", "scratch missing data", "report missing run"]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_gives_one_line_and_exit_code_2(case, bad_input_results):
    code, stderr, expected = bad_input_results[case]
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("note:")]
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


def kd_command(cifar10_root, teacher_checkpoint, save_dir, *extra):
    return ["datafree_kd.py", *distill_args("dafl", cifar10_root, teacher_checkpoint, save_dir),
            "--epochs", "3", "--ep_steps", "8", "--kd_steps", "4", "--num_threads", "1", *extra]


def wait_for_epochs(run: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``count`` epochs are logged and the checkpoint after the first one is on disk
    (the metrics line is written just before that checkpoint, so the line alone is not enough)."""
    deadline = time.time() + timeout
    metrics = run / "metrics.jsonl"
    while time.time() < deadline:
        if (metrics.exists() and len(metrics.read_text().splitlines()) >= count
                and (run / "last.pth").exists()):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("run did not progress")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cifar10_root, teacher_checkpoint):
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    process = run_cli(kd_command(cifar10_root, teacher_checkpoint, run))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return torch.load(run / "last.pth", weights_only=False)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_resumes_to_the_uninterrupted_result(signum, tmp_path, cifar10_root, teacher_checkpoint,
                                                        uninterrupted):
    run = tmp_path / "run"
    process = run_cli(kd_command(cifar10_root, teacher_checkpoint, run))
    wait_for_epochs(run, 1, process)
    time.sleep(0.3)  # somewhere inside epoch 1
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    if signum == signal.SIGTERM:
        assert process.returncode == 0, stderr
        assert "stopped by SIGTERM" in stdout and "--resume" in stdout
        assert not list(run.glob(".*.tmp"))
    else:
        assert process.returncode == -signal.SIGKILL
    torch.load(run / "last.pth", weights_only=False)  # loadable whatever the moment of the kill
    resumed = run_cli(kd_command(cifar10_root, teacher_checkpoint, run, "--resume"))
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    final = torch.load(run / "last.pth", weights_only=False)
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(value, final["state_dict"][key]), key
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]
    assert not list(run.glob(".*.tmp"))  # stale temporaries of a killed save are cleaned on resume


def test_injected_nan_stops_with_epoch_step_and_term(tmp_path, cifar10_root, teacher_checkpoint, monkeypatch):
    original = DAFLSynthesizer.student_loss

    def poisoned(self, student_logits, teacher_logits, kd_step):
        loss, terms = original(self, student_logits, teacher_logits, kd_step)
        return (loss * float("nan") if kd_step == 5 else loss), terms

    monkeypatch.setattr(DAFLSynthesizer, "student_loss", poisoned)
    run = tmp_path / "run"
    args = distill_args("dafl", cifar10_root, teacher_checkpoint, run, "--epochs", "2", "--log_interval", "1")
    with pytest.raises(NonFiniteLossError, match="'loss_student' at epoch 1, step 5"):
        datafree_kd.main(args)
    good = torch.load(run / "last.pth", weights_only=False)
    assert good["position"]["epoch"] == 1  # the checkpoint of the last good epoch is kept
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())
    skipped = datafree_kd.main(distill_args("dafl", cifar10_root, teacher_checkpoint, tmp_path / "skip",
                                            "--epochs", "2", "--nan_policy", "skip"))
    assert skipped["epochs"] == 2
