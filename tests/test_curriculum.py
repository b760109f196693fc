"""Tests for datafree.synthesis.curriculum: self-paced weights (§5.3), pace (§5.4), adversarial ramp (§5.5)."""
from __future__ import annotations

import math

import pytest
import torch

from datafree.synthesis import curriculum

# §5.3 "Example values" of the logistic weight, λ -> values at ℓ = 0, 0.5, 1, 2, 3, 4, 6, 8.
LOG_TABLE_LOSSES = [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0]
LOG_TABLE = {
    1.0: [1.000, 0.851, 0.684, 0.368, 0.163, 0.065, 0.009, 0.001],
    2.0: [1.000, 0.928, 0.830, 0.568, 0.305, 0.135, 0.020, 0.003],
    3.4: [1.000, 0.979, 0.947, 0.829, 0.619, 0.366, 0.071, 0.010],
    12.0: [1.000, 1.000, 1.000, 1.000, 1.000, 1.000, 0.998, 0.982],
}

# §5.5 ramp table: (E, begin, end, α_0, γ, first changed epoch, its value, plateau, plateau start).
RAMP_TABLE = [
    (250, 0.25, 0.75, 0.0, 0.5, 64, 0.5, 62.5, 188),      # C10 r34→r18 main
    (250, 0.25, 0.75, 1.0, 0.5, 64, 1.5, 63.5, 188),      # C10 r34→r18 "agg"
    (250, 0.25, 0.75, 1.0, 0.0, None, None, 1.0, None),   # C10 "mem"
    (250, 0.25, 0.75, 1.0, 0.0, None, None, 1.0, None),   # C10 wrn40_2→wrn40_1
    (250, 0.25, 0.75, 0.5, 0.05, 64, 0.55, 6.75, 188),    # C10 wrn40_2→wrn16_1 (2022-09)
    (300, 0.2, 0.8, 1.0, 0.0, None, None, 1.0, None),     # C100 r34→r18 (2022-11)
    (300, 0.2, 0.8, 0.0, 0.35, 62, 0.35, 63.0, 241),      # C100 r34→r18 (2022-09)
    (300, 0.2, 0.75, 0.0, 0.15, 62, 0.15, 24.75, 226),    # C100 wrn40_2→wrn16_2
]


# ----------------------------------------------------------------------------- weights
@pytest.mark.parametrize("pace", sorted(LOG_TABLE))
def test_log_weights_reproduce_the_example_table(pace: float) -> None:
    losses = torch.tensor(LOG_TABLE_LOSSES, dtype=torch.float64)
    weights = curriculum.self_paced_weights(losses, pace, "log")
    assert [round(value, 3) for value in weights.tolist()] == LOG_TABLE[pace]
    # and the closed form (1 + e^{-λ}) / (1 + e^{ℓ-λ}) at full precision
    expected = [(1 + math.exp(-pace)) / (1 + math.exp(loss - pace)) for loss in LOG_TABLE_LOSSES]
    assert weights.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_log_weight_at_the_pace_is_half_of_one_plus_exp_minus_pace() -> None:
    weights = curriculum.self_paced_weights(torch.tensor([2.5]), 2.5, "log")
    assert weights.item() == pytest.approx(0.5 * (1 + math.exp(-2.5)), rel=1e-6)


def test_log_weights_do_not_overflow_for_huge_losses() -> None:
    weights = curriculum.self_paced_weights(torch.tensor([1e4, 0.0], dtype=torch.float32), 2.0, "log")
    assert weights.tolist() == [0.0, pytest.approx(1.0)]


def test_hard_weights_are_strictly_below_the_pace() -> None:
    losses = torch.tensor([0.5, 1.0, 1.5, 1.5000001, 3.0], dtype=torch.float64)
    weights = curriculum.self_paced_weights(losses, 1.5, "hard")
    assert weights.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert weights.dtype == torch.float64


def test_soft_weights_are_linear_and_clipped_at_zero() -> None:
    losses = torch.tensor([0.0, 0.5, 1.5, 2.0, 3.0], dtype=torch.float64)
    weights = curriculum.self_paced_weights(losses, 2.0, "soft")
    assert weights.tolist() == [1.0, 0.75, 0.25, 0.0, 0.0]


def test_weights_accept_a_tensor_pace() -> None:
    losses = torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64)
    pace = torch.tensor(2.0, dtype=torch.float64)
    for kind in curriculum.WEIGHT_KINDS:
        assert torch.equal(curriculum.self_paced_weights(losses, pace, kind),
                           curriculum.self_paced_weights(losses, 2.0, kind))


def test_weights_carry_no_gradient() -> None:
    losses = torch.tensor([0.3, 1.2, 2.5], requires_grad=True)
    for kind in curriculum.WEIGHT_KINDS:
        weights = curriculum.self_paced_weights(losses * 2, 2.0, kind)
        assert not weights.requires_grad and weights.grad_fn is None


def test_bad_kind_and_pace_are_rejected() -> None:
    with pytest.raises(ValueError):
        curriculum.self_paced_weights(torch.zeros(2), 1.0, "linear")
    with pytest.raises(ValueError):
        curriculum.self_paced_weights(torch.zeros(2), 0.0, "soft")


def test_weight_kind_maps_every_option() -> None:
    assert curriculum.CURRICULUM_OPTIONS == ("none", "curr_hard", "curr_soft", "curr_log")
    assert [curriculum.weight_kind(option) for option in curriculum.CURRICULUM_OPTIONS] == [None, "hard", "soft", "log"]
    with pytest.raises(ValueError):
        curriculum.weight_kind("log")


# ----------------------------------------------------------------------------- weighted loss
def test_weighted_student_loss_soft_hand_case() -> None:
    losses = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64, requires_grad=True)
    loss, weights, difficulty = curriculum.weighted_student_loss(losses, 2.0, "soft")
    # v = [0.75, 0.5, 0]; loss = (0.375 + 0.5 + 0) / 3; difficulty = 0.875 / 1.25
    assert weights.tolist() == [0.75, 0.5, 0.0]
    assert loss.item() == pytest.approx(0.875 / 3, rel=1e-12)
    assert difficulty.item() == pytest.approx(0.7, rel=1e-12)
    assert not weights.requires_grad and not difficulty.requires_grad
    loss.backward()
    assert losses.grad.tolist() == pytest.approx([0.25, 0.5 / 3, 0.0], rel=1e-12)


def test_weighted_student_loss_log_gradient_is_weight_over_batch() -> None:
    values = [0.0, 1.0, 2.0, 6.0]
    losses = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    loss, weights, difficulty = curriculum.weighted_student_loss(losses, 2.0, "log")
    expected_weights = [(1 + math.exp(-2.0)) / (1 + math.exp(v - 2.0)) for v in values]
    assert weights.tolist() == pytest.approx(expected_weights, rel=1e-12)
    weighted = sum(w * v for w, v in zip(expected_weights, values))
    assert loss.item() == pytest.approx(weighted / 4, rel=1e-12)
    assert difficulty.item() == pytest.approx(weighted / sum(expected_weights), rel=1e-12)
    loss.backward()
    assert losses.grad.tolist() == pytest.approx([w / 4 for w in expected_weights], rel=1e-12)


def test_weighted_student_loss_all_weights_zero_gives_zero_difficulty() -> None:
    losses = torch.tensor([1.0, 2.0], requires_grad=True)
    loss, weights, difficulty = curriculum.weighted_student_loss(losses, 0.5, "hard")
    assert weights.tolist() == [0.0, 0.0]
    assert loss.item() == 0.0
    assert difficulty.item() == 0.0 and not torch.isnan(difficulty)


def test_weighted_student_loss_without_curriculum_is_the_mean() -> None:
    losses = torch.tensor([1.0, 2.0, 6.0], dtype=torch.float64)
    loss, weights, difficulty = curriculum.weighted_student_loss(losses, 2.0, None)
    assert loss.item() == 3.0 and difficulty.item() == 3.0 and weights.tolist() == [1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------- pace
def test_pace_schedule_values_of_the_two_runs() -> None:
    steps_per_epoch = 400
    # CIFAR-10, 250 epochs: λ_0 = 2, α = 1e-4 -> +0.04 per epoch, 12.0 at the end
    growth10 = curriculum.default_pace_growth("cifar10")
    assert growth10 == 1e-4
    assert curriculum.pace(0, 2.0, growth10) == 2.0
    assert curriculum.pace(steps_per_epoch, 2.0, growth10) == pytest.approx(2.04, abs=1e-12)
    assert curriculum.pace(250 * steps_per_epoch, 2.0, growth10) == pytest.approx(12.0, abs=1e-12)
    # CIFAR-100, 300 epochs: λ_0 = 1, α = 2e-5 -> +0.008 per epoch, 3.4 at the end
    growth100 = curriculum.default_pace_growth("cifar100")
    assert growth100 == 2e-5
    assert curriculum.pace(steps_per_epoch, 1.0, growth100) == pytest.approx(1.008, abs=1e-12)
    assert curriculum.pace(300 * steps_per_epoch, 1.0, growth100) == pytest.approx(3.4, abs=1e-12)
    assert curriculum.default_pace_growth("tiny_imagenet") == 2e-5
    assert curriculum.DEFAULT_PACE_GROWTH == {"cifar10": 1e-4}


def test_pace_accepts_a_tensor_step() -> None:
    value = curriculum.pace(torch.tensor(100), 2.0, 1e-2)
    assert isinstance(value, torch.Tensor) and value.item() == pytest.approx(3.0)


def test_pace_growth_from_end() -> None:
    assert curriculum.pace_growth_from_end(2.0, 12.0, 100_000) == pytest.approx(1e-4, rel=1e-12)
    assert curriculum.pace_growth_from_end(1.0, 3.4, 120_000) == pytest.approx(2e-5, rel=1e-12)
    with pytest.raises(ValueError):
        curriculum.pace_growth_from_end(1.0, 2.0, 0)


# ----------------------------------------------------------------------------- adversarial ramp
@pytest.mark.parametrize("row", RAMP_TABLE)
def test_adv_weight_reproduces_the_ramp_table(row: tuple) -> None:
    epochs, begin, end, initial, gamma, first_epoch, first_value, plateau, plateau_epoch = row
    weights = [curriculum.adv_weight(epoch, epochs, initial, gamma, begin, end) for epoch in range(epochs)]
    assert weights[0] == initial
    if first_epoch is None:  # γ = 0: constant
        assert weights == [plateau] * epochs
        return
    begin_epoch = math.floor(epochs * begin)
    # warm-up at α_0 through epoch b + 1, then the first change
    assert weights[:first_epoch] == [initial] * first_epoch
    assert first_epoch == begin_epoch + 2
    assert weights[first_epoch] == pytest.approx(first_value, abs=1e-12)
    # linear ramp of γ per epoch up to the plateau
    for epoch in range(first_epoch, plateau_epoch):
        assert weights[epoch] == pytest.approx(initial + (epoch - 1 - begin_epoch) * gamma, abs=1e-12)
    assert weights[plateau_epoch - 1] == pytest.approx(plateau - gamma, abs=1e-12)
    assert weights[plateau_epoch:] == pytest.approx([plateau] * (epochs - plateau_epoch), abs=1e-12)


def test_adv_weight_hand_values_main_run() -> None:
    # E = 250, b = 62, e = 187: ramp(99) = (99 - 62) * 0.5 = 18.5 is used in epoch 100
    assert curriculum.adv_weight(100, 250, 0.0, 0.5, 0.25, 0.75) == 18.5
    assert curriculum.adv_weight(63, 250, 0.0, 0.5, 0.25, 0.75) == 0.0
    assert curriculum.adv_weight(187, 250, 0.0, 0.5, 0.25, 0.75) == 62.0
    assert curriculum.adv_weight(188, 250, 0.0, 0.5, 0.25, 0.75) == 62.5


def test_adv_weight_with_equal_fractions_never_ramps() -> None:
    weights = [curriculum.adv_weight(epoch, 10, 0.5, 1.0, 0.5, 0.5) for epoch in range(10)]
    assert weights == [0.5] * 10
