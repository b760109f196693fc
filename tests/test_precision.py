"""Mixed precision and torch.compile (issue: speed): both paths run on CPU and agree."""
from __future__ import annotations

import json

import pytest
import torch

import datafree_kd
import registry
from datafree import engine


def test_bf16_and_fp32_forward_agree_on_a_fixed_batch():
    torch.manual_seed(0)
    model = registry.get_model("wrn16_2", 10).eval()
    images = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        reference = model(images)
        with engine.autocast(torch.device("cpu"), torch.bfloat16):
            mixed = model(images).float()
    # bf16 keeps 8 bits of mantissa: logits agree to a few percent of their spread.
    assert (mixed - reference).abs().max() <= 0.05 * reference.abs().max() + 0.05
    assert torch.equal(mixed.argmax(1), reference.argmax(1))


@pytest.mark.parametrize("method", ["cudfkd", "cmi"])
def test_bf16_and_fp32_runs_both_finish_with_close_losses(method, tmp_path, cifar10_root, tiny_teacher):
    losses = {}
    for precision in ("fp32", "bf16"):
        run = tmp_path / precision
        datafree_kd.main(["--method", method, "--dataset", "cifar10", "--teacher", "tiny_cnn", "--student", "tiny_cnn",
                          "--teacher_ckpt", str(tiny_teacher), "--data_root", str(cifar10_root),
                          "--save_dir", str(run), "--device", "cpu", "--no_progress", "--precision", precision,
                          "--epochs", "1", "--ep_steps", "4", "--kd_steps", "2", "--g_steps", "2",
                          "--batch_size", "16", "--ngf", "8", "--bank_size", "64", "--n_neg", "16"])
        losses[precision] = json.loads((run / "metrics.jsonl").read_text())["loss_student"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.1)


def test_compile_flag_falls_back_to_eager_when_compilation_fails(monkeypatch, capsys):
    def broken_compile(module, *args, **kwargs):
        def fail(*call_args, **call_kwargs):
            raise RuntimeError("no compiler backend here")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = registry.get_model("wrn16_1", 10).eval()
    wrapped = engine.maybe_compile(model, enabled=True)
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(wrapped(images), model(images))
    assert "running eager" in capsys.readouterr().out
    assert engine.unwrap(wrapped) is model
    monkeypatch.setattr(torch, "compile", lambda module: (_ for _ in ()).throw(RuntimeError("no dynamo")))
    assert engine.maybe_compile(model, enabled=True) is model
