"""What the quickstart's CuDFKD command computes, pinned on hand-checked values.

The quickstart resolves ``--method cudfkd --loss kl --adv 0.5 --batch_size 128 ...`` through the
driver's defaults. A change of any default that decides what is learned (per-sample vs batch
self-paced weights, the adversarial agreement mask, T, λ_0, α, the adversarial temperature / ×τ²,
the entropy sign) moves one of the numbers below. Each number is written out by hand from the
formulas of METHODS.md §5.2–§5.4, with two classes so that it can be checked on paper.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import datafree_kd
from datafree.synthesis.hooks import freeze
from datafree.models import Normalizer
from datafree.synthesis.base import SynthesisSetup
from datafree.synthesis.cudfkd import CuDFKDSynthesizer

QUICKSTART = ["--method", "cudfkd", "--dataset", "cifar10", "--teacher", "wrn16_2", "--student", "wrn16_1",
              "--teacher_ckpt", "unused.pth", "--data_root", "unused", "--epochs", "8", "--ep_steps", "100",
              "--kd_steps", "10", "--batch_size", "128", "--loss", "kl", "--adv", "0.5", "--device", "cpu"]


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def quickstart_synthesizer() -> CuDFKDSynthesizer:
    options = datafree_kd.resolve_options(datafree_kd.build_parser().parse_args(QUICKSTART))
    # The generator width does not enter the pinned values; 8 keeps the test fast.
    typed = datafree_kd.method_options(options).replace(ngf=8)
    setup = SynthesisSetup(teacher=freeze(tiny_net()), student=tiny_net(),
                           normalizer=Normalizer((0.5,) * 3, (0.25,) * 3), num_classes=2, dataset="cifar10",
                           teacher_name="wrn16_2", batch_size=2, synthesis_batch_size=2, epochs=8,
                           device=torch.device("cpu"), autocast_dtype=None, channels_last=False, seed=0)
    return CuDFKDSynthesizer(setup, typed)


def test_quickstart_student_loss_is_per_sample_self_paced_kl_at_t20():
    synthesizer = quickstart_synthesizer()
    # sample 1: teacher (0, 0) -> p_T = (1/2, 1/2); student (20·ln(13/12), 0) -> p_S = (13/25, 12/25)
    # sample 2: identical logits -> ℓ_2 = 0
    teacher_logits = torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64)
    student_logits = torch.tensor([[20 * math.log(13 / 12), 0.0], [1.0, -1.0]], dtype=torch.float64)
    kl_1 = 0.5 * math.log(0.5 / (13 / 25)) + 0.5 * math.log(0.5 / (12 / 25))   # = ½·ln(625/624)
    loss_1 = 400 * kl_1                                                          # ×T², T = 20
    assert loss_1 == pytest.approx(0.3202563, rel=1e-6)
    for kd_step, pace in ((0, 2.0), (100, 2.01)):                               # λ = λ_0 + 1e-4·k, λ_0 = 2
        v_1 = (1 + math.exp(-pace)) / (1 + math.exp(loss_1 - pace))              # curr_log weight
        loss, terms = synthesizer.student_loss(student_logits, teacher_logits, kd_step=kd_step)
        assert loss.item() == pytest.approx(v_1 * loss_1 / 2, rel=1e-6)          # (1/B) Σ v_i ℓ_i, v_2 = 1
        assert terms["mean_sample_weight"].item() == pytest.approx((v_1 + 1) / 2, rel=1e-6)
    # the numbers themselves, so that a changed formula and a changed test cannot agree by accident
    loss, terms = synthesizer.student_loss(student_logits, teacher_logits, kd_step=0)
    assert loss.item() == pytest.approx(0.1532331, rel=1e-5)
    assert terms["mean_sample_weight"].item() == pytest.approx(0.9784704, rel=1e-5)
    # one weight on the batch mean (--spl_granularity batch) would give v(ℓ̄)·ℓ̄ = 0.156881, not this


def test_quickstart_generator_terms_mask_the_adversarial_kl_and_maximise_entropy(monkeypatch):
    synthesizer = quickstart_synthesizer()
    synthesizer.begin_epoch(0)                 # adv weight 0.5 from the first epoch
    synthesizer.bn_hook = None                 # the BN term is pinned elsewhere (hooks tests)
    teacher_logits = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    student_logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])   # sample 1 agrees with the teacher, sample 2 does not
    monkeypatch.setattr(synthesizer, "teacher_forward", lambda images, return_features=False:
                        (teacher_logits, torch.zeros(2, 4)) if return_features else teacher_logits)
    monkeypatch.setattr(synthesizer, "student_forward", lambda images, *args, **kwargs: student_logits)
    terms = synthesizer.generator_terms(torch.zeros(2, 3, 32, 32))
    weight, adversarial = terms["adv"]
    assert weight == 0.5

    def kl(p, q):
        return sum(a * math.log(a / b) for a, b in zip(p, q))

    def softmax(z):
        e = [math.exp(v) for v in z]
        return [v / sum(e) for v in e]

    # −(1/B) Σ m_i·τ²·KL(σ(t_i/τ) ‖ σ(s_i/τ)), τ = 3, m = (1, 0): only the agreeing sample counts
    expected = -(1 / 2) * 9 * kl(softmax([1 / 3, 0]), softmax([2 / 3, 0]))
    assert adversarial.item() == pytest.approx(expected, rel=1e-5)
    assert adversarial.item() == pytest.approx(-0.0594350, rel=1e-4)   # unmasked: −0.3071456
    # entropy term enters with weight −balance = −20 (maximised), on the batch-mean p at T = 20
    weight, entropy = terms["entropy"]
    p = softmax([1 / 20, 0])
    assert weight == -20.0
    assert entropy.item() == pytest.approx(-sum(v * math.log(v) for v in p), rel=1e-5)
