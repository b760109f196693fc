"""The CUDA-only paths (issue: speed and scale), checked on a real GPU.

Skipped where no GPU is present (CI, the CPU development machine): run them on a lent GPU with
``python -m pytest -q tests/test_cuda.py``. They check what the CPU suite cannot:

* the hot loop never waits for the GPU: ``torch.cuda.set_sync_debug_mode("error")`` turns
  every synchronising CUDA call of a synthesis round and its KD steps into an error;
* every method runs an epoch in bf16 autocast with channels_last, and logs peak memory;
* fp16 (with its loss scalers) runs and stays finite;
* bf16 and fp32 logits agree on a fixed batch, channels_last and contiguous alike;
* ``--deterministic`` makes two CMI runs (pool and bank indexing) identical bit for bit;
* with two or more GPUs, a two-rank NCCL run keeps both ranks' students identical.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

import datafree_kd
import registry
from conftest import REPO, distill_args
from datafree.run import numerics, stopping
from test_distributed import run_two_ranks
from test_hot_loop import KD_STEPS, build

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("method", sorted(registry.METHODS))
def test_a_synthesis_round_and_its_kd_steps_never_wait_for_the_gpu(method, tmp_path, cifar10_root, tiny_teacher):
    numerics.configure_backends(CUDA, deterministic=False)
    teacher, parts = build(method, cifar10_root, tiny_teacher, tmp_path, device="cuda",
                           autocast_dtype=torch.bfloat16, channels_last=True)
    watch = stopping.LossWatch(CUDA)
    parts.synthesizer.begin_epoch(0)
    parts.student.train()

    def one_round(first_step: int) -> None:
        watch.observe(first_step, parts.synthesizer.synthesize())
        for kd_step in range(first_step, first_step + KD_STEPS):
            loss, terms, _ = datafree_kd.student_step(parts.synthesizer, teacher, parts.trained_student,
                                                      parts.optimizer, parts.scaler, torch.bfloat16, kd_step)
            watch.observe(kd_step, {"loss_student": loss, **terms})

    one_round(0)   # warm-up: cuDNN autotuning and lazy initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        one_round(KD_STEPS)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    watch.check(0)


@pytest.mark.parametrize("method", sorted(registry.METHODS))
def test_every_method_runs_an_epoch_in_bf16_channels_last_and_logs_peak_memory(method, tmp_path, cifar10_root,
                                                                               teacher_checkpoint):
    run = tmp_path / "run"
    summary = datafree_kd.main(distill_args(method, cifar10_root, teacher_checkpoint, run, "--device", "cuda",
                                            "--precision", "bf16"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["precision"] == "bf16" and config["channels_last"] == "auto"
    assert config["environment"]["gpu"] == torch.cuda.get_device_name(CUDA)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["peak_memory_mb"] > 0 and summary["peak_memory_mb"] == record["peak_memory_mb"]
    assert all(torch.isfinite(torch.tensor(value)) for key, value in record.items() if key.startswith("loss_"))


@pytest.mark.parametrize("method", ["cudfkd", "adi", "cmi"])
def test_fp16_with_loss_scaling_runs_and_stays_finite(method, tmp_path, cifar10_root, teacher_checkpoint):
    run = tmp_path / "run"
    datafree_kd.main(distill_args(method, cifar10_root, teacher_checkpoint, run, "--device", "cuda",
                                  "--precision", "fp16"))
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert torch.isfinite(torch.tensor(record["loss_student"]))


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_and_fp32_logits_agree_on_a_fixed_batch(channels_last):
    torch.manual_seed(0)
    model = numerics.to_memory_format(registry.get_model("wrn16_2", 10).to(CUDA).eval(), channels_last)
    images = torch.randn(32, 3, 32, 32, device=CUDA)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = model(images)
        with numerics.autocast(CUDA, torch.bfloat16):
            mixed = model(images).float()
    # The CPU test's tolerance (tests/test_precision.py): a few percent of the logits' spread.
    assert (mixed - reference).abs().max() <= 0.05 * reference.abs().max() + 0.05
    assert (mixed.argmax(1) == reference.argmax(1)).float().mean() >= 0.9


def test_deterministic_runs_repeat_bit_for_bit(tmp_path, cifar10_root, teacher_checkpoint):
    """Each run is its own process, so cuBLAS reads the workspace setting before its first use."""
    states = []
    for name in ("a", "b"):
        run = tmp_path / name
        command = [sys.executable, "datafree_kd.py", *distill_args("cmi", cifar10_root, teacher_checkpoint, run),
                   "--device", "cuda", "--deterministic", "--epochs", "2"]
        result = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        states.append(torch.load(run / "last.pth", weights_only=False)["state_dict"])
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_rank_nccl_run_keeps_ranks_identical(tmp_path, cifar10_root, teacher_checkpoint):
    fingerprints = run_two_ranks([*distill_args("cudfkd", cifar10_root, teacher_checkpoint, tmp_path / "ddp"),
                                  "--device", "cuda", "--epochs", "2", "--ngf", "8"])
    assert fingerprints["0"] == fingerprints["1"]
