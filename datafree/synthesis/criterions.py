"""Distillation losses and generator priors shared by the data-free methods (METHODS.md §3.1).

Every function takes logits (or images / features) and returns a tensor; none synchronises
with the host, so all of them may run inside the training loop. Notation follows §3.1:
``s`` student logits, ``t`` teacher logits (both ``(B, C)``), ``T`` / ``τ`` a temperature,
``σ`` the softmax over classes, ``p^T_τ = σ(t/τ)``, ``p^S_τ = σ(s/τ)``.

Gradients flow through *both* logit arguments: the student loss differentiates the student
logits, while the generator objectives (§4.1-§4.5, §5.2) differentiate the teacher logits
with respect to the synthetic images. Callers detach what they do not want to train.

Where the reference implementations ([REF]) differ from the textbook definition, the [REF]
behaviour is kept under an explicit name (``js_divergence_ref``, §7 item 17) next to the
textbook one (``js_divergence``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Clamp range of the probabilities in the reference JS divergence (§3.1, §7 item 17).
JS_REF_PROBABILITY_MIN = 0.01
JS_REF_PROBABILITY_MAX = 0.99


def _check_reduction(reduction: str, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``reduction`` is one of ``allowed``."""
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")


# ----------------------------------------------------------------------------- KD losses
def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                  reduction: str = "batchmean") -> torch.Tensor:
    """Temperature-scaled KD loss ``KL_T(s, t)`` = KL(p^T_T ‖ p^S_T) × T² (§3.1).

    Element ``(i, c)``: ``T² · p^T_{T,ic} · (log p^T_{T,ic} − log p^S_{T,ic})``.

    * ``reduction="batchmean"`` → scalar ``(1/B) Σ_i Σ_c`` of the elements (the KD loss of
      DAFL/ZSKT/DFQ at T = 1 and ADI/CMI at T = 20);
    * ``reduction="none"`` → the ``(B, C)`` element matrix (still ×T²); its row sums are the
      per-sample losses of CuDFKD (§5.3, see :func:`per_sample_kl`).

    The ×T² keeps gradient magnitudes comparable across temperatures (Hinton et al.).
    """
    _check_reduction(reduction, ("batchmean", "none"))
    teacher_log_prob = F.log_softmax(teacher_logits / temperature, dim=1)
    student_log_prob = F.log_softmax(student_logits / temperature, dim=1)
    elements = teacher_log_prob.exp() * (teacher_log_prob - student_log_prob) * (temperature ** 2)
    if reduction == "none":
        return elements
    return elements.sum() / student_logits.shape[0]


def per_sample_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float = 1.0) -> torch.Tensor:
    """Per-sample KD loss ``ℓ_i = T² Σ_c p^T_{T,ic} (log p^T_{T,ic} − log p^S_{T,ic})``, shape ``(B,)``.

    The row sums of ``kl_divergence(..., reduction="none")`` (CuDFKD ``--loss kl``, §5.3).
    """
    return kl_divergence(student_logits, teacher_logits, temperature, reduction="none").sum(dim=1)


def l1_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """L1 distance between logits (DFAD, CuDFKD ``--loss l1``; §3.1, §5.3).

    ``reduction="mean"`` → ``(1/(B·C)) Σ_i Σ_c |s_ic − t_ic|``;
    ``reduction="none"`` → per-sample ``ℓ_i = (1/C) Σ_c |s_ic − t_ic|``, shape ``(B,)``.
    """
    _check_reduction(reduction, ("mean", "none"))
    per_sample = (student_logits - teacher_logits).abs().mean(dim=1)
    return per_sample if reduction == "none" else per_sample.mean()


def l2_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Squared-error distance between logits (CuDFKD ``--loss l2``; §3.1, §5.3).

    ``reduction="mean"`` → ``(1/(B·C)) Σ_i Σ_c (s_ic − t_ic)²``;
    ``reduction="none"`` → per-sample ``ℓ_i = (1/C) Σ_c (s_ic − t_ic)²``, shape ``(B,)``.
    """
    _check_reduction(reduction, ("mean", "none"))
    per_sample = (student_logits - teacher_logits).square().mean(dim=1)
    return per_sample if reduction == "none" else per_sample.mean()


def js_divergence_ref(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0, reduction: str = "batchmean") -> torch.Tensor:
    """Reference ("[REF]") Jensen–Shannon variant ``JS_τ(s, t)`` used by ADI and CuDFKD (§3.1, §7 item 17).

    ``P = σ(s/τ)``, ``Q = σ(t/τ)``, ``M = (P + Q)/2`` (from the unclamped P, Q); then P, Q and
    M are clamped elementwise into [0.01, 0.99] and

        JS_ref = ½·KL(M ‖ P) + ½·KL(M ‖ Q),   KL(M ‖ P) = (1/B) Σ_i Σ_c M_ic (log M_ic − log P_ic).

    The KL runs *from* M (the reverse of the textbook JS) and the clamp zeroes the gradient of
    saturated probabilities; both are kept on purpose for parity with the references.
    ``reduction="elementmean"`` divides by B·C instead of B (PyTorch's ``KLDivLoss()`` default, the
    PRE-DFKD reference's, §16.4): the batch-mean value divided by C.
    """
    _check_reduction(reduction, ("batchmean", "elementmean"))
    student_prob = F.softmax(student_logits / temperature, dim=1)
    teacher_prob = F.softmax(teacher_logits / temperature, dim=1)
    mixture = 0.5 * (student_prob + teacher_prob)
    student_prob = student_prob.clamp(JS_REF_PROBABILITY_MIN, JS_REF_PROBABILITY_MAX)
    teacher_prob = teacher_prob.clamp(JS_REF_PROBABILITY_MIN, JS_REF_PROBABILITY_MAX)
    mixture = mixture.clamp(JS_REF_PROBABILITY_MIN, JS_REF_PROBABILITY_MAX)
    log_mixture = mixture.log()
    batch_size = student_logits.shape[0] * (student_logits.shape[1] if reduction == "elementmean" else 1)
    kl_mixture_student = (mixture * (log_mixture - student_prob.log())).sum() / batch_size
    kl_mixture_teacher = (mixture * (log_mixture - teacher_prob.log())).sum() / batch_size
    return 0.5 * kl_mixture_student + 0.5 * kl_mixture_teacher


def js_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float = 1.0) -> torch.Tensor:
    """Textbook Jensen–Shannon divergence, batch-meaned, natural log (§3.1 "optional textbook js").

    ``P = σ(s/τ)``, ``Q = σ(t/τ)``, ``M = (P + Q)/2``:
    ``JS = (1/B) Σ_i [½·KL(P_i ‖ M_i) + ½·KL(Q_i ‖ M_i)]``, with values in [0, log 2].

    Computed in log space (``log M = logaddexp(log P, log Q) − log 2``) so that no ``log 0``
    appears; no clamping, no temperature scaling.
    """
    student_log_prob = F.log_softmax(student_logits / temperature, dim=1)
    teacher_log_prob = F.log_softmax(teacher_logits / temperature, dim=1)
    log_mixture = torch.logaddexp(student_log_prob, teacher_log_prob) - math.log(2.0)
    kl_student_mixture = student_log_prob.exp() * (student_log_prob - log_mixture)
    kl_teacher_mixture = teacher_log_prob.exp() * (teacher_log_prob - log_mixture)
    return 0.5 * (kl_student_mixture + kl_teacher_mixture).sum() / student_logits.shape[0]


# ----------------------------------------------------------------------------- generator priors
def pseudo_label_cross_entropy(teacher_logits: torch.Tensor) -> torch.Tensor:
    """One-hot loss ``L_oh = CE(t, argmax t)``, mean over the batch (DAFL, DFQ, CuDFKD; §3.1).

    ``L_oh = −(1/B) Σ_i log σ(t_i)_{argmax t_i}``; the pseudo label carries no gradient.
    """
    pseudo_labels = teacher_logits.argmax(dim=1)
    return F.cross_entropy(teacher_logits, pseudo_labels)


def _log_batch_mean_probability(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log p̄_c`` with ``p̄ = (1/B) Σ_i σ(t_i/T)``, as ``logsumexp_i log σ(t_i/T)_c − log B``.

    Working in log space keeps ``log p̄`` finite (and its gradient defined) even when a class
    probability underflows to 0 for every sample of the batch.
    """
    log_prob = F.log_softmax(teacher_logits / temperature, dim=1)
    return torch.logsumexp(log_prob, dim=0) - math.log(teacher_logits.shape[0])


def class_balance_loss(teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Class-balance prior ``L_bal = Σ_c p̄_c log p̄_c = −H(p̄)`` (DAFL "information entropy", DFQ; §3.1).

    ``p̄ = (1/B) Σ_i σ(t_i/T)`` (T = 1 for DAFL/DFQ). Minimising ``L_bal`` maximises the entropy
    of the batch-mean prediction, i.e. pushes the generator towards all classes equally.
    """
    log_mean_prob = _log_batch_mean_probability(teacher_logits, temperature)
    return (log_mean_prob.exp() * log_mean_prob).sum()


def information_entropy_log10(teacher_logits: torch.Tensor) -> torch.Tensor:
    """PRE-DFKD's information-entropy prior ``IE = Σ_c p̄_c log₁₀ p̄_c = −H(p̄)/ln 10`` (§16.4, §16.8
    item 4): :func:`class_balance_loss` at T = 1 in base-10 logarithms, as the reference computes it."""
    return class_balance_loss(teacher_logits) / math.log(10.0)


def batch_mean_entropy(teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of the batch-mean teacher prediction ``H(p̄) = −Σ_c p̄_c log p̄_c`` (CuDFKD, §5.2).

    ``p̄ = (1/B) Σ_i σ(t_i/T)`` with ``T`` the run's ``--T``. The CuDFKD generator adds
    ``lmda_ent·H`` with ``lmda_ent = −20`` (= ``−balance``), i.e. it maximises H.
    """
    return -class_balance_loss(teacher_logits, temperature)


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """DAFL activation prior ``L_act = −mean |feat|`` over all B×D entries (§3.1, §4.1).

    ``features`` are the teacher's pooled penultimate features; minimising ``L_act`` rewards
    images that excite the teacher strongly.
    """
    return -features.abs().mean()


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Total-variation prior of ADI: sum over four neighbour directions of the mean |difference| (§3.1, §4.4).

    For ``x`` of shape ``(B, C, H, W)`` (normalised space):

        TV = mean|x[..., :, :-1] − x[..., :, 1:]|        (horizontal)
           + mean|x[..., :-1, :] − x[..., 1:, :]|        (vertical)
           + mean|x[..., 1:, :-1] − x[..., :-1, 1:]|     (anti-diagonal)
           + mean|x[..., :-1, :-1] − x[..., 1:, 1:]|     (diagonal)

    each mean taken over all elements of its difference tensor.
    """
    horizontal = images[:, :, :, :-1] - images[:, :, :, 1:]
    vertical = images[:, :, :-1, :] - images[:, :, 1:, :]
    anti_diagonal = images[:, :, 1:, :-1] - images[:, :, :-1, 1:]
    diagonal = images[:, :, :-1, :-1] - images[:, :, 1:, 1:]
    return (horizontal.abs().mean() + vertical.abs().mean()
            + anti_diagonal.abs().mean() + diagonal.abs().mean())


# ----------------------------------------------------------------------------- adversarial terms
def adversarial_kl_masked(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                          scale_by_temperature_squared: bool = True, mask: bool = True) -> torch.Tensor:
    """Masked adversarial KL of CMI (§4.5), CuDFKD ``adv_type kl`` (§5.2), Fast and NAYER (§10.4, §11.5).

        L_adv = −(1/B) Σ_i m_i · w · KL(σ(t_i/τ) ‖ σ(s_i/τ)),   m_i = [argmax s_i == argmax t_i],

    with ``w = τ²`` when ``scale_by_temperature_squared`` else ``w = 1``. Only samples on which
    student and teacher still agree push the generator (the mean is over all B samples).
    ``mask=False`` sets every ``m_i = 1`` (AdaDFKD, §12.4).

    * CuDFKD: ``temperature=3`` with the ×τ² (= ×9) scaling (§5.2);
    * CMI: ``temperature=1`` without scaling (§4.5) — at τ = 1 both settings coincide, so the
      default arguments reproduce CMI exactly.

    The mask is a comparison of argmaxes and carries no gradient.
    """
    per_sample = kl_divergence(student_logits, teacher_logits, temperature, reduction="none").sum(dim=1)
    if not scale_by_temperature_squared:
        per_sample = per_sample / (temperature ** 2)
    if not mask:
        return -per_sample.mean()
    agreement_mask = (student_logits.argmax(dim=1) == teacher_logits.argmax(dim=1)).to(student_logits.dtype)
    return -(agreement_mask * per_sample).mean()


def adversarial_js_ref(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 3.0) -> torch.Tensor:
    """CuDFKD ``adv_type js`` term ``L_adv = 1 − clamp(JS_ref_τ(s, t), 0, 1)`` at τ = 3 (§5.2).

    Minimising it maximises the (reference-variant, :func:`js_divergence_ref`) JS divergence
    between student and teacher, bounded to [0, 1].
    """
    return 1.0 - js_divergence_ref(student_logits, teacher_logits, temperature).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- CMI contrastive loss
def contrastive_loss(local_proj: torch.Tensor, global_proj: torch.Tensor, num_current: int,
                     temperature: float) -> torch.Tensor:
    """CMI instance-discrimination loss ``L_cr`` between local and global views (§4.5).

    Rows ``0 .. num_current−1`` of both ``(N, h)`` inputs are the current synthesis batch
    (``num_current = Bs``); the remaining ``N' = N − Bs`` rows come from the memory bank.
    Row i of ``local_proj`` and row i of ``global_proj`` are two views of the same instance:

        logits = local_proj · stopgrad(global_proj)ᵀ / cr_T                       (N × N)
        ce_i   = −log softmax(logits_i)_i                     (positive on the diagonal)
        L_cr   = mean_{i < Bs} ce_i + mean_{i ≥ Bs} ce_i      if N' > 0
                 mean_i ce_i                                  otherwise

    The global branch is detached (no gradient), so the generator is trained only through
    the local views of the current rows; cached rows only train the projection head.
    ``temperature`` is ``cr_T`` (0.2 or 0.1 in the scripts).
    """
    total_rows = local_proj.shape[0]
    if global_proj.shape[0] != total_rows:
        raise ValueError(f"local_proj has {total_rows} rows but global_proj has {global_proj.shape[0]}")
    if not 0 < num_current <= total_rows:
        raise ValueError(f"num_current must be in [1, {total_rows}], got {num_current}")
    logits = local_proj @ global_proj.detach().t() / temperature
    positives = torch.arange(total_rows, device=logits.device)
    per_row = F.cross_entropy(logits, positives, reduction="none")
    if total_rows == num_current:
        return per_row.mean()
    return per_row[:num_current].mean() + per_row[num_current:].mean()


# ----------------------------------------------------------------------------- AdaDFKD relationship terms
#: Tolerance of the window bounds ⌊h·K⌋, ⌊(h+ℓ)·K⌋ against binary rounding (0.29·100 = 28.99…96 in floats).
R2M_WINDOW_TOLERANCE = 1e-9


def r2m_window(hard_factor: float, length: float, queue_size: int) -> tuple[int, int]:
    """Similarity ranks ``[⌊h·K⌋, ⌊(h+ℓ)·K⌋)`` of the negatives R2M keeps (§12.4), clipped to [0, K].

    Rank 0 is the least similar negative (the "easiest"); ``h`` slides the window from the easiest
    ℓ-fraction (h = 0) to the hardest one (h = 1 − ℓ, ranks ``[K − ℓK, K)``). Python numbers only.
    """
    start = math.floor(hard_factor * queue_size + R2M_WINDOW_TOLERANCE)
    stop = math.floor((hard_factor + length) * queue_size + R2M_WINDOW_TOLERANCE)
    start = min(max(start, 0), queue_size)
    return start, min(max(stop, start), queue_size)


def r2m_loss(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, hard_factor: float, length: float,
             temperature: float) -> torch.Tensor:
    """AdaDFKD's relationship-refinement (R2M) loss: MoCo InfoNCE on a sliding window of negatives (§12.4).

    ``query`` (B, d): the normalised teacher features ``q`` (with gradient to the generator);
    ``key`` (B, d): the normalised student features ``k`` of the same samples (the positives);
    ``queue`` (K, d): the K unit-length negatives ``Q`` (past student keys). Then

        l_pos,i = q_i·k_i,   l_neg,i = q_i·Q  (K values, sorted ascending: least similar first)
        L_R2M   = mean_i CE([l_pos,i, l_neg,i[⌊hK⌋ : ⌊(h+ℓ)K⌋]] / τ, class 0)

    ``key`` and ``queue`` carry no gradient (detached here). With an empty window the loss is 0.
    """
    key, queue = key.detach(), queue.detach()
    positives = (query * key).sum(dim=1, keepdim=True)
    start, stop = r2m_window(hard_factor, length, queue.shape[0])
    negatives = (query @ queue.t()).sort(dim=1).values[:, start:stop]
    logits = torch.cat([positives, negatives], dim=1) / temperature
    targets = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, targets)


def infonce(teacher_features: torch.Tensor, student_features: torch.Tensor, temperature: float) -> torch.Tensor:
    """AdaDFKD's in-batch InfoNCE of the student step (§12.5).

        D      = normalize(f_T) · normalize(f_S)ᵀ       (B × B cosine similarities)
        L_NCE  = mean_i CE(D_i / τ, i)                  (positive: the same sample)

    ``student_features`` are the (projected) student features, which receive the gradient;
    ``teacher_features`` are detached. Identical, mutually orthogonal features give ≈ 0 at τ = 0.07;
    unrelated ones about log B or more.
    """
    teacher_keys = F.normalize(teacher_features.detach(), dim=1)
    similarities = teacher_keys @ F.normalize(student_features, dim=1).t()
    targets = torch.arange(similarities.shape[0], device=similarities.device)
    return F.cross_entropy(similarities / temperature, targets)
