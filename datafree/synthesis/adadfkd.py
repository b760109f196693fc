"""AdaDFKD — CuDFKD with adaptive relationships between samples (METHODS.md §12).

Everything of CuDFKD is kept (§12.3): the G-Cu generator, its entropy / one-hot / BN terms, the
adversarial ramp, the pace and the self-paced student loss. AdaDFKD adds two contrastive terms on
the penultimate features:

* **Generator: R2M, weight ``hard``** (§12.4). The teacher features of a synthetic sample
  (queries ``q``, with gradient to the generator) are pulled towards the student features of the
  same sample (keys ``k``, no gradient) and away from a *window* of negatives taken from a queue
  of past student keys, ranked by similarity: ranks ``[⌊hK⌋, ⌊(h+ℓ)K⌋)`` of the K negatives
  sorted ascending. ``h = hard_factor(epoch)`` slides the window from the easiest (least similar)
  ℓ-fraction to the hardest one between the begin and end fractions of training. After the loss
  the keys enter the queue. The adversarial KL has no agreement mask (``--adv_mask off``).
* **Student: in-batch InfoNCE, weight ``s_nce``** (§12.5): ``L_NCE = mean_i CE(D_i/τ, i)`` with
  ``D`` the B×B cosine matrix between teacher and (projected) student features; the scalar is
  added to every per-sample KD loss before the self-paced weighting, which by default acts on the
  batch mean (``--spl_granularity batch``, the [REF] HEAD state).

[CLEAN] choices (§12.8): when the feature widths differ, one persistent ``Linear(d_S, d_T)``
projection is shared by both terms and trained by the student's optimizer (item 1; [REF] draws a
new random one at every use, reproduced by ``--ada_ref_random_projection``); the queue is a
device-resident ring buffer for any K and batch size (item 2, ``--queue_size`` = [REF]
``--N_neg``); the loss sum is out of place (item 4). Under torchrun every rank enqueues the keys of
all ranks, so all ranks hold the same queue (§12.9).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from datafree.synthesis import curriculum
from datafree.synthesis.criterions import infonce, r2m_loss
from datafree.options import option
from datafree.synthesis.budget import Store
from datafree.synthesis.pool import NegativeQueue
from datafree.published import Published
from datafree.synthesis.base import SynthesisSetup, TestPreset
from datafree.synthesis.cudfkd import CuDFKDSynthesizer
from datafree.synthesis.recipe import CurriculumRow, Recipe, curriculum_launcher, pair_values, replace_settings, settings


def feature_width(model: nn.Module, image_size: int, device: torch.device, channels: int = 3) -> int:
    """Width of ``model``'s penultimate features: its ``feature_dim`` attribute, else one eval()
    forward of a blank image (no gradient; the model's mode is restored)."""
    width = getattr(model, "feature_dim", None)
    if width is not None:
        return int(width)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, features = model(torch.zeros(1, channels, image_size, image_size, device=device), return_features=True)
    finally:
        model.train(was_training)
    return int(features.shape[1])


#: §12.6 common values, in launcher order after the row's values and the pace growth.
COMMON_SETTINGS = settings(
    ("ep_steps", "400", "§12.6 common"), ("kd_steps", "10", "§12.6 common"), ("g_steps", "1", "§12.6 common"),
    ("lr", "0.1", "§12.6 common"), ("lr_g", "1e-3", "§12.6 common"), ("beta1", "0.9", "§12.3"),
    ("beta2", "0.99", "§12.3"), ("nz", "512", "§12.3 G-Cu"), ("depth", "2", "§12.6 common"), ("oh", "1", "§12.6"),
    ("bn", "1", "§12.6"), ("act", "0", "§12.6"), ("balance", "20", "§12.6: the scripts' --lmda_ent -20"),
    ("adv_type", "kl", "§12.6"), ("adv_mask", "off", "§12.4 item 1: the mask is commented out"),
    ("curr_option", "curr_log", "§12.6"), ("spl_granularity", "batch", "§12.5: one weight on the batch loss (HEAD)"),
    ("tau", "0.07", "§12.6 common"), ("hard", "0.1", "§12.6 common"))
#: The order in which a launcher passes a §12.6 row's values.
ROW_ORDER = ("batch_size", "epochs", "loss", "T", "lambda_0", "adv", "grad_adv", "begin_fraction", "end_fraction",
             "length", "s_nce", "queue_size", "seed")
#: §12.6 script rows.
SCRIPT_ROWS: dict[str, CurriculumRow] = {
    "a10_resnet": CurriculumRow(
        "CIFAR-10 resnet34->resnet18 row", "ljrprocc/DFKD @cd281c4 scripts/adadfkd/cifar10_resnet34_resnet18.sh",
        {"batch_size": "768", "epochs": "300", "loss": "kl", "T": "20", "lambda_0": "2.2", "adv": "1", "grad_adv": "0",
         "begin_fraction": "0.25", "end_fraction": "0.75", "length": "0.9", "s_nce": "0.1", "queue_size": "4096",
         "seed": "3407"},
        ("[REF] crashes at the first generator step (queue size 4096 is not a multiple of B 768); the queue here is "
         "a general ring buffer, so the row runs as written (§12.8 item 2).",
         "At 93c00de (2023-10-19) this script had adv 0, grad_adv 0.05 (§12.6).")),
    "a10_vgg": CurriculumRow(
        "CIFAR-10 vgg11->resnet18 row",
        "ljrprocc/DFKD @cbcaeb8 (2023-06-30) scripts/adadfkd/cifar10_resnet34_resnet18.sh, which then ran "
        "vgg11->resnet18 (values it does not list: the HEAD CIFAR-10 resnet34 row)",
        {"batch_size": "1024", "epochs": "300", "loss": "kl", "T": "20", "lambda_0": "2.2", "adv": "1", "grad_adv": "0",
         "begin_fraction": "0.25", "end_fraction": "0.75", "length": "0.8", "s_nce": "0.1", "queue_size": "8192",
         "seed": "3407"},
        ("No HEAD script exists for this cell; the 2023-06-30 state of the resnet34_resnet18 file ran it (§12.6).",)),
    "a10_wrn": CurriculumRow(
        "CIFAR-10 wrn40_2->wrn16_2 row",
        "ljrprocc/DFKD @cd281c4 scripts/adadfkd/cifar10_wrn402_wrn161.sh, which runs wrn40_2->wrn16_2",
        {"batch_size": "1024", "epochs": "500", "loss": "kl", "T": "20", "lambda_0": "1.5", "adv": "1", "grad_adv": "0",
         "begin_fraction": "0", "end_fraction": "0.75", "length": "0.8", "s_nce": "0.1", "queue_size": "8192",
         "seed": "0"},
        ("[REF] file name disagrees: named wrn402_wrn161 but runs wrn40_2->wrn16_2 (§7 item 25).",)),
    "a100_vgg": CurriculumRow(
        "CIFAR-100 vgg11->resnet18 row",
        "ljrprocc/DFKD @cd281c4 scripts/adadfkd/cifar100_resnet34_resnet18.sh, which runs vgg11->resnet18",
        {"batch_size": "1024", "epochs": "400", "loss": "l1", "T": "5", "lambda_0": "1.0", "adv": "1", "grad_adv": "0",
         "begin_fraction": "0.2", "end_fraction": "0.8", "length": "0.8", "s_nce": "0.1", "queue_size": "12288",
         "seed": "20"},
        ("[REF] file name disagrees: named resnet34_resnet18 but runs vgg11->resnet18 (§7 item 25).",)),
    "a100_wrn162": CurriculumRow(
        "CIFAR-100 wrn40_2->wrn16_2 row", "ljrprocc/DFKD @cd281c4 scripts/adadfkd/cifar100_wrn402_wrn162.sh",
        {"batch_size": "1024", "epochs": "500", "loss": "kl", "T": "2", "lambda_0": "1.2", "adv": "1", "grad_adv": "0",
         "begin_fraction": "0.2", "end_fraction": "0.79", "length": "0.8", "s_nce": "0.15", "queue_size": "16384",
         "seed": "20"},
        ("At 93c00de (2023-10-19) the CIFAR-100 WRN scripts had adv 0, grad_adv 0.095; the README's 67.54 is the "
         "best of a sweep (§12.6, §13 item 5).",)),
    "a100_wrn401": CurriculumRow(
        "CIFAR-100 wrn40_2->wrn40_1 row",
        "ljrprocc/DFKD @93c00de (2023-10-19) scripts/adadfkd/cifar100_wrn402_wrn401_copy1.sh, the only script that "
        "runs wrn40_2->wrn40_1 (values it does not change: the HEAD cifar100_wrn402_wrn401 row)",
        {"batch_size": "1024", "epochs": "460", "loss": "kl", "T": "2", "lambda_0": "1.2", "adv": "0",
         "grad_adv": "0.095", "begin_fraction": "0.2", "end_fraction": "0.8", "length": "0.71", "s_nce": "0.15",
         "queue_size": "16384", "seed": "20"},
        ("The HEAD file cifar100_wrn402_wrn401.sh runs wrn40_2->wrn16_2 (§12.6, §7 item 25).",
         "With adv 0 and grad_adv 0.095 the adversarial weight ramps to a large plateau (§12.6).")),
}
#: cell -> (row, the script state it runs where that is the published script of exactly this cell, else "")
#: (§12.6); cells without a script copy the same dataset's row of the closest teacher family.
CELL_ROWS: dict[tuple[str, str, str], tuple[str, str]] = {
    ("cifar10", "resnet34", "resnet18"): ("a10_resnet", "HEAD script cifar10_resnet34_resnet18"),
    ("cifar10", "vgg11", "resnet18"): ("a10_vgg", "script state cbcaeb8 of cifar10_resnet34_resnet18 (ran vgg11)"),
    ("cifar10", "wrn40_2", "wrn40_1"): ("a10_wrn", ""),
    ("cifar10", "wrn40_2", "wrn16_2"): ("a10_wrn", "HEAD script cifar10_wrn402_wrn161 (runs wrn40_2->wrn16_2)"),
    ("cifar10", "wrn40_2", "wrn16_1"): ("a10_wrn", ""),
    ("cifar100", "resnet34", "resnet18"): ("a100_vgg", ""),
    ("cifar100", "vgg11", "resnet18"): ("a100_vgg", "HEAD script cifar100_resnet34_resnet18 (runs vgg11->resnet18)"),
    ("cifar100", "wrn40_2", "wrn40_1"): ("a100_wrn401", "script state 93c00de of cifar100_wrn402_wrn401_copy1"),
    ("cifar100", "wrn40_2", "wrn16_2"): ("a100_wrn162", "HEAD script cifar100_wrn402_wrn162"),
}
#: §18.5: ljrprocc's Tiny-ImageNet AdaDFKD script; its cell is ljrprocc's torchvision-layout ResNets, which its
#: driver builds from the names resnet50 / resnet18 on tiny_imagenet (§18.4).
TINY_CELL = ("tiny_imagenet", "resnet50_imagenet", "resnet18_imagenet")
TINY_ROW = CurriculumRow(
    "Tiny-ImageNet resnet50->resnet18 row",
    "ljrprocc/DFKD scripts/adadfkd/adadfkd_timagenet.sh at HEAD (last changed 8c4410a, 2023-11-06)",
    {"batch_size": "256", "epochs": "500", "loss": "l1", "T": "5", "lambda_0": "1.3", "adv": "1", "grad_adv": "0",
     "begin_fraction": "0.2", "end_fraction": "0.75", "length": "0.81", "s_nce": "0.02", "queue_size": "16384",
     "seed": "0"},
    ("The reference ran 2 GPUs (--world_size 2, each rank a batch of B/2); this launcher passes the total batch B "
     "on one device (§18.5).",
     "The published run is tagged adadfkd_new2; the script's committed states are tagged new3 (93c00de, grad_adv "
     "0.1) and new4 (HEAD, grad_adv 0), so which values produced 58.18 is not known: add --grad_adv 0.1 for the "
     "93c00de state (§18.5).",
     "The script passes --log_fidelity (Agreement@1, probability loyalty, §6.3): add it to compare with the note.",
     "With --loss l1, T only softens the generator's entropy term, not the student loss (§5.8)."))
#: The 64-px common values of the script: G-Cu depth 3 with nz 1024, R2M weight 0.05.
TINY_COMMON = replace_settings(
    COMMON_SETTINGS, ("kd_steps", "10", "§18.5: --kd_steps 10 (read by the HEAD driver)"),
    ("nz", "1024", "§18.5: G-Cu nz 1024, hard-wired by the reference for non-CIFAR data"),
    ("depth", "3", "§18.5: --depth 3 at 64 px (start map 8x8, §18.6)"), ("hard", "0.05", "§18.5 script value"))
#: The AdaDFKD student evaluated in ljrprocc's Tiny-ImageNet notebook (§18.5).
TINY_NUMBER = Published(58.18, "reproduction", "ljrprocc/DFKD notebooks/Eval_Tiny_imagenet.ipynb @8376454 (§18.5)",
                        "teacher 67.18; Agree@1 0.6883, probability loyalty 0.4753; the evaluated run (adadfkd_new2) "
                        "predates the committed script states (§18.5)")
#: AdaDFKD's recipe (datafree.synthesis.recipe): the §12.6 rows per cell and the README's numbers (§12.7).
RECIPE = Recipe(
    label="AdaDFKD", name="adaptive inter-sample relationships", section="§12", table_row=8,
    launchers=(*(curriculum_launcher(cell, SCRIPT_ROWS[row], bool(script), "§12.6", ROW_ORDER, COMMON_SETTINGS)
                 for cell, (row, script) in CELL_ROWS.items()),
               replace(curriculum_launcher(TINY_CELL, TINY_ROW, True, "§18.5", ROW_ORDER, TINY_COMMON),
                       sections="§12, §18.5")),
    notes=("One persistent projection Linear(d_S, d_T) trained with the student, when the feature widths differ; "
           "--ada_ref_random_projection reproduces the reference's fresh random projection (§12.8 item 1).",
           "The README's numbers are best runs of hyperparameter sweeps; which script state produced them is unknown "
           "(§13 item 5)."),
    # reproduction where the launcher runs the script state of exactly that cell (§12.6, §12.7)
    published={**{("", *cell): Published(value, "reproduction" if CELL_ROWS[cell][1] else "config not published",
                                         "ljrprocc/DFKD README @cd281c4 (§12.7)", CELL_ROWS[cell][1])
                  for cell, value in pair_values([95.32, 92.19, 93.38, 93.15, 90.05],
                                                 [77.13, 71.52, 68.19, 67.54]).items()},
               ("", *TINY_CELL): TINY_NUMBER})


class AdaDFKDSynthesizer(CuDFKDSynthesizer):
    """AdaDFKD: CuDFKD (§5) plus the R2M generator term and the student's InfoNCE (§12)."""

    recipe = RECIPE

    #: CuDFKD's settings with the HEAD CIFAR-10 resnet34→resnet18 row of §12.6 (B 768, E 300, kl, T 20,
    #: λ_0 2.2, adv 1 / grad_adv 0, ramp .25/.75, ℓ 0.9, s_nce 0.1, K 4096; its seed 3407 is the launcher's)
    #: and the common AdaDFKD values (hard 0.1, τ 0.07, no agreement mask, batch-level self-paced weight).
    #: §12.10: the CuDFKD schedule with a generator step every 4 KD steps and lr_g 3e-3 (50-76 % over seeds
    #: 0-4; 40-70 % with the default schedule); a queue of two batches, window ℓ 0.8.
    TEST_PRESET = TestPreset(tiny_flags=("--queue_size", "24"),
                             learning_flags=("--epochs", "4", "--ep_steps", "60", "--kd_steps", "4", "--ngf", "16",
                                             "--lr_g", "3e-3", "--queue_size", "64", "--hard", "0.1", "--s_nce", "0.1",
                                             "--length", "0.8"), fp16_backoffs=1)

    @dataclass(frozen=True)
    class Options(CuDFKDSynthesizer.Options):
        """AdaDFKD options (§12)"""

        DEFAULTS = {"batch_size": 768, "epochs": 300, "loss": "kl", "T": 20.0, "lambda_0": 2.2, "adv": 1.0,
                    "grad_adv": 0.0, "begin_fraction": 0.25, "end_fraction": 0.75, "adv_mask": "off",
                    "spl_granularity": "batch"}
        #: §12.6 ``cifar100_wrn402_wrn162`` row (the HEAD file whose name matches its content).
        #: §18.5 Tiny-ImageNet HEAD row (ljrprocc 8c4410a, resnet50->resnet18): G-Cu depth 3 with nz 1024; B is the
        #: total of its 2 GPUs.
        ROWS = {"cifar100": {"batch_size": 1024, "epochs": 500, "loss": "kl", "T": 2.0, "lambda_0": 1.2,
                             "adv": 1.0, "grad_adv": 0.0, "begin_fraction": 0.2, "end_fraction": 0.79,
                             "length": 0.8, "s_nce": 0.15, "queue_size": 16384},
                "tiny_imagenet": {"batch_size": 256, "epochs": 500, "kd_steps": 10, "loss": "l1", "T": 5.0,
                                  "lambda_0": 1.3, "adv": 1.0, "grad_adv": 0.0, "begin_fraction": 0.2,
                                  "end_fraction": 0.75, "length": 0.81, "s_nce": 0.02, "queue_size": 16384,
                                  "hard": 0.05, "tau": 0.07, "nz": 1024, "depth": 3}}

        hard: float = option(0.1, "AdaDFKD weight of the R2M contrastive generator term (§12.4)", "non_negative")
        tau: float = option(0.07, "AdaDFKD temperature of the R2M and InfoNCE terms", "positive")
        length: float = option(0.9, "AdaDFKD fraction ℓ of the negatives inside the R2M window (§12.4)",
                               "open_fraction")
        s_nce: float = option(0.1, "AdaDFKD weight of the student's in-batch InfoNCE (§12.5)", "non_negative")
        queue_size: int = option(4096, "AdaDFKD number K of negatives in the queue ([REF] --N_neg; any K, §12.8)",
                                 "positive")
        ada_ref_random_projection: bool = option(
            False, "[REF] bug: a new random Linear(d_S, d_T) at every use instead of one trained projection when "
                   "the feature widths differ (§12.8 item 1)")

    #: The student loss needs the penultimate features of both networks (§12.9).
    needs_features = True

    def __init__(self, setup: SynthesisSetup, options: Options) -> None:
        super().__init__(setup, options)
        self.r2m_weight = options.hard
        self.contrast_temperature = options.tau
        self.window_length = options.length
        self.nce_weight = options.s_nce
        self.ref_random_projection = options.ada_ref_random_projection
        self.student_width = feature_width(setup.student, setup.image_size, setup.device, setup.channels)
        self.teacher_width = feature_width(setup.teacher, setup.image_size, setup.device, setup.channels)
        # P: Linear(d_S, d_T) when the widths differ (§12.8 item 1); the student's SGD trains it.
        self.projection: nn.Linear | None = None
        if self.student_width != self.teacher_width and not self.ref_random_projection:
            self.projection = nn.Linear(self.student_width, self.teacher_width).to(setup.device)
        self.trained_projection: nn.Module | None = self.projection  # DDP-wrapped by distribute()
        self.queue = NegativeQueue(self.teacher_width, options.queue_size, setup.device, self.noise_stream)
        self.gather_keys = False  # set by distribute(): enqueue the keys of all ranks
        self.hard_factor = curriculum.hard_factor(0, setup.epochs, self.begin_fraction, self.end_fraction,
                                                  self.window_length)

    # ------------------------------------------------------------------ sharing
    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """The generator as in GenerativeSynthesizer; the projection's gradients averaged across ranks;
        one queue for all ranks: rank 0's initial keys, then every rank enqueues all ranks' keys (§12.9)."""
        super().distribute(wrap)
        if self.projection is not None:
            self.trained_projection = wrap(self.projection)
        if self.setup.world_size > 1 and dist.is_available() and dist.is_initialized():
            self.gather_keys = True
            dist.broadcast(self.queue.keys, src=0)  # before any read: nothing else holds this tensor yet

    def memory_stores(self) -> list[Store]:
        """The negative queue: ``queue_size`` unit keys of the teacher's feature width, float32, on the device
        (§21.3)."""
        return [Store("negative queue", self.queue.capacity, (self.queue.dim,), self.queue.keys.dtype,
                      sized_by="--queue_size")]

    def student_extra_parameters(self) -> list[nn.Parameter]:
        """The persistent projection P, trained by the student's optimizer (§12.8 item 1)."""
        return [] if self.projection is None else list(self.projection.parameters())

    # ------------------------------------------------------------------ features
    def project(self, student_features: torch.Tensor) -> torch.Tensor:
        """``P(f_S)`` in the teacher's feature space: identity when the widths match; else the shared
        projection (through its DDP wrapper while gradients are recorded), or with
        ``--ada_ref_random_projection`` a new random ``Linear`` drawn from the noise stream ([REF])."""
        if self.student_width == self.teacher_width:
            return student_features
        if self.ref_random_projection:
            # nn.Linear's default init: weight and bias uniform in ±1/√d_S.
            bound = 1.0 / math.sqrt(self.student_width)
            weight = self.uniform(bound, self.teacher_width, self.student_width)
            bias = self.uniform(bound, self.teacher_width)
            return F.linear(student_features, weight, bias)
        assert self.projection is not None and self.trained_projection is not None
        network = self.trained_projection if torch.is_grad_enabled() else self.projection
        return network(student_features)

    def uniform(self, bound: float, *shape: int) -> torch.Tensor:
        """Uniform noise in [−bound, bound) from the noise stream."""
        draw = torch.rand(*shape, device=self.device, generator=self.noise_stream)
        return (2.0 * draw - 1.0) * bound

    # ------------------------------------------------------------------ generator side (§12.4)
    def begin_epoch(self, epoch: int) -> dict[str, float]:
        schedule = super().begin_epoch(epoch)
        self.hard_factor = curriculum.hard_factor(epoch, self.setup.epochs, self.begin_fraction,
                                                  self.end_fraction, self.window_length)
        return {**schedule, "hard_factor": self.hard_factor}

    def query_student(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One eval-mode student forward with features, whenever the adversarial term or R2M needs it:
        the student is queried while ``hard > 0`` even if the adversarial weight is 0 (§12.4)."""
        if self.adv > 0 or self.r2m_weight > 0:
            return self.student_forward(images, return_features=True)
        return None, None

    def relationship_terms(self, teacher_features: torch.Tensor,
                           student_features: torch.Tensor | None) -> dict[str, tuple[float, torch.Tensor]]:
        """``hard·L_R2M`` (§12.4), on the features of CuDFKD's teacher and student forwards."""
        if self.r2m_weight <= 0:
            return {}
        return {"r2m": (self.r2m_weight, self.relationship_loss(teacher_features, student_features))}

    def relationship_loss(self, teacher_features: torch.Tensor, student_features: torch.Tensor) -> torch.Tensor:
        """``L_R2M`` on the current window of the queue, then enqueue the batch's keys (§12.4).

        ``q = normalize(f_T)`` carries the gradient to the generator; ``k = normalize(P(f_S))`` none.
        The queue's tensor is replaced, not modified, by the enqueue, so the backward sees the
        negatives the loss used.
        """
        query = F.normalize(teacher_features, dim=1)
        with torch.no_grad():
            key = F.normalize(self.project(student_features.detach()), dim=1)
        loss = r2m_loss(query, key, self.queue.keys, self.hard_factor, self.window_length,
                        self.contrast_temperature)
        self.queue.enqueue(self.all_ranks(key))
        return loss

    def all_ranks(self, keys: torch.Tensor) -> torch.Tensor:
        """The keys of every rank in rank order (all_gather) under torchrun, else ``keys``."""
        if not self.gather_keys:
            return keys
        parts = [torch.empty_like(keys) for _ in range(self.setup.world_size)]
        dist.all_gather(parts, keys.contiguous())
        return torch.cat(parts)

    # ------------------------------------------------------------------ student side (§12.5)
    def student_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, kd_step: int,
                     features: tuple[torch.Tensor, torch.Tensor] | None = None,
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``ℓ_i = ℓ_KD,i + s_nce·L_NCE`` weighted by the curriculum (§12.5): ``v·ℓ̄`` with
        ``--spl_granularity batch`` (default), ``(1/B) Σ v_i ℓ_i`` with ``sample``.

        ``features = (f_S, f_T)``; ``L_NCE = infonce(f_T, P(f_S), τ)`` is logged as ``loss_nce``.
        """
        if features is None:
            raise ValueError("AdaDFKD's student loss needs features=(student_features, teacher_features)")
        student_features, teacher_features = features
        nce = infonce(teacher_features, self.project(student_features), self.contrast_temperature)
        losses = self.per_sample_loss(student_logits, teacher_logits) + self.nce_weight * nce
        loss, terms = self.self_paced_loss(losses, kd_step)
        return loss, {**terms, "loss_nce": nce.detach()}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "queue": self.queue.state_dict()}
        if self.projection is not None:
            state["projection"] = self.projection.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.queue.load_state_dict(state["queue"])
        if self.projection is not None:
            self.projection.load_state_dict(state["projection"])
