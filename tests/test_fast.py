"""FastDFKD (docs/METHODS.md §10): meta-generator, clone per synthesis, FOMAML / Reptile, momentum BN loss,
the first-layer reset, the variant table and resumption across the warm-up boundary (§10.12).

Unit tests build the synthesizer directly on an untrained tiny CNN (random BN running statistics) or,
where learning matters, on the tiny trained teacher of ``conftest.py``.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import datafree_kd
from datafree.augment import random_crop_flip
from datafree.synthesis.criterions import adversarial_kl_masked
from datafree.run.distributed import DistributedContext
from datafree.errors import UsageError
from datafree.synthesis.hooks import BatchNormStatisticsHook, freeze
from datafree.models import Normalizer
from datafree.run.numerics import Numerics
from datafree.synthesis.base import SynthesisSetup
from datafree.synthesis.fast import FAST_VARIANTS, REPTILE_SCALE, FastSynthesizer
from tiny_models import TinyCNN

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
SYNTHESIS_BATCH = 6


def make_setup(seed: int = 0) -> SynthesisSetup:
    """A frozen untrained TinyCNN teacher with non-trivial BN running statistics and a tiny student."""
    torch.manual_seed(seed)
    teacher = TinyCNN()
    for module in teacher.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return SynthesisSetup(teacher=freeze(teacher), student=TinyCNN(), normalizer=Normalizer(CIFAR10_MEAN, CIFAR10_STD),
                          num_classes=10, dataset="cifar10", teacher_name="tiny", batch_size=8,
                          synthesis_batch_size=SYNTHESIS_BATCH, epochs=4, device=torch.device("cpu"),
                          autocast_dtype=None, channels_last=False, seed=seed)


def fast_options(**overrides: Any) -> FastSynthesizer.Options:
    """Resolved options of a tiny Fast synthesizer (``derive`` fills the variant and the reset epoch)."""
    return FastSynthesizer.Options.resolve({"nz": 16, "ngf": 8, "warmup": 0, "g_steps": 3, **overrides})


def make_synthesizer(**overrides: Any) -> FastSynthesizer:
    synthesizer = FastSynthesizer(make_setup(), fast_options(**overrides))
    synthesizer.begin_epoch(0)
    return synthesizer


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


# ------------------------------------------------------------------ (i) clone and meta update
def test_each_synthesis_starts_from_a_copy_of_the_meta_generator_and_moves_it():
    synthesizer = make_synthesizer()
    fast_generator = synthesizer.fast_generator
    first_forward: list[tuple[dict[str, torch.Tensor], bool]] = []
    calls = {"count": 0}

    def record(module, inputs):
        if calls["count"] % synthesizer.g_steps == 0:   # first inner iteration of a synthesis
            first_forward.append((snapshot(module), module.training))
        calls["count"] += 1

    fast_generator.register_forward_pre_hook(record)
    metas = []
    for _ in range(2):
        metas.append(snapshot(synthesizer.meta_generator))
        synthesizer.synthesize()
    assert len(first_forward) == 2 and synthesizer.fast_generator is fast_generator   # one module, reused
    for meta, (clone, training) in zip(metas, first_forward):
        assert training and meta.keys() == clone.keys()
        assert all(torch.equal(meta[name], clone[name]) for name in meta)   # weights and BN buffers
    # After a synthesis the meta weights have moved, and the adapted clone differs from them.
    after = snapshot(synthesizer.meta_generator)
    for name, _ in synthesizer.meta_generator.named_parameters():
        assert not torch.equal(after[name], metas[1][name]), name
    assert not torch.equal(fast_generator.linear.weight, synthesizer.meta_generator.linear.weight)
    assert len(synthesizer.pool) == 2 * SYNTHESIS_BATCH


# ------------------------------------------------------------------ (ii) FOMAML = sum of the inner gradients
def test_fomaml_meta_gradient_is_the_sum_of_the_inner_gradients():
    synthesizer = make_synthesizer(adv=1.0, g_steps=3)
    synthesizer.synthesize()                      # momentum memory now active; meta Adam has state
    saved = copy.deepcopy(synthesizer.state_dict())
    meta_before = [p.detach().clone() for p in synthesizer.meta_generator.parameters()]
    synthesizer.synthesize()
    meta_gradient = [p.grad.clone() for p in synthesizer.meta_generator.parameters()]

    # The same synthesis by hand, from the same state: clone, k plain Adam steps, gradients summed.
    synthesizer.load_state_dict(saved)
    generator = copy.deepcopy(synthesizer.meta_generator).train()
    assert all(torch.equal(a, b) for a, b in zip(generator.parameters(), meta_before))
    latents = synthesizer.randn(SYNTHESIS_BATCH, 16).requires_grad_(True)
    targets = synthesizer.random_labels(SYNTHESIS_BATCH)
    optimizer = torch.optim.Adam([{"params": generator.parameters(), "lr": synthesizer.synthesis_lr},
                                  {"params": [latents], "lr": FAST_VARIANTS["fast10"]["lr_z"]}], betas=(0.5, 0.999))
    inner_gradients = []
    for _ in range(3):
        images = generator(latents)
        view = synthesizer.normalizer(random_crop_flip(images, padding=4, generator=synthesizer.augmentation_stream))
        teacher_logits = synthesizer.teacher(view)
        loss = (10.0 * synthesizer.bn_hook.loss + 0.4 * F.cross_entropy(teacher_logits, targets)
                + 1.0 * adversarial_kl_masked(synthesizer.student_forward(view), teacher_logits,
                                              temperature=1.0, scale_by_temperature_squared=False))
        optimizer.zero_grad()
        loss.backward()
        inner_gradients.append([p.grad.clone() for p in generator.parameters()])
        optimizer.step()
    summed = [sum(step[i] for step in inner_gradients) for i in range(len(meta_gradient))]
    for expected, actual in zip(summed, meta_gradient):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-7)
    # Not just the last (or first) inner gradient: the sum differs from each of them.
    for step in (0, -1):
        assert any(not torch.allclose(a, g) for a, g in zip(meta_gradient, inner_gradients[step]))
    # The meta Adam uses lr = k·lr_g (§10.5).
    assert synthesizer.meta_optimizer.param_groups[0]["lr"] == pytest.approx(3 * synthesizer.synthesis_lr)


def test_reptile_meta_gradient_is_67_times_the_weight_change():
    synthesizer = make_synthesizer(fast_meta="reptile")
    before = [p.detach().clone() for p in synthesizer.meta_generator.parameters()]
    synthesizer.synthesize()
    for theta, adapted, meta in zip(before, synthesizer.fast_generator.parameters(),
                                    synthesizer.meta_generator.parameters()):
        torch.testing.assert_close(meta.grad, REPTILE_SCALE * (theta - adapted.detach()))
        assert not torch.equal(meta.detach(), theta)


# ------------------------------------------------------------------ (iii) momentum BN hook (datafree/synthesis/hooks.py)
def test_momentum_bn_loss_by_hand():
    """r = ‖σ̂² − blend(σ²)‖ + ‖μ̂ − blend(μ)‖; after the first update blend = (1−m)·batch + m·memory (§10.4)."""
    layer = nn.BatchNorm2d(2)
    layer.running_mean.copy_(torch.tensor([0.0, 1.0]))
    layer.running_var.copy_(torch.tensor([1.0, 2.0]))
    model = nn.Sequential(layer).eval()
    hook = BatchNormStatisticsHook(model, momentum=0.9)

    def batch(channel0: list[float], channel1: list[float]) -> torch.Tensor:   # N = 2 samples of 1×1 pixels
        return torch.tensor([[channel0[0], channel1[0]], [channel0[1], channel1[1]]]).view(2, 2, 1, 1)

    model(batch([1.0, 3.0], [0.0, 0.0]))          # μ = (2, 0), σ² = (1, 0)
    assert hook.loss.item() == pytest.approx(math.hypot(0.0, 2.0) + math.hypot(-2.0, 1.0))   # plain §3.2 term
    hook.update_momentum()                         # memory ← (μ, σ²) of that forward
    with torch.no_grad():
        model(batch([5.0, 9.0], [7.0, 7.0]))       # a KD forward: not recorded, not used by the update
    model(batch([0.0, 0.0], [2.0, 4.0]))           # μ = (0, 3), σ² = (0, 1)
    blended_mean, blended_var = (0.1 * 0 + 0.9 * 2, 0.1 * 3 + 0.9 * 0), (0.1 * 0 + 0.9 * 1, 0.1 * 1 + 0.9 * 0)
    expected = (math.hypot(1 - blended_var[0], 2 - blended_var[1])
                + math.hypot(0 - blended_mean[0], 1 - blended_mean[1]))
    assert hook.loss.item() == pytest.approx(expected)
    hook.update_momentum()                         # memory ← 0.9·memory + 0.1·latest
    mean, var = hook.blended[0]
    torch.testing.assert_close(mean, torch.tensor([0.9 * 2 + 0.1 * 0, 0.9 * 0 + 0.1 * 3]))
    torch.testing.assert_close(var, torch.tensor([0.9 * 1 + 0.1 * 0, 0.9 * 0 + 0.1 * 1]))
    restored = BatchNormStatisticsHook(nn.Sequential(nn.BatchNorm2d(2)), momentum=0.9)
    restored.load_state_dict(hook.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.blended[0], hook.blended[0]))


# ------------------------------------------------------------------ (iv) meta-learning works
def build_on_tiny_teacher(tiny_teacher, tmp_path, *extra: str) -> FastSynthesizer:
    args = datafree_kd.build_parser().parse_args([
        "--method", "fast", "--dataset", "cifar10", "--teacher", "tiny_cnn", "--student", "tiny_cnn",
        "--teacher_ckpt", str(tiny_teacher), "--data_root", str(tmp_path), "--save_dir", str(tmp_path / "run"),
        "--device", "cpu", "--batch_size", "8", "--warmup", "0", "--adv", "0", "--ngf", "8", "--g_steps", "2", *extra])
    options = datafree_kd.resolve_options(args)
    teacher = datafree_kd.load_teacher(options, torch.device("cpu"), channels_last=False)
    torch.manual_seed(0)   # the meta-generator's default init, as the driver seeds it
    parts = datafree_kd.build_training(options, teacher, DistributedContext(),
                                       Numerics(torch.device("cpu"), None, False))
    parts.synthesizer.begin_epoch(0)
    return parts.synthesizer


def test_meta_learning_lowers_the_loss_of_the_initialisation(tiny_teacher, tmp_path):
    """The inner loss at iteration 0 (the loss of G_θ itself on fresh latents, momentum BN term included)
    falls over 15 syntheses; with the meta step switched off (meta lr 0) it does not. Across seeds the
    ratio (syntheses 11–15 over 1–5) was 0.62–0.77 with the meta step and 0.96–1.0 without."""
    ratios = {}
    for meta_lr in (None, 0.0):
        synthesizer = build_on_tiny_teacher(tiny_teacher, tmp_path)
        if meta_lr is not None:
            for group in synthesizer.meta_optimizer.param_groups:
                group["lr"] = meta_lr
        first = [synthesizer.synthesize()["loss_synthesis_first"].item() for _ in range(15)]
        ratios[meta_lr] = (sum(first[10:]) / 5) / (sum(first[:5]) / 5)
    assert ratios[None] < 0.85, ratios
    assert ratios[0.0] > 0.93, ratios


# ------------------------------------------------------------------ (v) the first-layer reset
def test_reset_touches_only_the_linear_and_first_bn_once_and_keeps_the_meta_adam_state():
    synthesizer = make_synthesizer(reset_l0_epoch=2)
    synthesizer.synthesize()
    adam_state = copy.deepcopy(synthesizer.meta_optimizer.state_dict())
    before = snapshot(synthesizer.meta_generator)
    synthesizer.begin_epoch(1)
    assert all(torch.equal(value, synthesizer.meta_generator.state_dict()[name]) for name, value in before.items())
    synthesizer.begin_epoch(2)
    after = snapshot(synthesizer.meta_generator)
    reset = {"linear.weight", "linear.bias", "conv_blocks.0.weight", "conv_blocks.0.bias"}
    assert {name for name in before if not torch.equal(before[name], after[name])} == reset
    assert torch.equal(after["linear.bias"], torch.zeros_like(after["linear.bias"]))
    assert torch.equal(after["conv_blocks.0.bias"], torch.zeros_like(after["conv_blocks.0.bias"]))
    linear_weight = after["linear.weight"]          # 16 × 1024 draws of N(0, 0.02)
    assert abs(linear_weight.mean().item()) < 0.002 and linear_weight.std().item() == pytest.approx(0.02, rel=0.05)
    gamma = after["conv_blocks.0.weight"]           # N(0, 0.02), sic — not around 1
    assert gamma.abs().max().item() < 0.1
    # Idempotent: the epoch's begin_epoch again (a mid-epoch resume), or a restored state, resets nothing.
    synthesizer.begin_epoch(2)
    assert all(torch.equal(value, synthesizer.meta_generator.state_dict()[name]) for name, value in after.items())
    restored = FastSynthesizer(make_setup(), fast_options(reset_l0_epoch=2))
    restored.load_state_dict(synthesizer.state_dict())
    restored.begin_epoch(2)
    assert all(torch.equal(value, restored.meta_generator.state_dict()[name]) for name, value in after.items())
    # The meta Adam state survives the reset.
    kept = synthesizer.meta_optimizer.state_dict()["state"]
    assert kept.keys() == adam_state["state"].keys()
    assert all(torch.equal(kept[key]["exp_avg"], adam_state["state"][key]["exp_avg"]) for key in kept)
    # -1 never resets.
    never = make_synthesizer(reset_l0_epoch=-1)
    untouched = snapshot(never.meta_generator)
    for epoch in range(3):
        never.begin_epoch(epoch)
    assert all(torch.equal(value, never.meta_generator.state_dict()[name]) for name, value in untouched.items())


def test_adversarial_gate_opens_one_epoch_before_the_first_kd_epoch():
    """[REF] gate ``n ≥ warmup`` at one synthesis per epoch ⇔ ``epoch ≥ warmup − 1`` (§10.7); the student is
    not queried while it is closed."""
    synthesizer = make_synthesizer(warmup=3, adv=1.1)
    queries = []
    synthesizer.student.register_forward_hook(lambda *args: queries.append(1))
    assert synthesizer.begin_epoch(1) == {"adv_weight": 0.0}
    assert "loss_adv" not in synthesizer.synthesize() and not queries
    assert synthesizer.begin_epoch(2) == {"adv_weight": 1.1}
    assert "loss_adv" in synthesizer.synthesize() and len(queries) == synthesizer.g_steps


# ------------------------------------------------------------------ (vi) variants and options
def resolve(*flags: str) -> dict[str, Any]:
    args = datafree_kd.build_parser().parse_args(["--method", "fast", "--teacher", "wrn40_2", "--student", "wrn16_1",
                                                  *flags])
    return datafree_kd.resolve_options(args)


@pytest.mark.parametrize("variant", sorted(FAST_VARIANTS))
def test_fast_variant_fills_the_table_and_explicit_flags_win(variant):
    options = resolve("--fast_variant", variant)
    assert {key: options[key] for key in ("g_steps", "lr_g", "lr_z")} == FAST_VARIANTS[variant]
    explicit = resolve("--fast_variant", variant, "--g_steps", "7", "--lr_z", "0.5")
    assert (explicit["g_steps"], explicit["lr_z"], explicit["lr_g"]) == (7, 0.5, FAST_VARIANTS[variant]["lr_g"])


def test_published_defaults_and_the_reset_epoch():
    options = resolve()
    assert (options["g_steps"], options["lr_g"], options["lr_z"]) == (10, 2e-3, 0.01)   # Fast-10
    assert options["synthesis_batch_size"] == options["batch_size"] == 256
    assert (options["epochs"], options["warmup"], options["lr"], options["eta_min"], options["T"]) == (220, 20, 0.2,
                                                                                                      2e-4, 20.0)
    assert (options["adv"], options["bn"], options["oh"], options["bn_mmt"], options["fast_meta"]) == (
        1.1, 10.0, 0.4, 0.9, "fomaml")
    assert options["reset_l0_epoch"] == 139                       # warmup + 119 (§10.6)
    assert resolve("--warmup", "5")["reset_l0_epoch"] == 124
    assert resolve("--reset_l0_epoch", "-1")["reset_l0_epoch"] == -1
    assert resolve("--dataset", "cifar100")["g_steps"] == 10       # same values for CIFAR-100 (§10.8)
    with pytest.raises(UsageError, match="--lr_z must be positive"):
        resolve("--lr_z", "-0.1")


# ------------------------------------------------------------------ fp16: the meta step is skipped on overflow
def test_reptile_meta_step_is_skipped_when_an_inner_gradient_overflows(monkeypatch):
    setup = make_setup()
    setup.autocast_dtype = torch.float16
    synthesizer = FastSynthesizer(setup, fast_options(fast_meta="reptile"))
    synthesizer.begin_epoch(0)
    for _ in range(10):   # until the scale has backed off enough for a real meta step (Adam then has momentum)
        previous = [p.detach().clone() for p in synthesizer.persistent_parameters()]
        synthesizer.synthesize()
        if not all(torch.equal(b, a) for b, a in zip(previous, synthesizer.persistent_parameters())):
            break
    assert any(state["exp_avg"].abs().sum() > 0 for state in synthesizer.meta_optimizer.state.values())
    before = [p.detach().clone() for p in synthesizer.persistent_parameters()]
    scale = synthesizer.scaler.get_scale()
    original_prior = synthesizer.teacher_prior

    def overflowing_prior(*args, **kwargs):   # every inner loss (and so every inner gradient) is infinite
        terms, logits = original_prior(*args, **kwargs)
        return {name: (weight, value * float("inf")) for name, (weight, value) in terms.items()}, logits

    monkeypatch.setattr(synthesizer, "teacher_prior", overflowing_prior)
    synthesizer.synthesize()
    # The inner steps were skipped (θ'_k = θ, a zero Reptile difference), and so was the meta step: a zero
    # gradient would still have moved θ through the meta Adam's momentum.
    assert synthesizer.scaler.get_scale() < scale
    assert all(torch.equal(b, a) for b, a in zip(before, synthesizer.persistent_parameters()))


# ------------------------------------------------------------------ (vii) resume across the warm-up boundary
def test_resume_across_warmup_and_reset_equals_an_uninterrupted_run(tmp_path, cifar10_root, tiny_teacher):
    def args(run, *extra):
        return ["--method", "fast", "--dataset", "cifar10", "--teacher", "tiny_cnn", "--student", "tiny_cnn",
                "--teacher_ckpt", str(tiny_teacher), "--data_root", str(cifar10_root), "--save_dir", str(run),
                "--device", "cpu", "--no_progress", "--batch_size", "8", "--epochs", "3", "--warmup", "2",
                "--reset_l0_epoch", "1", "--ep_steps", "4", "--kd_steps", "2", "--g_steps", "2", "--ngf", "8", *extra]

    datafree_kd.main(args(tmp_path / "full"))
    pieces = tmp_path / "pieces"
    stopped = datafree_kd.main(args(pieces, "--max_minutes", "1e-9"))          # in warm-up epoch 0, gate shut
    assert stopped["position"] == {"epoch": 0, "round": 1, "kd_in_round": 0, "kd_step": 0}
    stopped = datafree_kd.main(args(pieces, "--max_minutes", "1e-9", "--resume"))   # at the end of epoch 0
    assert stopped["position"] == {"epoch": 1, "round": 0, "kd_in_round": 0, "kd_step": 0}
    stopped = datafree_kd.main(args(pieces, "--max_minutes", "1e-9", "--resume"))   # after the reset, gate open
    assert stopped["position"] == {"epoch": 1, "round": 1, "kd_in_round": 0, "kd_step": 0}
    datafree_kd.main(args(pieces, "--resume"))                                  # begin_epoch(1) again, then KD
    expected = torch.load(tmp_path / "full" / "last.pth", weights_only=True)
    resumed = torch.load(pieces / "last.pth", weights_only=True)
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    for key, value in expected["synthesizer"]["meta_generator"].items():
        assert torch.equal(value, resumed["synthesizer"]["meta_generator"][key]), key
    assert resumed["synthesizer"]["reset_done"] is True


# ------------------------------------------------------------------ the ImageNet reference's synthesizer (§19.3)
def test_meta_learned_latents_take_one_reptile_adam_step_towards_their_inner_copy():
    synthesizer = make_synthesizer(fast_meta="reptile", reptile_scale=1.0, lr_z_meta=5e-3, lr_g_meta=1e-4)
    assert [group["lr"] for group in synthesizer.meta_optimizer.param_groups] == [1e-4, 5e-3]
    before = synthesizer.meta_latents.detach().clone()
    seen = []
    original = synthesizer.forward_float
    synthesizer.forward_float = lambda module, latents: (seen.append((latents, latents.detach().clone())),
                                                         original(module, latents))[1]
    synthesizer.synthesize()
    inner, start = seen[0][0].detach(), seen[0][1]
    assert torch.equal(start, before)                     # the inner loop starts from the meta latents
    assert all(entry[0] is seen[0][0] for entry in seen)  # one inner latent batch, stepped in place
    # Reptile gradient meta - inner; Adam's first step moves each element by lr_z_meta against its sign
    difference = inner - before
    moved = synthesizer.meta_latents.detach() - before
    clear = difference.abs() > 1e-4
    assert clear.float().mean() > 0.5
    assert torch.allclose(moved[clear], 5e-3 * torch.sign(difference[clear]), rtol=1e-3, atol=0)


def test_meta_latents_are_redrawn_with_a_fresh_meta_adam_every_z_reinit_syntheses_and_resume_exactly():
    synthesizer = make_synthesizer(fast_meta="reptile", lr_z_meta=5e-3, z_reinit=2)
    first = synthesizer.meta_latents
    synthesizer.synthesize()
    assert synthesizer.meta_latents is first
    synthesizer.synthesize()                              # the 2nd synthesis re-draws (the reference's ep % 2 == 0)
    assert synthesizer.meta_latents is not first
    state = synthesizer.state_dict()
    assert state["syntheses"] == 2 and torch.equal(state["meta_latents"], synthesizer.meta_latents.detach())
    resumed = make_synthesizer(fast_meta="reptile", lr_z_meta=5e-3, z_reinit=2)
    resumed.load_state_dict(copy.deepcopy(state))   # as from last.pth: no optimizer moment shared with the original
    synthesizer.synthesize()
    resumed.synthesize()
    assert torch.equal(resumed.meta_latents, synthesizer.meta_latents)
    assert torch.equal(resumed.pool.images, synthesizer.pool.images)
    assert all(torch.equal(a, b) for a, b in zip(resumed.meta_generator.parameters(),
                                                 synthesizer.meta_generator.parameters()))


def test_resized_synthesis_views_never_show_the_crop_padding():
    ones = torch.ones(16, 3, 32, 32)
    assert torch.equal(make_synthesizer(synthesis_crop="resized").synthesis_view(ones), ones)
    assert (make_synthesizer().synthesis_view(ones) == 0).any()   # the 4-px zero padding of the default crop


def test_z_reinit_needs_meta_learned_latents():
    with pytest.raises(UsageError, match="--z_reinit re-draws meta-learned latents: it needs --lr_z_meta"):
        fast_options(z_reinit=50)
