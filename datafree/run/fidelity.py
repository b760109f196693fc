"""Student–teacher fidelity metrics: Agreement@1 and probability loyalty (METHODS.md §6.3).

Computed on the test set with both networks in eval mode (``--log_fidelity``):

* Agreement@1 = percentage of images with ``argmax s = argmax t``;
* probability loyalty [REF] ``prob_loyalty_ref`` = mean over images of ``1 − sqrt(D_JS)``,
  ``D_JS`` the Jensen–Shannon *distance* (= sqrt of the JS divergence, natural log), i.e.
  ``1 − JSdiv^{1/4}``; NaNs are skipped;
* the more natural ``prob_loyalty_js`` = mean of ``1 − D_JS = 1 − JSdiv^{1/2}``.

Per-sample functions return device tensors; :class:`FidelityMeter` accumulates them on the
device and reads them back once, in :meth:`FidelityMeter.compute`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: Added to both probability vectors before the JS divergence, as in [REF] (§6.3).
PROBABILITY_EPSILON = 1e-8


def agreement_count(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Number of samples with ``argmax s_i == argmax t_i`` (0-d int64 tensor) (§6.3)."""
    return (student_logits.argmax(dim=1) == teacher_logits.argmax(dim=1)).sum()


def _accurate_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device supports it (not MPS), else float32.

    JS divergences of nearly identical distributions are tiny, and the 4th / square roots
    below magnify float32 rounding (a JS error of 1e-7 becomes ~0.02 loyalty), hence float64.
    """
    return torch.float32 if device.type == "mps" else torch.float64


def js_divergence_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample Jensen–Shannon divergence used by the loyalty metrics (§6.3), shape ``(B,)``.

    ``P = σ(s) + 1e-8``, ``Q = σ(t) + 1e-8`` (no renormalisation), ``M = (P + Q)/2``:

        JSdiv_i = ½ Σ_c P_ic log(P_ic/M_ic) + ½ Σ_c Q_ic log(Q_ic/M_ic)     (natural log)

    Computed in float64 (see :func:`_accurate_dtype`). Rounding can leave a value slightly
    below 0, which the roots of the loyalty metrics turn into NaN; those are skipped when
    averaging, as in [REF].
    """
    dtype = _accurate_dtype(student_logits.device)
    student_prob = F.softmax(student_logits.to(dtype), dim=1) + PROBABILITY_EPSILON
    teacher_prob = F.softmax(teacher_logits.to(dtype), dim=1) + PROBABILITY_EPSILON
    mixture = 0.5 * (student_prob + teacher_prob)
    student_term = (student_prob * (student_prob / mixture).log()).sum(dim=1)
    teacher_term = (teacher_prob * (teacher_prob / mixture).log()).sum(dim=1)
    return 0.5 * (student_term + teacher_term)


def prob_loyalty_ref(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample [REF] probability loyalty ``1 − sqrt(D_JS) = 1 − JSdiv^{1/4}``, shape ``(B,)`` (§6.3).

    May contain NaN (negative rounding residue of JSdiv); average with :func:`nan_skipping_sum`.
    """
    return 1.0 - js_divergence_per_sample(student_logits, teacher_logits).pow(0.25)


def prob_loyalty_js(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample loyalty ``1 − D_JS = 1 − JSdiv^{1/2}`` (the JS-distance variant of §6.3), shape ``(B,)``."""
    return 1.0 - js_divergence_per_sample(student_logits, teacher_logits).sqrt()


def nan_skipping_sum(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of the non-NaN values, number of non-NaN values)`` as 0-d tensors (§6.3 "NaNs are skipped")."""
    return torch.nansum(values), (~torch.isnan(values)).sum()


class FidelityMeter:
    """Accumulates Agreement@1 and both loyalty metrics over test batches (§6.3).

    ``update`` keeps running sums as tensors on the logits' device (no host sync);
    ``compute`` reads them back once and returns
    ``{"agreement1": percent, "prob_loyalty_ref": mean, "prob_loyalty_js": mean}``,
    the loyalty means taken over non-NaN samples.
    """

    def __init__(self) -> None:
        self.sample_count = 0
        self.agreement: torch.Tensor | None = None
        self.loyalty_ref_sum: torch.Tensor | None = None
        self.loyalty_ref_count: torch.Tensor | None = None
        self.loyalty_js_sum: torch.Tensor | None = None
        self.loyalty_js_count: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
        """Add one batch of student and teacher logits ``(B, C)``."""
        agreement = agreement_count(student_logits, teacher_logits)
        ref_sum, ref_count = nan_skipping_sum(prob_loyalty_ref(student_logits, teacher_logits))
        js_sum, js_count = nan_skipping_sum(prob_loyalty_js(student_logits, teacher_logits))
        if self.agreement is None:
            self.agreement, self.loyalty_ref_sum, self.loyalty_ref_count = agreement, ref_sum, ref_count
            self.loyalty_js_sum, self.loyalty_js_count = js_sum, js_count
        else:
            self.agreement = self.agreement + agreement
            self.loyalty_ref_sum = self.loyalty_ref_sum + ref_sum
            self.loyalty_ref_count = self.loyalty_ref_count + ref_count
            self.loyalty_js_sum = self.loyalty_js_sum + js_sum
            self.loyalty_js_count = self.loyalty_js_count + js_count
        self.sample_count += student_logits.shape[0]

    def compute(self) -> dict[str, float]:
        """Agreement@1 in percent and the NaN-skipping mean loyalties (NaN if every value was NaN)."""
        if self.agreement is None or self.sample_count == 0:
            raise RuntimeError("FidelityMeter.compute() called before any non-empty update()")
        totals = torch.stack([self.agreement.to(self.loyalty_ref_sum.dtype), self.loyalty_ref_sum,
                              self.loyalty_ref_count.to(self.loyalty_ref_sum.dtype), self.loyalty_js_sum,
                              self.loyalty_js_count.to(self.loyalty_ref_sum.dtype)]).tolist()
        agreement, ref_sum, ref_count, js_sum, js_count = totals
        return {
            "agreement1": 100.0 * agreement / self.sample_count,
            "prob_loyalty_ref": ref_sum / ref_count if ref_count > 0 else float("nan"),
            "prob_loyalty_js": js_sum / js_count if js_count > 0 else float("nan"),
        }

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self.__init__()
