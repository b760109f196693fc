"""PRE-DFKD (docs/METHODS.md §16): the networks, the loss formulas by hand, the replay batch, the VAE
step in the loop's post-KD-step hook, and the bad-input rows."""
from __future__ import annotations

import math

import pytest
import torch

import datafree_kd
from datafree.errors import UsageError
from datafree.models.memory import Encoder, novel_generator
from datafree.synthesis.criterions import information_entropy_log10, js_divergence_ref
from datafree.synthesis.predfkd import PREDFKDSynthesizer, kld_loss, latent_moment_loss
from datafree.synthesis.replay import js_disagreement
from tiny_models import tiny_synthesis_setup

KD = ["--method", "predfkd", "--teacher", "resnet34", "--student", "resnet18"]


def make_synthesizer(**given) -> PREDFKDSynthesizer:
    setup = tiny_synthesis_setup()
    return PREDFKDSynthesizer(setup, PREDFKDSynthesizer.Options.resolve(
        {"nz": 16, "ngf": 8, "kd_steps": 5, "ep_steps": 10, **given}))


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_at_nz_1000():
    # §16.3: Linear 1000->8192 8,200,192 + convs 147,584 + 73,792 + 1,731 + BN 640; E by hand likewise.
    novel, memory = novel_generator(), novel_generator(spectral=False)
    assert (count(novel), count(memory), count(Encoder())) == (8_423_939, 8_423_939, 4_321_872)
    assert any("parametrizations" in name for name in novel.state_dict())          # spectral norm u / v kept
    assert not any("parametrizations" in name for name in memory.state_dict())
    bns = [m for m in novel.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.affine]
    assert [bn.eps for bn in bns] == [1e-5, 0.8, 0.8]                               # §16.8 item 2
    weights = [m.weight for m in memory.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert all(w.abs().max() <= 0.08 for w in weights)                              # U(-0.08, 0.08)


def test_element_mean_js_is_the_batch_mean_divided_by_c_and_the_disagreement_by_hand():
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0 * math.log(3.0), 0.0]])
    # T = 3: P = (0.5, 0.5), Q = (0.75, 0.25), M = (0.625, 0.375).
    m = (0.625, 0.375)
    kl_mp = sum(mi * math.log(mi / pi) for mi, pi in zip(m, (0.5, 0.5)))
    kl_mq = sum(mi * math.log(mi / qi) for mi, qi in zip(m, (0.75, 0.25)))
    batch_mean = 0.5 * kl_mp + 0.5 * kl_mq
    assert js_divergence_ref(student, teacher, 3.0).item() == pytest.approx(batch_mean, rel=1e-5)
    assert js_divergence_ref(student, teacher, 3.0, "elementmean").item() == pytest.approx(batch_mean / 2, rel=1e-5)
    assert js_disagreement(student, teacher).item() == pytest.approx(1 - batch_mean / 2, rel=1e-6)
    with pytest.raises(ValueError):
        js_divergence_ref(student, teacher, reduction="sum")


def test_information_entropy_in_base_10_latent_moments_and_kld_by_hand():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)]])   # p̄ = (0.5, 0.5)
    assert information_entropy_log10(logits).item() == pytest.approx(2 * 0.5 * math.log10(0.5), rel=1e-6)
    latents = torch.tensor([[1.0, 0.0], [3.0, 0.0]])   # mean (2, 0), unbiased variance (2, 0)
    # MSE(var, 1) = ((2-1)² + (0-1)²)/2 = 1; MSE(mean, 0) = (4 + 0)/2 = 2
    assert latent_moment_loss(latents).item() == pytest.approx(3.0)
    mean, log_variance = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # -½ [(1 + 0 - 1 - 1) + (1 + ln 2 - 0 - 2)] = -½ (ln 2 - 2)
    assert kld_loss(mean, log_variance).item() == pytest.approx(-0.5 * (math.log(2.0) - 2.0), rel=1e-6)


def test_kd_batches_are_b_novel_rows_plus_the_replay_batch():
    synthesizer = make_synthesizer()
    images = synthesizer.sample()
    assert images.shape == (16 + 2, 3, 32, 32) and synthesizer.novel_images.shape[0] == 16
    assert torch.equal(images[:16], synthesizer.novel_images)
    assert not synthesizer.memory_generator.training and synthesizer.image_generator.training
    terms = synthesizer.synthesize()
    assert {"loss_oh", "loss_ie", "loss_act", "loss_adv", "loss_generator"} <= set(terms)
    assert synthesizer.student_loss(torch.ones(2, 3), torch.zeros(2, 3), 0)[0].item() == pytest.approx(1.0)


def test_the_vae_steps_after_the_first_kd_steps_of_each_round_and_only_then():
    synthesizer = make_synthesizer(vae_updates=2)
    calls = []
    synthesizer.vae_step = lambda first_round: calls.append(first_round)
    for kd_step in range(10):   # two rounds of 5 KD steps
        synthesizer.sample()
        synthesizer.after_student_step(kd_step)
    assert calls == [True, True, False, False]


def test_the_vae_step_trains_memory_and_encoder_and_the_reference_gradient_flag():
    for clean in (False, True):
        synthesizer = make_synthesizer(vae_clean_grad=clean)
        synthesizer.sample()
        before = [p.detach().clone() for p in (*synthesizer.memory_generator.parameters(),
                                               *synthesizer.encoder.parameters())]
        first = synthesizer.vae_step(first_round=True)
        later = synthesizer.vae_step(first_round=False)
        after = [*synthesizer.memory_generator.parameters(), *synthesizer.encoder.parameters()]
        assert all(not torch.equal(a, b) for a, b in zip(before, after) if b.dim() > 1)
        assert torch.isfinite(first["loss_vae_rec"]) and torch.isfinite(later["loss_vae_kld"])
        assert synthesizer.vae_prior_grad is (not clean)


def test_state_round_trips_vae_optimizers_and_spectral_buffers():
    synthesizer = make_synthesizer()
    synthesizer.synthesize()
    synthesizer.sample()
    synthesizer.after_student_step(0)
    state = synthesizer.state_dict()
    assert {"memory_generator", "encoder", "memory_optimizer", "encoder_optimizer", "image_generator"} <= set(state)
    assert any(name.endswith("_u") for name in state["image_generator"])
    other = make_synthesizer()
    other.load_state_dict(state)
    assert torch.equal(other.sample(), synthesizer.sample())


def test_published_rows_resolve():
    options = datafree_kd.resolve_options(datafree_kd.build_parser().parse_args(KD))
    assert (options["batch_size"], options["epochs"], options["ep_steps"], options["kd_steps"], options["lr_g"],
            options["nz"], options["gen_bn_eps"], options["ie"], options["act"], options["js_T"],
            options["js_reduction"], options["weight_decay"]) == \
        (1024, 400, 360, 10, 0.02, 1000, 0.8, 5.0, 0.1, 3.0, "elementmean", 5e-4)


@pytest.mark.parametrize("flags, message", [
    (["--generator", "G-L", "--gen_output", "sigmoid"], "--method predfkd and mbdfkd need --generator G-D"),
    (["--gen_sample_mode", "last", "--kd_steps", "1", "--ep_steps", "1"], "--gen_sample_mode last does not apply"),
    (["--vae_half", "0"], "--vae_half must be above 0"),
    (["--mem_ratio", "0"], "--mem_ratio must be above 0"),
    (["--js_reduction", "sum"], "invalid choice: 'sum'"),
])
def test_bad_inputs_are_refused_in_one_line(flags, message):
    with pytest.raises(UsageError, match=message) as refused:
        datafree_kd.resolve_options(datafree_kd.build_parser().parse_args([*KD, *flags]))
    assert "\n" not in str(refused.value)


def test_the_vae_reconstruction_falls_as_it_trains_on_a_fixed_novel_batch():
    synthesizer = make_synthesizer()
    synthesizer.sample()
    losses = [synthesizer.vae_step(first_round=True)["loss_vae_rec"].item() for _ in range(15)]
    assert losses[-1] < losses[0], losses
