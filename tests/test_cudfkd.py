"""CuDFKD (METHODS.md §5): curriculum options end to end, the weighted student loss, the ramp."""
from __future__ import annotations

import json
import math

import pytest
import torch

import datafree_kd
from datafree.synthesis import curriculum
from datafree.synthesis.hooks import freeze
from datafree.models import Normalizer
from datafree.synthesis.base import SynthesisSetup
from datafree.synthesis.cudfkd import CuDFKDSynthesizer
from tiny_models import TinyCNN

TINY = ["--epochs", "2", "--ep_steps", "6", "--kd_steps", "3", "--ngf", "8", "--batch_size", "16"]


@pytest.mark.parametrize("curr_option", ["none", "curr_hard", "curr_soft", "curr_log"])
def test_each_curriculum_option_runs_and_logs_its_schedule(curr_option, tmp_path, cifar10_root, tiny_teacher):
    run = tmp_path / curr_option
    datafree_kd.main(["--method", "cudfkd", "--dataset", "cifar10", "--teacher", "tiny_cnn", "--student", "tiny_cnn",
                      "--teacher_ckpt", str(tiny_teacher), "--data_root", str(cifar10_root), "--save_dir", str(run),
                      "--device", "cpu", "--no_progress", "--curr_option", curr_option, "--adv", "0.5",
                      "--grad_adv", "1", "--begin_fraction", "0", "--end_fraction", "1", "--loss", "kl", *TINY])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["adv_weight"] for r in records] == [0.5, 0.5]  # adv_weight(1) = ramp(0) = α_0 + (0 − b)γ, b = 0
    assert records[0]["pace"] == pytest.approx(2.0)
    assert records[1]["pace"] == pytest.approx(2.0 + 1e-4 * 6)
    assert "loss_adv" in records[0] and "loss_entropy" in records[0] and "loss_bn" in records[0]
    if curr_option == "none":
        assert "mean_sample_weight" not in records[0]
    else:
        assert 0 < records[0]["mean_sample_weight"] <= 1
        assert records[0]["generated_difficulty"] >= 0


def make_synthesizer(**overrides) -> CuDFKDSynthesizer:
    teacher, student = freeze(TinyCNN(10)), TinyCNN(10)
    setup = SynthesisSetup(teacher=teacher, student=student, normalizer=Normalizer((0.5,) * 3, (0.25,) * 3),
                           num_classes=10, dataset="cifar10", teacher_name="tiny_cnn", batch_size=4,
                           synthesis_batch_size=4, epochs=8, device=torch.device("cpu"), autocast_dtype=None,
                           channels_last=False, seed=0)
    options = CuDFKDSynthesizer.Options.resolve({"ngf": 8, "lambda_0": 2.0, "lambda_growth": 0.5, **overrides})
    return CuDFKDSynthesizer(setup, options)


def test_student_loss_applies_per_sample_self_paced_weights():
    synthesizer = make_synthesizer(loss="l1", curr_option="curr_hard")
    teacher_logits = torch.zeros(3, 2)
    student_logits = torch.tensor([[1.0, 1.0], [3.0, 3.0], [2.0, 4.0]], requires_grad=True)
    # ℓ = (1, 3, 3); pace at step 2 = 2 + 0.5·2 = 3 -> hard weights v = [ℓ < 3] = (1, 0, 0)
    loss, terms = synthesizer.student_loss(student_logits, teacher_logits, kd_step=2)
    assert loss.item() == pytest.approx(1.0 / 3)
    assert terms["mean_sample_weight"].item() == pytest.approx(1 / 3)
    assert terms["generated_difficulty"].item() == pytest.approx(1.0)
    loss.backward()
    assert torch.allclose(student_logits.grad[1:], torch.zeros(2, 2))  # the hard samples get no gradient
    soft = make_synthesizer(loss="l1", curr_option="curr_soft")
    loss, _ = soft.student_loss(student_logits.detach(), teacher_logits, kd_step=4)  # λ = 4: v = 0.75, .25, .25
    assert loss.item() == pytest.approx((0.75 * 1 + 0.25 * 3 + 0.25 * 3) / 3)
    plain = make_synthesizer(loss="l1", curr_option="none")
    loss, terms = plain.student_loss(student_logits.detach(), teacher_logits, kd_step=0)
    assert loss.item() == pytest.approx(7 / 3) and terms == {}


def test_adversarial_weight_follows_the_ramp_and_skips_the_student_when_zero(monkeypatch):
    synthesizer = make_synthesizer(adv=0.0, grad_adv=0.5, begin_fraction=0.25, end_fraction=0.75)
    weights = [synthesizer.begin_epoch(epoch)["adv_weight"] for epoch in range(8)]
    assert weights == [curriculum.adv_weight(e, 8, 0.0, 0.5, 0.25, 0.75) for e in range(8)]
    assert weights == [0, 0, 0, 0, 0.5, 1.0, 1.5, 2.0]
    calls = []
    monkeypatch.setattr(synthesizer, "student_forward",
                        lambda images: calls.append(1) or torch.zeros(images.shape[0], 10))
    synthesizer.begin_epoch(0)
    terms = synthesizer.synthesize()
    assert "loss_adv" not in terms and calls == []
    synthesizer.begin_epoch(5)
    terms = synthesizer.synthesize()
    assert "loss_adv" in terms and calls == [1]


def test_entropy_term_is_maximised_with_the_scripts_sign():
    synthesizer = make_synthesizer(balance=20.0)
    images = torch.rand(4, 3, 32, 32)
    terms = synthesizer.generator_terms(synthesizer.normalizer(images))
    weight, entropy = terms["entropy"]
    assert weight == -20.0 and entropy.item() > 0  # loss adds lmda_ent·H with lmda_ent = −20


def self_paced_weight(loss: float, pace: float, kind: str) -> float:
    """§5.3's table, written out: hard, soft (linear) and log (logistic) weights."""
    if kind == "hard":
        return 1.0 if loss < pace else 0.0
    if kind == "soft":
        return max(0.0, 1.0 - loss / pace)
    return (1.0 + math.exp(-pace)) / (1.0 + math.exp(loss - pace))


def kl_per_sample(student: list[float], temperature: float) -> float:
    """T²·KL(uniform ‖ softmax(s/T)) for a zero teacher (two classes)."""
    scaled = [value / temperature for value in student]
    log_norm = math.log(sum(math.exp(value) for value in scaled))
    return temperature ** 2 * sum(0.5 * (math.log(0.5) - (value - log_norm)) for value in scaled)


@pytest.mark.parametrize("kind", ["hard", "soft", "log"])
@pytest.mark.parametrize("loss_type", ["l1", "kl"])
@pytest.mark.parametrize("granularity", ["sample", "batch"])
def test_spl_granularity_on_hand_computed_values(kind, loss_type, granularity):
    """--spl_granularity sample: (1/B) Σ v(ℓ_i, λ) ℓ_i; batch: v(ℓ̄, λ)·ℓ̄ with ℓ̄ the batch-mean loss (§5.3)."""
    synthesizer = make_synthesizer(loss=loss_type, curr_option=f"curr_{kind}", spl_granularity=granularity, T=2.0)
    student = [[1.0, 1.0], [3.0, 3.0], [2.0, 4.0]]
    losses = ([sum(abs(v) for v in row) / 2 for row in student] if loss_type == "l1"
              else [kl_per_sample(row, 2.0) for row in student])
    pace = 2.0 + 0.5 * 2   # λ_0 + α·k at kd_step 2
    if granularity == "sample":
        weights = [self_paced_weight(loss, pace, kind) for loss in losses]
        expected = sum(w * loss for w, loss in zip(weights, losses)) / 3
        mean_weight = sum(weights) / 3
    else:
        mean_loss = sum(losses) / 3
        mean_weight = self_paced_weight(mean_loss, pace, kind)
        expected = mean_weight * mean_loss
    loss, terms = synthesizer.student_loss(torch.tensor(student), torch.zeros(3, 2), kd_step=2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert terms["mean_sample_weight"].item() == pytest.approx(mean_weight, rel=1e-6)
