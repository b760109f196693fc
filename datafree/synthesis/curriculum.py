"""CuDFKD curriculum: self-paced sample weights, the pace schedule and the adversarial ramp (§5.3-§5.5).

* Self-paced weights ``v_i = v(ℓ_i, λ)`` re-weight the per-sample student loss
  ``L_S = (1/B) Σ_i v_i ℓ_i``; samples much harder than the pace ``λ`` are down-weighted (§5.3).
* The pace grows linearly with the global KD-step counter: ``λ(k) = λ_0 + α·k`` (§5.4).
* The generator's adversarial weight follows a warm-up / linear ramp / plateau schedule, a pure
  function of the epoch being run (§5.5, [CLEAN]: independent of the curriculum option).
* AdaDFKD's negative window slides from the easiest to the hardest negatives, also a pure
  function of the epoch (``hard_factor``, §12.4).

Tensor functions never synchronise with the host; schedule functions work on Python numbers.
"""
from __future__ import annotations

import math

import torch

#: Values of ``--curr_option`` (§5.3); ``none`` trains on the plain batch loss.
CURRICULUM_OPTIONS = ("none", "curr_hard", "curr_soft", "curr_log")

#: Self-paced weight functions (§5.3 table).
WEIGHT_KINDS = ("hard", "soft", "log")

#: Pace growth α per KD step hard-coded by dataset name in [REF] (§5.4); other datasets use
#: :data:`OTHER_DATASET_PACE_GROWTH`.
DEFAULT_PACE_GROWTH = {"cifar10": 1e-4}
OTHER_DATASET_PACE_GROWTH = 2e-5


def weight_kind(curr_option: str) -> str | None:
    """Map ``--curr_option`` to a weight kind: ``none`` → None, ``curr_<kind>`` → ``<kind>`` (§5.3)."""
    if curr_option not in CURRICULUM_OPTIONS:
        raise ValueError(f"curr_option must be one of {CURRICULUM_OPTIONS}, got {curr_option!r}")
    if curr_option == "none":
        return None
    return curr_option.removeprefix("curr_")


def _exp(value: float | torch.Tensor) -> float | torch.Tensor:
    """``e^value`` for a Python number or a tensor (keeps Python numbers on the host)."""
    return torch.exp(value) if isinstance(value, torch.Tensor) else math.exp(value)


def self_paced_weights(losses: torch.Tensor, pace: float | torch.Tensor, kind: str) -> torch.Tensor:
    """Self-paced weights ``v_i = v(ℓ_i, λ)`` for per-sample losses ``ℓ`` at pace ``λ`` (§5.3).

    * ``hard``: ``v = 1 if ℓ < λ else 0``
    * ``soft`` (linear): ``v = max(0, 1 − ℓ/λ)``
    * ``log`` (logistic): ``v = (1 + e^{−λ}) / (1 + e^{ℓ − λ})`` — 1 at ℓ = 0, ≈ ½(1 + e^{−λ})
      at ℓ = λ, → 0 for ℓ ≫ λ; evaluated as ``(1 + e^{−λ})·sigmoid(λ − ℓ)`` to avoid overflow.

    The weights are computed from detached losses under ``no_grad``: they re-weight the
    gradient of ``ℓ`` but carry none themselves. The regulariser ``g`` of the table is not
    used by the reference and is not computed. Same shape and dtype as ``losses``.
    """
    if kind not in WEIGHT_KINDS:
        raise ValueError(f"kind must be one of {WEIGHT_KINDS}, got {kind!r}")
    if not isinstance(pace, torch.Tensor) and pace <= 0:
        raise ValueError(f"pace must be positive, got {pace}")
    with torch.no_grad():
        losses = losses.detach()
        if kind == "hard":
            return (losses < pace).to(losses.dtype)
        if kind == "soft":
            return (1.0 - losses / pace).clamp_min(0.0)
        return (1.0 + _exp(-pace)) * torch.sigmoid(pace - losses)


def weighted_student_loss(per_sample_losses: torch.Tensor, pace: float | torch.Tensor,
                          kind: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Self-paced student objective of CuDFKD (§5.3).

    Returns ``(loss, sample_weights, generated_difficulty)`` with

        v_i                  = self_paced_weights(ℓ, λ, kind)        (no gradient)
        loss                 = (1/B) Σ_i v_i ℓ_i                     (gradient through ℓ only)
        generated_difficulty = Σ_i v_i ℓ_i / Σ_i v_i                 (detached; 0 when Σ v = 0)

    ``kind=None`` (``--curr_option none``) gives unit weights, i.e. the plain mean loss.
    The Σ v = 0 guard uses ``torch.where`` so no value is read back to the host.
    """
    if kind is None:
        sample_weights = torch.ones_like(per_sample_losses.detach())
    else:
        sample_weights = self_paced_weights(per_sample_losses, pace, kind)
    loss = (sample_weights * per_sample_losses).mean()
    with torch.no_grad():
        weighted_sum = (sample_weights * per_sample_losses.detach()).sum()
        weight_sum = sample_weights.sum()
        generated_difficulty = torch.where(weight_sum > 0, weighted_sum / weight_sum,
                                           torch.zeros_like(weighted_sum))
    return loss, sample_weights, generated_difficulty


def pace(step: int | torch.Tensor, lambda_0: float, growth: float) -> float | torch.Tensor:
    """Pace ``λ(k) = λ_0 + α·k`` with ``k`` the number of KD steps since the start of training (§5.4).

    ``k`` counts all epochs and is never reset. [REF] caps it at k = 5·10⁸, which no run
    reaches, so no cap is applied. E.g. CIFAR-10 (λ_0 = 2, α = 1e-4) after 250 epochs × 400
    steps: λ = 12.0; CIFAR-100 (λ_0 = 1, α = 2e-5) after 300 × 400 steps: λ = 3.4.
    """
    return lambda_0 + growth * step


def default_pace_growth(dataset: str) -> float:
    """The [REF] pace growth α for ``dataset``: 1e-4 for CIFAR-10, 2e-5 for every other dataset (§5.4)."""
    return DEFAULT_PACE_GROWTH.get(dataset, OTHER_DATASET_PACE_GROWTH)


def pace_growth_from_end(lambda_0: float, lambda_end: float, total_steps: int) -> float:
    """α such that the pace reaches ``λ_end`` after ``total_steps`` KD steps: ``α = (λ_end − λ_0)/total_steps`` (§5.4)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    return (lambda_end - lambda_0) / total_steps


def _adversarial_ramp(ep: int, initial: float, grad_adv: float, begin_epoch: int, end_epoch: int) -> float:
    """[REF] end-of-epoch rule (§5.5): the weight set after epoch ``ep`` for epoch ``ep + 1``.

        α_0 + (ep − b)·γ    if b < ep < e
        α_0 + (e − b)·γ     if ep ≥ e
        α_0                 otherwise
    """
    if begin_epoch < ep < end_epoch:
        return initial + (ep - begin_epoch) * grad_adv
    if ep >= end_epoch:
        return initial + (end_epoch - begin_epoch) * grad_adv
    return initial


def adv_weight(epoch: int, epochs: int, adv: float, grad_adv: float,
               begin_fraction: float, end_fraction: float) -> float:
    """Adversarial weight ``α_adv`` used while running ``epoch`` (0-based) (§5.5).

    With ``b = ⌊E·begin_fraction⌋``, ``e = ⌊E·end_fraction⌋``, ``α_0 = adv``, ``γ = grad_adv``:

        adv_weight(0)  = α_0
        adv_weight(ep) = ramp(ep − 1),   ramp(x) = α_0 + (x − b)·γ  if b < x < e
                                                   α_0 + (e − b)·γ  if x ≥ e
                                                   α_0              otherwise

    i.e. warm-up at α_0 up to epoch b + 1, a linear ramp, then a plateau α_0 + (e − b)·γ from
    epoch e + 1. [CLEAN] the ramp applies whatever the curriculum option (§7 item 19).
    Example: E = 250, fractions 0.25 / 0.75 (b = 62, e = 187), α_0 = 0, γ = 0.5 → first
    change at epoch 64 (0.5), plateau 62.5 from epoch 188.
    """
    begin_epoch = math.floor(epochs * begin_fraction)
    end_epoch = math.floor(epochs * end_fraction)
    if epoch <= 0:
        return float(adv)
    return float(_adversarial_ramp(epoch - 1, adv, grad_adv, begin_epoch, end_epoch))


def hard_factor(epoch: int, epochs: int, begin_fraction: float, end_fraction: float, length: float) -> float:
    """Position ``h`` of AdaDFKD's negative window while running ``epoch`` (§12.4), constant within an epoch.

        h(ep) = min(max(0, (1 − ℓ)·(ep − ⌊b·E⌋) / ⌊E·(e − b)⌋), 1 − ℓ)

    with ``b``, ``e`` the begin / end fractions and ``ℓ`` the window length: 0 until epoch ⌊bE⌋,
    linear to ``1 − ℓ`` over ⌊E·(e − b)⌋ epochs, then constant; the window of R2M slides from the
    easiest ℓ-fraction of the negatives to the hardest one. Example: E 300, b .25, e .75, ℓ .9 →
    0 up to epoch 75, 0.1·(ep − 75)/150 in between, 0.1 from epoch 225. [CLEAN] when ⌊E·(e − b)⌋ = 0
    (where [REF] divides by zero) the window jumps from 0 to 1 − ℓ right after epoch ⌊bE⌋.
    """
    begin_epoch = math.floor(epochs * begin_fraction)
    ramp_epochs = math.floor(epochs * (end_fraction - begin_fraction))
    top = 1.0 - length
    if ramp_epochs <= 0:
        return top if epoch > begin_epoch else 0.0
    return float(min(max(0.0, top * (epoch - begin_epoch) / ramp_epochs), top))
