"""Tests for datafree.run.fidelity: Agreement@1 and probability loyalty (§6.3)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datafree.run import fidelity

EPSILON = 1e-8


def js_numpy(student: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """Per-row JS divergence of softmax + 1e-8 vectors, natural log."""
    def softmax(logits: np.ndarray) -> np.ndarray:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    p, q = softmax(student) + EPSILON, softmax(teacher) + EPSILON
    m = (p + q) / 2
    return 0.5 * (p * np.log(p / m)).sum(axis=1) + 0.5 * (q * np.log(q / m)).sum(axis=1)


def test_agreement_count() -> None:
    student = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    teacher = torch.tensor([[0.0, 5.0, 1.0], [0.0, 1.0, 0.0], [0.0, -1.0, 2.0]])
    count = fidelity.agreement_count(student, teacher)
    assert isinstance(count, torch.Tensor) and count.item() == 2


def test_identical_logits_give_full_agreement_and_loyalty() -> None:
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(0)) * 5
    meter = fidelity.FidelityMeter()
    meter.update(logits, logits.clone())
    result = meter.compute()
    assert result["agreement1"] == 100.0
    assert result["prob_loyalty_ref"] == pytest.approx(1.0, abs=1e-3)
    assert result["prob_loyalty_js"] == pytest.approx(1.0, abs=1e-3)


def test_hand_computed_js_case() -> None:
    # P = (0.5, 0.5), Q = (0.9, 0.1), M = (0.7, 0.3)
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(9.0), 0.0]])
    divergence = (0.5 * (0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3))
                  + 0.5 * (0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)))
    assert divergence == pytest.approx(0.1017492, abs=1e-7)
    computed = fidelity.js_divergence_per_sample(student, teacher)
    assert computed.item() == pytest.approx(divergence, abs=1e-7)
    assert fidelity.prob_loyalty_ref(student, teacher).item() == pytest.approx(1 - divergence ** 0.25, abs=1e-6)
    assert fidelity.prob_loyalty_js(student, teacher).item() == pytest.approx(1 - divergence ** 0.5, abs=1e-6)
    # loyalty_ref = 1 − sqrt(JS distance)
    assert fidelity.prob_loyalty_ref(student, teacher).item() == pytest.approx(1 - math.sqrt(math.sqrt(divergence)),
                                                                               abs=1e-6)


def test_per_sample_values_match_numpy_with_epsilon() -> None:
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(4, 5)) * 3, rng.normal(size=(4, 5)) * 3
    divergence = js_numpy(student, teacher)
    s, t = torch.tensor(student, dtype=torch.float32), torch.tensor(teacher, dtype=torch.float32)
    ref = fidelity.prob_loyalty_ref(s, t)
    assert ref.shape == (4,)
    np.testing.assert_allclose(ref.numpy(), 1 - divergence ** 0.25, atol=1e-6)
    np.testing.assert_allclose(fidelity.prob_loyalty_js(s, t).numpy(), 1 - divergence ** 0.5, atol=1e-6)


def test_nan_skipping_sum() -> None:
    total, count = fidelity.nan_skipping_sum(torch.tensor([1.0, float("nan"), 2.5]))
    assert total.item() == 3.5 and count.item() == 2


def test_meter_accumulates_batches() -> None:
    rng = np.random.default_rng(4)
    batches = [(rng.normal(size=(3, 4)), rng.normal(size=(3, 4))), (rng.normal(size=(2, 4)), rng.normal(size=(2, 4)))]
    meter = fidelity.FidelityMeter()
    for student, teacher in batches:
        meter.update(torch.tensor(student), torch.tensor(teacher))
    students = np.concatenate([b[0] for b in batches])
    teachers = np.concatenate([b[1] for b in batches])
    divergence = js_numpy(students, teachers)
    result = meter.compute()
    assert set(result) == {"agreement1", "prob_loyalty_ref", "prob_loyalty_js"}
    assert result["agreement1"] == pytest.approx(100.0 * (students.argmax(1) == teachers.argmax(1)).mean())
    assert result["prob_loyalty_ref"] == pytest.approx((1 - divergence ** 0.25).mean(), abs=1e-9)
    assert result["prob_loyalty_js"] == pytest.approx((1 - divergence ** 0.5).mean(), abs=1e-9)
    meter.reset()
    with pytest.raises(RuntimeError):
        meter.compute()


def test_meter_skips_nan_samples() -> None:
    student = torch.tensor([[1.0, 0.0], [float("nan"), 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    meter = fidelity.FidelityMeter()
    meter.update(student, teacher)
    result = meter.compute()
    divergence = js_numpy(student[:1].numpy(), teacher[:1].numpy())[0]
    assert result["prob_loyalty_ref"] == pytest.approx(1 - divergence ** 0.25, abs=1e-9)
    assert result["prob_loyalty_js"] == pytest.approx(1 - divergence ** 0.5, abs=1e-9)
