"""Mixed precision and torch.compile (issue: speed): both paths run on CPU and agree."""
from __future__ import annotations

import json
import os

import pytest
import torch

import datafree_kd
from conftest import narrow_generator, tiny_method_flags
import registry
from datafree.run import numerics


def test_bf16_and_fp32_forward_agree_on_a_fixed_batch():
    torch.manual_seed(0)
    model = registry.get_model("wrn16_2", 10).eval()
    images = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        reference = model(images)
        with numerics.autocast(torch.device("cpu"), torch.bfloat16):
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
                          "--batch_size", "16", "--ngf", "8", *tiny_method_flags(method)])
        losses[precision] = json.loads((run / "metrics.jsonl").read_text())["loss_student"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.1)


def test_compile_flag_falls_back_to_eager_when_compilation_fails(monkeypatch, capsys):
    def broken_compile(module, *args, **kwargs):
        def fail(*call_args, **call_kwargs):
            raise RuntimeError("no compiler backend here")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = registry.get_model("wrn16_1", 10).eval()
    wrapped = numerics.maybe_compile(model, enabled=True)
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(wrapped(images), model(images))
    assert "running eager" in capsys.readouterr().out
    assert numerics.unwrap(wrapped) is model
    monkeypatch.setattr(torch, "compile", lambda module: (_ for _ in ()).throw(RuntimeError("no dynamo")))
    assert numerics.maybe_compile(model, enabled=True) is model


@pytest.mark.parametrize("avx512_bf16, amx, precision, noted", [
    (False, False, "bf16", True),    # AVX2-only CPU: bf16 is emulated, far slower than fp32
    (True, False, "bf16", False),
    (False, True, "bf16", False),
    (False, False, "fp32", False),
])
def test_bf16_on_a_cpu_without_bf16_instructions_gets_a_note(avx512_bf16, amx, precision, noted,
                                                            monkeypatch, capsys):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    dtype = numerics.resolve_precision(precision, torch.device("cpu"))
    assert dtype == (torch.bfloat16 if precision == "bf16" else None)
    assert ("note: this CPU has no bf16 instructions" in capsys.readouterr().out) is noted


@pytest.mark.parametrize("native_bf16", [True, False])
def test_cpu_description_names_the_vector_instructions_and_bf16(native_bf16, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    description = numerics.device_description(torch.device("cpu"))
    assert f"{os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}" in description
    assert description.endswith(", bf16" if native_bf16 else ", no bf16")
    assert numerics.environment_info(torch.device("cpu"))["cpu"] == description


@pytest.mark.parametrize("device, deterministic, autotune", [
    ("cuda", False, True),   # default on a GPU: autotuned convolutions
    ("cuda", True, False),   # --deterministic: reproducible kernels, no autotuning
    ("cpu", False, False),   # nothing to tune on the CPU
])
def test_cudnn_autotuning_unless_deterministic(device, deterministic, autotune, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not autotune)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", not deterministic)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        numerics.configure_backends(torch.device(device), deterministic)
        assert torch.backends.cudnn.benchmark is autotune
        assert torch.backends.cudnn.deterministic is deterministic
        assert torch.are_deterministic_algorithms_enabled() is deterministic
        if deterministic:
            assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert ("CUBLAS_WORKSPACE_CONFIG" in os.environ) is (deterministic and device == "cuda")
    finally:
        torch.use_deterministic_algorithms(False)


def build_fp16_synthesizer(method, tmp_path, cifar10_root, tiny_teacher):
    from datafree.run.distributed import DistributedContext

    args = datafree_kd.build_parser().parse_args([
        "--method", method, "--dataset", "cifar10", "--teacher", "tiny_cnn", "--student", "tiny_cnn",
        "--teacher_ckpt", str(tiny_teacher), "--data_root", str(cifar10_root), "--save_dir", str(tmp_path),
        "--device", "cpu", "--precision", "fp16", "--batch_size", "8", "--g_steps", "2",
        *narrow_generator(method), *tiny_method_flags(method),
        *(["--adv", "1"] if method == "cudfkd" else [])])
    options = datafree_kd.resolve_options(args)
    device = torch.device("cpu")
    teacher = datafree_kd.load_teacher(options, device, channels_last=False)
    parts = datafree_kd.build_training(options, teacher, DistributedContext(),
                                       numerics.Numerics(device, torch.float16, False))
    parts.synthesizer.begin_epoch(0)
    return parts.synthesizer


@pytest.mark.parametrize("method", sorted(registry.METHODS))
def test_fp16_synthesis_steps_go_through_a_loss_scaler(method, tmp_path, cifar10_root, tiny_teacher, monkeypatch):
    """--precision fp16: every synthesis optimizer steps through a GradScaler (§7 item 22), so a
    step with overflowing gradients is skipped (weights unchanged) and the scale backs off."""
    synthesizer = build_fp16_synthesizer(method, tmp_path, cifar10_root, tiny_teacher)
    scaler = synthesizer.scaler
    assert scaler.is_enabled()
    synthesizer.synthesize()   # (the scale may already back off here: 65536 overflows fp16 easily)
    scale = scaler.get_scale()
    trained = synthesizer.persistent_parameters()
    before = [p.detach().clone() for p in trained]

    original_scale = scaler.scale
    monkeypatch.setattr(scaler, "scale", lambda loss: original_scale(loss) * float("inf"))
    synthesizer.synthesize()                      # every gradient overflows: every step is skipped
    backed_off = scaler.get_scale()
    preset = registry.get_method(method).TEST_PRESET
    assert backed_off <= scale / 2 ** preset.fp16_backoffs
    assert (len(before) > 0) == preset.persistent_synthesis and all(torch.equal(b, a) for b, a in zip(before, trained))
    assert synthesizer.state_dict()["scaler"]["scale"] == backed_off   # resumed with the same scale


def test_precision_defaults_to_fp32_and_evaluation_always_runs_in_fp32(tmp_path, cifar10_root, tiny_teacher):
    """The reference numerics by default (§7 item 22); a bf16 run is still measured in fp32, so its
    logged accuracy equals an fp32 evaluation of the same weights, and its precision is recorded."""
    from datafree.run.evaluation import evaluate
    from tiny_models import TinyCNN

    common = ["--method", "cudfkd", "--dataset", "cifar10", "--teacher", "tiny_cnn", "--student", "tiny_cnn",
              "--teacher_ckpt", str(tiny_teacher), "--data_root", str(cifar10_root), "--device", "cpu",
              "--no_progress", "--epochs", "1", "--ep_steps", "2", "--kd_steps", "2", "--batch_size", "16",
              "--ngf", "8"]
    default = datafree_kd.resolve_options(datafree_kd.build_parser().parse_args(common))
    assert default["precision"] == "fp32"
    run = tmp_path / "bf16"
    summary = datafree_kd.main([*common, "--save_dir", str(run), "--precision", "bf16"])
    assert summary["precision"] == "bf16" and json.loads((run / "summary.json").read_text())["precision"] == "bf16"
    record = json.loads((run / "metrics.jsonl").read_text())
    student = TinyCNN(10)
    student.load_state_dict(torch.load(run / "last.pth", weights_only=True)["state_dict"])
    options = {**default, "save_dir": str(run)}
    measured = evaluate(student, datafree_kd.load_test_batches(options, numerics.Numerics(torch.device("cpu"),
                                                                                          None, False)))
    assert (measured["acc1"], measured["loss"]) == (record["acc1"], record["loss"])
