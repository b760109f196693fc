"""CuDFKD — learning data-free knowledge distillation from a curriculum (METHODS.md §5).

Two easy-to-hard mechanisms on top of a persistent generator (§5.1):

1. **Self-paced student objective** (§5.3, §5.4). Each synthetic sample's difficulty is its
   current distillation loss ``ℓ_i`` (L1 / L2 on logits, or KL×T²). A pace ``λ = λ_0 + α·k``
   grows with the global KD step ``k``; the detached weights ``v_i = SPL(ℓ_i, λ)`` down-weight
   samples much harder than the pace, and the student minimises ``(1/B) Σ v_i ℓ_i``.
2. **Progressively harder generation** (§5.2, §5.5). The generator (G-Cu, d = 2, nz = 512,
   §1.7 init once) minimises ``−balance·H(p̄_T) + adv_weight(epoch)·L_adv + oh·L_oh + act·L_act
   + bn·L_bn``; ``adv_weight`` is a pure function of the epoch: warm-up at ``--adv``, a linear
   ramp of ``--grad_adv`` per epoch between the begin and end fractions, then a plateau.

[CLEAN] choices (§7): per-sample ("none"-reduction) losses (item 5); the ramp does not depend
on the curriculum option (item 19); ``--lmda_ent`` keeps the scripts' sign (−20 maximises the
entropy) and maps to ``balance = −lmda_ent`` (item 20); the pace growth is a flag with the
dataset defaults 1e-4 (CIFAR-10) / 2e-5 (others) (item 18); images are always normalised and
no ``--memory`` pool exists (§5.7). One generator step per ``kd_steps`` (10) KD steps.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from datafree.synthesis import curriculum
from datafree.synthesis.criterions import (activation_loss, adversarial_js_ref, adversarial_kl_masked, batch_mean_entropy,
                                 l1_logits, l2_logits, per_sample_kl, pseudo_label_cross_entropy)
from datafree.errors import UsageError
from datafree.models import CurriculumGenerator, reset_generator_init
from datafree.options import option
from datafree.published import CUDFKD_SOURCE, Published
from datafree.synthesis.base import SynthesisSetup
from datafree.synthesis.generative import GenerativeSynthesizer
from datafree.synthesis.recipe import (CurriculumRow, Launcher, Recipe, curriculum_launcher, pair_values, replace_settings,
                                       settings)

#: Temperature of the adversarial KL / JS in the generator loss (§5.2: τ = 3, ×τ²).
ADVERSARIAL_TEMPERATURE = 3.0


#: §5.8 common settings, in launcher order after the row's values and the pace growth.
COMMON_SETTINGS = settings(
    ("ep_steps", "400", "§5.8 common setting"),
    ("kd_steps", "10", "§5.8: the scripts' --kd_steps_interval 10 (their --kd_steps 5 is ignored)"),
    ("g_steps", "1", "§5.8 common setting (--g_steps_interval 1)"),
    ("lr", "0.1", "§5.8 common setting"),
    ("lr_g", "1e-3", "§5.8 common setting"),
    ("beta1", "0.9", "§5.2 generator Adam betas (0.9, 0.99)"),
    ("beta2", "0.99", "§5.2 generator Adam betas (0.9, 0.99)"),
    ("nz", "512", "§5.2 G-Cu latent size"),
    ("depth", "2", "§5.8 common setting (--depth 2 for 32 px)"),
    ("oh", "1", "§5.8 common setting"),
    ("bn", "1", "§5.8 common setting"),
    ("act", "0", "§5.8 common setting"),
    ("balance", "20", "§5.8: the scripts' --lmda_ent -20 (balance = -lmda_ent)"),
    ("adv_type", "kl", "§5.8 common setting"),
    ("adv_mask", "on", "§5.2: 19c6000 masks the adversarial KL to agreeing samples"),
    ("curr_option", "curr_log", "§5.8 common setting"),
    ("spl_granularity", "sample", "§5.3 [CLEAN] per-sample weights (the reference changed this between commits)"))
#: The order in which a launcher passes a §5.8 row's values.
ROW_ORDER = ("batch_size", "epochs", "loss", "T", "lambda_0", "adv", "grad_adv", "begin_fraction", "end_fraction",
             "seed")
#: §5.8 script rows.
SCRIPT_ROWS: dict[str, CurriculumRow] = {
    "c10_resnet": CurriculumRow(
        "CIFAR-10 resnet34->resnet18 main row", "ljrprocc/DFKD @19c6000 CuDFKD cifar10 resnet34_resnet18 main script",
        {"batch_size": "512", "epochs": "250", "loss": "l1", "T": "20", "lambda_0": "2.0", "adv": "0",
         "grad_adv": "0.5", "begin_fraction": "0.25", "end_fraction": "0.75", "seed": "30"},
        ("Other CIFAR-10 resnet34->resnet18 scripts (§5.8): \"agg\" B 768, kl, adv 1, grad_adv 0.5, seed 0; "
         "\"mem\" B 256, kl, adv 1, grad_adv 0, seed 0, with --memory (plausibly the README cost setting).",)),
    "c10_wrn": CurriculumRow(
        "CIFAR-10 wrn40_2->wrn40_1 row",
        "ljrprocc/DFKD @19c6000 CuDFKD cifar10 script named wrn402_wrn161, which runs wrn40_2->wrn40_1",
        {"batch_size": "1024", "epochs": "250", "loss": "kl", "T": "20", "lambda_0": "2.0", "adv": "1",
         "grad_adv": "0", "begin_fraction": "0.25", "end_fraction": "0.75", "seed": "0"},
        ("[REF] file name disagrees: the script is named wrn402_wrn161 but runs wrn40_2->wrn40_1 (§7 item 25).",
         "Its 2022-09 state ran student wrn16_1 with adv 0.5, grad_adv 0.05 and no --memory (§5.8)."), memory=True),
    "c10_wrn161_paper": CurriculumRow(
        "CIFAR-10 wrn40_2->wrn16_1 paper-era row",
        "ljrprocc/DFKD @81b96d4 (2022-09-04, whose README already reports 95.28 / 75.87 / 88.77) CuDFKD cifar10 "
        "wrn40_2->wrn16_1 script",
        {"batch_size": "1024", "epochs": "250", "loss": "kl", "T": "20", "lambda_0": "2.0", "adv": "0.5",
         "grad_adv": "0.05", "begin_fraction": "0.25", "end_fraction": "0.75", "seed": "0"},
        ("From 6bfd26f (2022-09-18) this script switched to adv 1, grad_adv 0, --memory and student wrn40_1 (the "
         "late-2022 state, §5.8).",
         "81b96d4 weighted the batch-mean loss with one self-paced weight: add --spl_granularity batch to run that "
         "state exactly (§5.3).")),
    "c100_resnet_paper": CurriculumRow(
        "CIFAR-100 resnet34->resnet18 paper-era row",
        "ljrprocc/DFKD @81b96d4 (2022-09-04) CuDFKD cifar100 resnet34_resnet18 script",
        {"batch_size": "768", "epochs": "300", "loss": "l1", "T": "5", "lambda_0": "1.0", "adv": "0",
         "grad_adv": "0.35", "begin_fraction": "0.2", "end_fraction": "0.8", "seed": "0"},
        ("From 6bfd26f (2022-09-18) this script switched to adv 1, grad_adv 0 and --memory (the late-2022 state, "
         "§5.8).",
         "81b96d4 weighted the batch-mean loss with one self-paced weight: add --spl_granularity batch to run that "
         "state exactly (§5.3).")),
    "c100_resnet": CurriculumRow(
        "CIFAR-100 resnet34->resnet18 row", "ljrprocc/DFKD @19c6000 (2022-11) CuDFKD cifar100 resnet34_resnet18 script",
        {"batch_size": "768", "epochs": "300", "loss": "l1", "T": "5", "lambda_0": "1.0", "adv": "1",
         "grad_adv": "0", "begin_fraction": "0.2", "end_fraction": "0.8", "seed": "0"},
        ("Its 2022-09 state used adv 0, grad_adv 0.35 and no --memory (§5.8).",), memory=True),
    "c100_wrn": CurriculumRow(
        "CIFAR-100 wrn40_2->wrn16_2 row",
        "ljrprocc/DFKD @19c6000 CuDFKD cifar100 script named wrn402_wrn161, which runs wrn40_2->wrn16_2",
        {"batch_size": "1024", "epochs": "300", "loss": "kl", "T": "2", "lambda_0": "1.0", "adv": "0",
         "grad_adv": "0.15", "begin_fraction": "0.2", "end_fraction": "0.75", "seed": "0"},
        ("[REF] file name disagrees: the script is named wrn402_wrn161 but runs wrn40_2->wrn16_2 (§7 item 25).",)),
}
#: §18.5: ljrprocc's Tiny-ImageNet scripts; their cells are ljrprocc's torchvision-layout ResNets, which its
#: driver builds from the names resnet50 / resnet34 / resnet18 on tiny_imagenet (§18.4).
TINY_SCRIPT = "ljrprocc/DFKD scripts/cudfkd/cudfkd_timagenet.sh"
TWO_GPU_NOTE = ("The reference ran 2 GPUs (--world_size 2, each rank a batch of B/2); this launcher passes the total "
                "batch B on one device (§18.5).")
SCRIPT_ROWS.update({
    "ti_resnet50": CurriculumRow(
        "Tiny-ImageNet resnet50->resnet18 row", f"{TINY_SCRIPT} at HEAD (last changed 93c00de, 2023-10-19)",
        {"batch_size": "128", "epochs": "400", "loss": "l1", "T": "5", "lambda_0": "1.5", "adv": "1",
         "grad_adv": "0.1", "begin_fraction": "0.2", "end_fraction": "0.75", "seed": "0"},
        (TWO_GPU_NOTE,
         "The script passes --log_fidelity (Agreement@1, probability loyalty, §6.3): add it to log them too.",
         "No CuDFKD Tiny-ImageNet number is in the repository; the CuDFKD paper's table was not readable (§18.5).")),
    "ti_resnet34": CurriculumRow(
        "Tiny-ImageNet resnet34->resnet18 row (19c6000)", f"{TINY_SCRIPT} at 19c6000 (2022-11-08)",
        {"batch_size": "512", "epochs": "400", "loss": "l1", "T": "5", "lambda_0": "1.0", "adv": "1",
         "grad_adv": "0.15", "begin_fraction": "0.2", "end_fraction": "0.75", "seed": "0"},
        (TWO_GPU_NOTE,
         "The later state of the same script (93c00de) runs the resnet50 teacher: "
         "cudfkd_tiny_imagenet_resnet50_imagenet_resnet18_imagenet.sh.")),
})
#: §18.5: the 64-px common values of the scripts (G-Cu depth 3, nz 1024) in place of the 32-px ones.
TINY_COMMON = replace_settings(
    COMMON_SETTINGS, ("nz", "1024", "§18.5: G-Cu nz 1024, hard-wired by the reference for non-CIFAR data"),
    ("depth", "3", "§18.5: --depth 3 at 64 px (start map 8x8, §18.6)"))
#: The HEAD (93c00de) state: --kd_steps is read, the adversarial KL is not masked and the self-paced weight acts on
#: the batch-mean loss (its criterion reduces to the mean, §5.3).
TINY_HEAD_COMMON = replace_settings(
    TINY_COMMON, ("kd_steps", "10", "§18.5: --kd_steps 10 (read by the HEAD driver)"),
    ("adv_mask", "off", "§18.5: 93c00de comments the agreement mask out"),
    ("spl_granularity", "batch", "§18.5: 93c00de's L1Loss returns the batch mean, so one self-paced weight (§5.3)"))
#: The 64-px cells: [(row, published for this exact cell?, variant, common values)].
TINY_CELL_ROWS: dict[tuple[str, str, str], list[tuple[str, bool, str, tuple]]] = {
    ("tiny_imagenet", "resnet50_imagenet", "resnet18_imagenet"): [("ti_resnet50", True, "", TINY_HEAD_COMMON)],
    ("tiny_imagenet", "resnet34_imagenet", "resnet18_imagenet"): [("ti_resnet34", True, "late2022", TINY_COMMON)],
}
#: cell -> [(row, published for this exact cell?, variant)]: the main launcher runs the paper-era (2022-09-04)
#: values where a script for that exact cell exists, and the cells that copy those rows follow them; the
#: late-2022 state of those rows is a second launcher, variant "late2022" (§5.8). Unpublished cells copy the
#: closest teacher-family row.
CELL_ROWS: dict[tuple[str, str, str], list[tuple[str, bool, str]]] = {
    ("cifar10", "resnet34", "resnet18"): [("c10_resnet", True, "")],
    ("cifar10", "vgg11", "resnet18"): [("c10_resnet", False, "")],
    ("cifar10", "wrn40_2", "wrn40_1"): [("c10_wrn", True, "")],
    ("cifar10", "wrn40_2", "wrn16_2"): [("c10_wrn161_paper", False, ""), ("c10_wrn", False, "late2022")],
    ("cifar10", "wrn40_2", "wrn16_1"): [("c10_wrn161_paper", True, ""), ("c10_wrn", False, "late2022")],
    ("cifar100", "resnet34", "resnet18"): [("c100_resnet_paper", True, ""), ("c100_resnet", True, "late2022")],
    ("cifar100", "vgg11", "resnet18"): [("c100_resnet_paper", False, ""), ("c100_resnet", False, "late2022")],
    ("cifar100", "wrn40_2", "wrn40_1"): [("c100_wrn", False, "")],
    ("cifar100", "wrn40_2", "wrn16_2"): [("c100_wrn", True, "")],
}
#: Lines after a cell's published number (its main launcher only).
REPORTED_NOTES: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("cifar10", "resnet34", "resnet18"): (
        "v1 abstract: 95.28 (above the 95.20 of resnet18 trained with data); 90 % within 30 epochs (v2: 15).",
        "Noisy-teacher experiment: 95.02 (clean teacher) -> 93.34 (noisy teacher)."),
    ("cifar10", "wrn40_2", "wrn16_1"): (
        "Noisy-teacher experiment lists 86.22 (clean teacher) -> 87.44 (noisy teacher) for this pair.",),
}


def recipe_launcher(cell: tuple[str, str, str], row_name: str, exact: bool, variant: str) -> Launcher:
    """The launcher of one §5.8 row for ``cell``; the "late2022" variant is an alternative state of the row."""
    row = SCRIPT_ROWS[row_name]
    extra = (("The script used --memory (with its normalisation bug, §5.7); not passed here.",) if row.memory else ()
             ) + (("With --loss l1, T only softens the generator's entropy term, not the student loss (§5.8).",)
                  if row.values["loss"] == "l1" else ())
    launcher = curriculum_launcher(cell, row, exact, "§5.8", ROW_ORDER, COMMON_SETTINGS, variant=variant,
                                   extra_notes=extra, reported_notes=() if variant else REPORTED_NOTES.get(cell, ()))
    if not variant:
        return launcher
    return replace(launcher, what=f"the late-2022 state of the row ({launcher.what}); an alternative configuration: "
                                  "the main launcher of this cell runs the paper-era values (§5.8, §5.10)")


def tiny_launcher(cell: tuple[str, str, str], row_name: str, exact: bool, variant: str,
                  common: tuple) -> Launcher:
    """The launcher of one of ljrprocc's Tiny-ImageNet scripts (§18.5); its "late2022" variant is the 2022-11
    (19c6000) state, which ran a resnet34 teacher."""
    row = SCRIPT_ROWS[row_name]
    extra = ("With --loss l1, T only softens the generator's entropy term, not the student loss (§5.8).",)
    launcher = curriculum_launcher(cell, row, exact, "§18.5", ROW_ORDER, common, variant=variant, extra_notes=extra)
    return replace(launcher, sections="§5, §18.5")


#: The CuDFKD row of the paper's tables (§5.9).
PAPER_ROW = pair_values([95.28, 91.61, 93.18, 92.98, 88.77], [75.87, 71.22, 66.43, 65.94])
#: CuDFKD's recipe (datafree.synthesis.recipe): the §5.8 rows per cell and the paper's numbers (§5.9, §5.10).
RECIPE = Recipe(
    label="CuDFKD", name="Curriculum Data-Free KD", section="§5", table_row=5, variants=("late2022",),
    launchers=(*(recipe_launcher(cell, *entry) for cell, entries in CELL_ROWS.items() for entry in entries),
               *(tiny_launcher(cell, *entry) for cell, entries in TINY_CELL_ROWS.items() for entry in entries)),
    notes=("No --memory: it is off in the clean implementation (§5.7); samples are always normalised.",
           "The generator's adversarial weight follows adv_weight(epoch) of §5.5 (ramp independent of "
           "--curr_option, §7 item 19)."),
    # reproduction where the main launcher runs the published script of exactly that cell (§5.8, §5.10)
    published={**{("", *cell): Published(value, "reproduction" if CELL_ROWS[cell][0][1] else "config not published",
                                         CUDFKD_SOURCE) for cell, value in PAPER_ROW.items()},
               **{("late2022", *cell): Published(value, "alternative state", CUDFKD_SOURCE,
                                                 "late-2022 script values (§5.8)")
                  for cell, value in PAPER_ROW.items() if any(entry[2] for entry in CELL_ROWS[cell])}})


class CuDFKDSynthesizer(GenerativeSynthesizer):
    """CuDFKD: curriculum generator + self-paced student loss (§5)."""

    recipe = RECIPE

    @dataclass(frozen=True)
    class Options(GenerativeSynthesizer.Options):
        """CuDFKD and AdaDFKD options (§5, §12)"""

        #: §5.8 common settings and the main CIFAR-10 resnet34→resnet18 row (B 512, l1, T 20, λ_0 2, adv 0,
        #: grad_adv 0.5, ramp .25/.75; its seed 30 is the launcher's). CIFAR-100 takes its main row, the
        #: paper-era (2022-09-04) resnet34→resnet18 script (ROWS). The pace growth α follows the dataset
        #: (``derive``). Other rows: their launchers under scripts/cudfkd/ carry them.
        DEFAULTS = {"batch_size": 512, "epochs": 250, "ep_steps": 400, "kd_steps": 10, "g_steps": 1, "lr": 0.1,
                    "lr_g": 1e-3, "beta1": 0.9, "beta2": 0.99, "T": 20.0, "nz": 512, "oh": 1.0, "bn": 1.0,
                    "act": 0.0, "balance": 20.0, "adv": 0.0}
        #: §5.8 CIFAR-100 resnet34→resnet18 row in its paper-era state (adv 0, grad_adv 0.35, no memory).
        #: §18.5 Tiny-ImageNet HEAD row (ljrprocc 93c00de, resnet50->resnet18): G-Cu depth 3 with nz 1024, no
        #: agreement mask, one self-paced weight on the batch-mean loss (§18.5); B is the total of its 2 GPUs.
        ROWS = {"cifar100": {"batch_size": 768, "epochs": 300, "loss": "l1", "T": 5.0, "lambda_0": 1.0,
                             "adv": 0.0, "grad_adv": 0.35, "begin_fraction": 0.2, "end_fraction": 0.8},
                "tiny_imagenet": {"batch_size": 128, "epochs": 400, "kd_steps": 10, "loss": "l1", "T": 5.0,
                                  "lambda_0": 1.5, "adv": 1.0, "grad_adv": 0.1, "begin_fraction": 0.2,
                                  "end_fraction": 0.75, "nz": 1024, "depth": 3, "adv_mask": "off",
                                  "spl_granularity": "batch"}}

        loss: str = option("l1", "per-sample student loss ℓ_i (§5.3)", choices=("l1", "l2", "kl"))
        curr_option: str = option("curr_log", "self-paced weight function; none = plain batch loss",
                                  choices=tuple(curriculum.CURRICULUM_OPTIONS))
        spl_granularity: str = option("sample", "self-paced weights per sample (CuDFKD) or one weight on the "
                                                "batch-mean loss (AdaDFKD; some CuDFKD commits, §5.3)",
                                      choices=("sample", "batch"))
        lambda_0: float = option(2.0, "initial pace λ_0 (§5.8)")
        lambda_growth: float | None = option(None, "pace growth α per KD step (unset: 1e-4 on cifar10, 2e-5 "
                                                   "otherwise, §5.4)")
        lambda_end: float | None = option(None, "derive α so that λ reaches this value at the last KD step")
        begin_fraction: float = option(0.25, "adversarial ramp start (×epochs)", "fraction")
        end_fraction: float = option(0.75, "adversarial ramp end (×epochs)", "fraction")
        grad_adv: float = option(0.5, "adversarial weight increase per epoch")
        lmda_ent: float | None = option(None, "[REF] entropy weight; the loss adds lmda_ent·H, so −20 maximises "
                                              "H. Overrides --balance (balance = −lmda_ent)")
        adv_type: str = option("kl", "adversarial term (§5.2)", choices=("kl", "js"))
        adv_mask: str = option("on", "adversarial KL only on samples where student and teacher agree (CuDFKD on, "
                                     "AdaDFKD off, §12.4)", choices=("on", "off"))
        depth: int = option(2, "G-Cu depth d: start map S/2^d, whole and at most 16 (2 for 32 px, 3 for 64 px as "
                               "published, at least 4 at 224 px; §18.6)", "positive")

        def derive(self) -> None:
            """The pace growth from --lambda_end or the dataset (§5.4); balance from lmda_ent (§5.2)."""
            super().derive()
            if self.lambda_end is not None and self.lambda_growth is not None:
                raise UsageError("give either --lambda_growth or --lambda_end, not both")
            if self.lambda_end is not None:
                total_steps = self.epochs * (self.ep_steps // self.kd_steps) * self.kd_steps
                self.set("lambda_growth", curriculum.pace_growth_from_end(self.lambda_0, self.lambda_end,
                                                                          total_steps))
            elif self.lambda_growth is None:
                self.set("lambda_growth", curriculum.default_pace_growth(self.dataset))
            if self.lmda_ent is not None:
                self.set("balance", -float(self.lmda_ent))

        def validate(self) -> None:
            super().validate()
            if not self.begin_fraction <= self.end_fraction:
                raise UsageError("need 0 <= --begin_fraction <= --end_fraction <= 1, got "
                                 f"{self.begin_fraction} and {self.end_fraction}")
            if self.generator != "G-L" or self.gen_output != "sigmoid":
                raise UsageError("--generator / --gen_output do not apply to the curriculum methods: they build "
                                 "the curriculum generator G-Cu (set its depth with --depth)")

    def __init__(self, setup: SynthesisSetup, options: Options) -> None:
        self.depth = options.depth
        super().__init__(setup, options)
        self.loss_type = options.loss
        self.weight_kind = curriculum.weight_kind(options.curr_option)
        self.per_batch_weights = options.spl_granularity == "batch"
        self.adv_type = options.adv_type
        self.adv_mask = options.adv_mask == "on"
        self.initial_adv = options.adv
        self.grad_adv = options.grad_adv
        self.begin_fraction = options.begin_fraction
        self.end_fraction = options.end_fraction
        self.lambda_0 = options.lambda_0
        self.pace_growth = options.lambda_growth
        self.kd_steps_per_epoch = (options.ep_steps // options.kd_steps) * options.kd_steps
        self.adv = curriculum.adv_weight(0, setup.epochs, self.initial_adv, self.grad_adv,
                                         self.begin_fraction, self.end_fraction)

    def build_generator(self, options: Options) -> nn.Module:
        """G-Cu with the §1.7 initialisation applied once, from the run's seed."""
        network = CurriculumGenerator(nz=self.latent_dim, ngf=self.generator_width, depth=self.depth,
                                      img_size=self.setup.image_size, out_channels=self.setup.channels)
        init_stream = torch.Generator().manual_seed(self.setup.seed)
        reset_generator_init(network, generator=init_stream)
        return network

    # ------------------------------------------------------------------ generator side (§5.2, §5.5)
    def begin_epoch(self, epoch: int) -> dict[str, float]:
        self.adv = curriculum.adv_weight(epoch, self.setup.epochs, self.initial_adv, self.grad_adv,
                                         self.begin_fraction, self.end_fraction)
        pace_at_start = curriculum.pace(epoch * self.kd_steps_per_epoch, self.lambda_0, self.pace_growth)
        return {"adv_weight": self.adv, "pace": float(pace_at_start)}

    def generator_terms(self, images: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        teacher_logits, features = self.teacher_forward(images, return_features=True)
        terms: dict[str, tuple[float, torch.Tensor]] = {
            # −balance·H(p̄) == lmda_ent·H(p̄) with the scripts' lmda_ent = −balance.
            "entropy": (-self.balance, batch_mean_entropy(teacher_logits, temperature=self.temperature)),
            "oh": (self.oh, pseudo_label_cross_entropy(teacher_logits)),
        }
        if self.act:
            terms["act"] = (self.act, activation_loss(features))
        if self.bn_hook is not None:
            terms["bn"] = (self.bn, self.bn_hook.loss)
        student_logits, student_features = self.query_student(images)
        if self.adv > 0:
            if self.adv_type == "kl":
                adversarial = adversarial_kl_masked(student_logits, teacher_logits,
                                                    temperature=ADVERSARIAL_TEMPERATURE, mask=self.adv_mask)
            else:
                adversarial = adversarial_js_ref(student_logits, teacher_logits,
                                                 temperature=ADVERSARIAL_TEMPERATURE)
            terms["adv"] = (self.adv, adversarial)
        terms.update(self.relationship_terms(features, student_features))
        return terms

    def query_student(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The student's logits for the adversarial term, and its features where a subclass needs them
        (AdaDFKD, §12.4): one eval-mode forward, skipped while nothing needs it (``(None, None)``)."""
        if self.adv > 0:
            return self.student_forward(images), None
        return None, None

    def relationship_terms(self, teacher_features: torch.Tensor,
                           student_features: torch.Tensor | None) -> dict[str, tuple[float, torch.Tensor]]:
        """Generator terms between teacher and student features of the same samples (none in CuDFKD;
        AdaDFKD's R2M, §12.4)."""
        return {}

    # ------------------------------------------------------------------ student side (§5.3, §5.4)
    def per_sample_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """ℓ_i of §5.3: L1 / L2 mean over classes, or T²·KL(σ(t/T) ‖ σ(s/T)) per sample."""
        if self.loss_type == "l1":
            return l1_logits(student_logits, teacher_logits, reduction="none")
        if self.loss_type == "l2":
            return l2_logits(student_logits, teacher_logits, reduction="none")
        return per_sample_kl(student_logits, teacher_logits, temperature=self.temperature)

    def student_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, kd_step: int,
                     features: tuple[torch.Tensor, torch.Tensor] | None = None,
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Self-paced loss at the pace of ``kd_step`` (§5.3): ``(1/B) Σ v_i ℓ_i`` per sample, or
        ``v·ℓ̄`` with one weight on the batch-mean loss (``--spl_granularity batch``).

        Terms: the mean weight and the generated difficulty ``Σ v ℓ / Σ v``. Like every term these
        are logged as epoch means over all KD steps; the reference logged the difficulty of the last
        KD step of each round only, the same quantity with more noise."""
        return self.self_paced_loss(self.per_sample_loss(student_logits, teacher_logits), kd_step)

    def self_paced_loss(self, losses: torch.Tensor, kd_step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weight per-sample losses ``ℓ`` (B,) by the curriculum at ``kd_step`` (§5.3, §5.4)."""
        if self.weight_kind is None:  # curr_option none: the plain batch loss
            return losses.mean(), {}
        pace = curriculum.pace(kd_step, self.lambda_0, self.pace_growth)
        if self.per_batch_weights:
            losses = losses.mean().reshape(1)
        loss, sample_weights, difficulty = curriculum.weighted_student_loss(losses, pace, self.weight_kind)
        return loss, {"mean_sample_weight": sample_weights.mean(), "generated_difficulty": difficulty}
