"""DFAD — Data-Free Adversarial Distillation (Fang et al., 2019): the min-max game on the L1 logit gap.

METHODS.md §14: a persistent generator G-A (= G-D with BN eps 1e-5: Tanh + affine-free BN output,
fed to both networks without the dataset normaliser, §14.3) **maximises** the mean absolute
difference of teacher and student logits; the student minimises the same L1 distance on fresh
generated batches. No prior (bn = oh = act = balance = 0), 5 student steps per generator step.

The reference protocol (``DFAD_cifar.py``, §14.5): 500 epochs of 50 iterations (``ep_steps 250``
here, so one benchmark epoch = one DFAD epoch), B 256, student SGD lr 0.1 with weight decay 5e-4,
generator Adam lr 1e-3 with default betas, both decayed ×0.1 at epochs 100 and 200 (the loop's
``--lr_schedule multistep``, which this generator follows); the student is queried in train()
for the generator step and the generator samples KD batches in train() ([REF], §14.8 items 2-3:
``--adv_student_mode``, ``--gen_sample_mode``). [CLEAN] (§14.8): the schedule steps after each
epoch (the reference steps it first, one epoch earlier); the teacher is frozen.

MNIST (§20.2): DFAD's own LeNet-5 → LeNet-5-Half run, 40 epochs × 50 iterations at B 512, nz 100,
student SGD lr 0.01, wd 1e-4, constant rates.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from datafree.published import PAPER_CELLS, Published
from datafree.schedules import multistep_factor, parse_milestones
from datafree.synthesis.base import TestPreset
from datafree.synthesis.criterions import l1_logits
from datafree.synthesis.generative import GenerativeSynthesizer, StudentQueryOptions
from datafree.synthesis.recipe import Launcher, Recipe, settings

#: VainF/Data-Free-Adversarial-Distillation, the official code (§14.2).
VAINF = "VainF/Data-Free-Adversarial-Distillation @c161591"
#: The reference CIFAR protocol as launcher values (§14.5, §14.6 ``dfad_ref``), in launcher order.
CIFAR_SETTINGS = settings(
    ("batch_size", "256", "DFAD_cifar.py --batch_size (README command)"),
    ("synthesis_batch_size", "256", "one latent batch per generator step, of B"),
    ("epochs", "500", "README command --epochs 500"),
    ("ep_steps", "250", "50 iterations x 5 student steps = one DFAD epoch (§14.8 item 7)"),
    ("kd_steps", "5", "5 student steps per generator step (DFAD_cifar.py:23-46)"),
    ("g_steps", "1", "one generator step per iteration"),
    ("lr", "0.1", "student SGD lr (README command)"), ("momentum", "0.9", "DFAD_cifar.py:150-155"),
    ("weight_decay", "5e-4", "DFAD_cifar.py:150-155"),
    ("lr_schedule", "multistep", "--scheduler in the README commands (§14.5)"),
    ("milestones", "100,200", "MultiStepLR [100, 200] for student and generator"), ("gamma", "0.1", "MultiStepLR"),
    ("lr_g", "1e-3", "generator Adam lr"), ("beta1", "0.9", "Adam default betas"), ("beta2", "0.999", "Adam default"),
    ("nz", "256", "GeneratorA latent (gan.py:12-44)"), ("ngf", "64", "GeneratorA width"),
    ("generator", "G-D", "GeneratorA = the reference body (§14.3)"),
    ("gen_output", "normalized", "Tanh + BatchNorm2d(3, affine=False); no dataset normaliser"),
    ("gen_bn_eps", "1e-5", "default BN eps"),
    ("gen_sample_mode", "train", "generator in train() when sampling KD batches (§14.8 item 3)"),
    ("adv_student_mode", "train", "student in train() during the generator step (§14.8 item 2)"),
    ("adv", "1", "L_G = -L1(s, t)"), ("bn", "0", "no prior"), ("oh", "0", "no prior"), ("act", "0", "no prior"),
    ("balance", "0", "no prior"))
#: DFAD_mnist.py's run (§20.2).
MNIST_SETTINGS = settings(
    ("batch_size", "512", "DFAD_mnist.py --batch_size"), ("synthesis_batch_size", "512", "one latent batch of B"),
    ("epochs", "40", "DFAD_mnist.py --epochs"), ("ep_steps", "250", "50 iterations x 5 student steps"),
    ("kd_steps", "5", "5 student steps per generator step"), ("g_steps", "1", "one generator step per iteration"),
    ("optimizer", "sgd", "optimizer_S"), ("lr", "0.01", "lr_S"), ("momentum", "0.9", "optimizer_S"),
    ("weight_decay", "1e-4", "optimizer_S"),
    ("lr_schedule", "constant", "--scheduler is not passed (run_mnist.sh; StepLR 100 would never fire)"),
    ("lr_g", "1e-3", "lr_G"), ("beta1", "0.9", "Adam default betas"), ("beta2", "0.999", "Adam default"),
    ("nz", "100", "DFAD_mnist.py --nz"), ("ngf", "64", "GeneratorA width"),
    ("generator", "G-D", "GeneratorA (nc 1)"), ("gen_output", "normalized", "Tanh + affine-free BN"),
    ("gen_bn_eps", "1e-5", "default BN eps (DAFL's MNIST body uses 0.8)"),
    ("gen_sample_mode", "train", "generator in train() when sampling KD batches"),
    ("adv_student_mode", "train", "student in train() during the generator step (LeNet-5-Half has no BN)"),
    ("adv", "1", "L_G = -L1(s, t)"), ("bn", "0", "no prior (LeNet-5 has no BN layer)"), ("oh", "0", "no prior"),
    ("act", "0", "no prior"), ("balance", "0", "no prior"))
#: Fast-Datafree's scripts/dfad_cifar.sh as a CMI-family re-run (§14.6 ``dfad_bench``), in launcher order.
FAST_DATAFREE = "zju-vipa/Fast-Datafree @0dcecbc scripts/dfad_cifar.sh"
BENCH_SETTINGS = settings(
    ("batch_size", "256", f"{FAST_DATAFREE}"), ("synthesis_batch_size", "256", "one latent batch of B"),
    ("epochs", "200", "the script's --epochs"), ("ep_steps", "400", "the script's --ep_steps (80 rounds)"),
    ("kd_steps", "5", "the script's --kd_steps"), ("g_steps", "1", "the script's --g_steps"),
    ("lr", "0.1", "the script's --lr"), ("momentum", "0.9", "student SGD"),
    ("weight_decay", "1e-4", "the benchmark drivers' student weight decay"),
    ("lr_schedule", "cosine", "cosine over the epochs (student only)"),
    ("lr_g", "1e-3", "the script's --lr_g"), ("beta1", "0.5", "the drivers' generator Adam betas (0.5, 0.999)"),
    ("beta2", "0.999", "the drivers' generator Adam betas"),
    ("nz", "256", "the CMI-family generator's latent"), ("ngf", "64", "generator width"),
    ("generator", "G-L", "the CMI / ljrprocc@81b96d4 generator (Fast-Datafree builds its G-S)"),
    ("gen_output", "sigmoid", "G-L's [0, 1] pixels, through the dataset normaliser"),
    ("gen_sample_mode", "eval", "the drivers sample KD batches with the generator in eval()"),
    ("adv_student_mode", "eval", "the drivers query the student in eval() (§14.8 item 2)"),
    ("adv", "1", "L_G = -L1(s, t); Fast-Datafree passed student=teacher, so its generator never moved (§14.8 "
                 "item 5): here the student is passed"),
    ("bn", "0", "no prior"), ("oh", "0", "no prior"), ("act", "0", "no prior"), ("balance", "0", "no prior"))
#: The CuDFKD README's stability table (μ / σ² / best over epochs, §14.7), per dataset.
SEED_ROW = {"cifar10": (86.1, 12.3, 93.3), "cifar100": (54.9, 12.9, 67.7)}
SEED_SOURCE = "CuDFKD README @81b96d4 stability table; best = DFAD paper Table 2"
PUBLISHED_PAIR = ("resnet34", "resnet18")


def cifar_launcher(dataset: str, teacher: str, student: str) -> Launcher:
    """The reference protocol on one cell of the paper's grid; only resnet34→resnet18 is published (§14.6)."""
    published = (teacher, student) == PUBLISHED_PAIR
    mean, variance, best = SEED_ROW[dataset]
    return Launcher(
        dataset, teacher, student,
        what="the reference protocol (DFAD_cifar.py)" if published else "the resnet34->resnet18 protocol, copied",
        source=(f"{VAINF} README command and DFAD_cifar.py (§14.5)" if published else
                f"none for this pair: only resnet34->resnet18 is published; this copies its protocol ({VAINF}, "
                "§14.6)"),
        settings=CIFAR_SETTINGS,
        reported_notes=(f"The CuDFKD README's {dataset} row over DFAD's epochs: mean {mean} / variance {variance} / "
                        f"best {best} (§14.7; probably from the PRE-DFKD paper, epochs of 50 iterations).",))


#: DFAD's recipe (datafree.synthesis.recipe): the reference protocol on the paper's grid and DFAD's own
#: MNIST run, with the published numbers of §14.7 and §20.2.
RECIPE = Recipe(
    label="DFAD", name="Data-Free Adversarial Distillation", section="§14", table_row=9, variants=("bench",),
    launchers=(*(cifar_launcher(*cell) for cell in PAPER_CELLS),
               Launcher("cifar10", "wrn40_2", "wrn16_1", variant="bench",
                        what="the benchmark drivers' DFAD script (dfad_bench), a CMI-family re-run with G-L",
                        source=f"{FAST_DATAFREE} (§14.6); no published number", settings=BENCH_SETTINGS,
                        notes=("An alternative configuration of the cell: the default launcher runs the "
                               "reference protocol copied from resnet34->resnet18 (§14.6).",
                               "Student loss: L1 between student and teacher logits; generator loss: its negative "
                               "(§14.4).",
                               "No pool: every KD batch is generated afresh, with the generator in eval()."),
                        shared_notes=False),
               Launcher("mnist", "lenet5", "lenet5_half", what="the reference's own MNIST run (DFAD_mnist.py)",
                        source=f"{VAINF} DFAD_mnist.py:20-49, 89-156 (§20.2)", settings=MNIST_SETTINGS,
                        sections="§14, §20.2",
                        reported_notes=("DAFL in the same table: 98.1 ± 0.1.",))),
    published={
        **{("", dataset, *PUBLISHED_PAIR): Published(
            row[2], "reproduction", SEED_SOURCE,
            f"mean {row[0]} / variance {row[1]} over DFAD's 50-iteration epochs", stability=row)
           for dataset, row in SEED_ROW.items()},
        ("", "mnist", "lenet5", "lenet5_half"): Published(98.3, "reproduction", "DFAD paper Table 2 (README image)",
                                                          "published as 98.3 ± 0.2 (teacher 98.9)"),
    },
    notes=("Student loss: L1 between student and teacher logits; generator loss: its negative (§14.4).",
           "No pool: every KD batch is generated afresh, in train() as the reference does (§14.8 item 3)."))


class DFADSynthesizer(GenerativeSynthesizer):
    """DFAD (§14): a persistent generator maximising the teacher-student L1 logit gap the student minimises."""

    recipe = RECIPE

    #: §14.10: a narrow G-A on the fixture, 5 KD steps per generator step.
    TEST_PRESET = TestPreset(learning_flags=("--epochs", "4", "--ep_steps", "60", "--kd_steps", "5", "--ngf", "16",
                                             "--nz", "32", "--lr_schedule", "constant"),
                             learning_bar=30.0)

    @dataclass(frozen=True)
    class Options(StudentQueryOptions, GenerativeSynthesizer.Options):
        """DFAD options (§14)"""

        #: The ``dfad_ref`` row (§14.6, §14.9).
        DEFAULTS = {"batch_size": 256, "epochs": 500, "ep_steps": 250, "kd_steps": 5, "g_steps": 1, "lr": 0.1,
                    "weight_decay": 5e-4, "lr_schedule": "multistep", "milestones": "100,200", "lr_g": 1e-3,
                    "beta1": 0.9, "beta2": 0.999, "T": 1.0, "nz": 256, "ngf": 64, "adv": 1.0, "bn": 0.0, "oh": 0.0,
                    "act": 0.0, "balance": 0.0, "generator": "G-D", "gen_output": "normalized",
                    "gen_bn_eps": 1e-5, "gen_sample_mode": "train"}
        #: DFAD_mnist.py (§20.2).
        ROWS = {"mnist": {"batch_size": 512, "epochs": 40, "lr": 0.01, "weight_decay": 1e-4,
                          "lr_schedule": "constant", "milestones": "", "nz": 100}}

    def __init__(self, setup, options: Options) -> None:
        super().__init__(setup, options)
        self.multistep = (parse_milestones(options.milestones), options.gamma) \
            if options.lr_schedule == "multistep" else None
        self.warmup = options.warmup

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        """The generator's learning rate follows the student's multistep schedule (§14.5); idempotent."""
        if self.multistep is None:
            return {}
        milestones, gamma = self.multistep
        lr = self.synthesis_lr * multistep_factor(max(epoch - self.warmup, 0), milestones, gamma)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return {"lr_g": lr}

    def adversarial_term(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """−L1 between the logits: the generator maximises the disagreement (§14.4)."""
        return -l1_logits(student_logits, teacher_logits)

    def student_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, kd_step: int,
                     features=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L1 between the logits (mean over B × C), the same distance the generator maximises (§14.4)."""
        return l1_logits(student_logits, teacher_logits), {}
