"""DAFL — Data-Free Learning of Student Networks (Chen et al., ICCV 2019), benchmark variant.

METHODS.md §4.1: persistent G-L generator (nz 512) trained on pseudo-label CE, the activation
prior and the class-balance term (oh 1, act 0.001, balance 20); 5 KD steps per generator
step; student loss KL at T = 1 ([REF]: the scripts' ``--T 20`` is ignored for DAFL).

On MNIST the defaults are the DAFL reference's own MNIST run (§20.1): the G-D generator with
BN eps 0.8 and the Tanh + affine-free-BN output (no normaliser), nz 100, Adam lr_G 0.2; the
student trained by Adam lr 2e-3 at a constant rate on the generator's own batch (B 512, one
generator step and one student step per iteration, 120 iterations per epoch, 200 epochs);
oh 1, act 0.1 and the information-entropy weight 5 on a base-10 logarithm, i.e. 5 / ln 10 on
the natural-log class-balance term (the same gradients).
"""
import math
from dataclasses import dataclass

from datafree.published import DAFL_TABLE_ROWS, MNIST_PAIRS, Published
from datafree.synthesis.generative import GenerativeSynthesizer
from datafree.synthesis.recipe import (CMI_SCRIPT, DFKD_SCRIPT, LJRPROCC_KD_NOTE, BaselineRow, Launcher,
                                       baseline_recipe, paper_numbers, settings)

#: DAFL-train.py's MNIST settings (§20.1).
MNIST_ROW = {"batch_size": 512, "epochs": 200, "ep_steps": 120, "kd_steps": 1, "g_steps": 1,
             "optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0, "lr_schedule": "constant",
             "lr_g": 0.2, "beta1": 0.9, "beta2": 0.999, "T": 1.0, "nz": 100, "ngf": 64,
             "oh": 1.0, "act": 0.1, "balance": 5 / math.log(10), "bn": 0.0, "adv": 0.0,
             "generator": "G-D", "gen_output": "normalized", "gen_bn_eps": 0.8, "gen_sample_mode": "last"}


#: DAFL-train.py, the reference's MNIST code (§20.1).
DAFL_TRAIN = "Data-Efficient-Model-Compression/DAFL DAFL-train.py"
#: DAFL's MNIST run (§20.1): DAFL-train.py's defaults and code path, as its launchers pass them.
MNIST_SETTINGS = settings(
    ("batch_size", "512", f"{DAFL_TRAIN}:30-43 defaults"), ("synthesis_batch_size", "512", "the same batch"),
    ("epochs", "200", ":30-43"), ("ep_steps", "120", "iterations per epoch (:30-43)"),
    ("kd_steps", "1", "one generator step and one student step per iteration (:168-185)"),
    ("g_steps", "1", ":168-185"),
    ("gen_sample_mode", "last", "the student learns on the generator's batch, detached (:168-185)"),
    ("optimizer", "adam", "optimizer_S: Adam"), ("lr", "2e-3", "lr_S (:30-43)"),
    ("weight_decay", "0", "optimizer_S: Adam without weight decay"),
    ("lr_schedule", "constant", "no schedule on MNIST (:165-166)"),
    ("lr_g", "0.2", "lr_G (:30-43); optimizer_G: Adam, default betas"), ("beta1", "0.9", "Adam default"),
    ("beta2", "0.999", "Adam default"),
    ("nz", "100", "latent_dim (:30-43)"), ("ngf", "64", "generator widths 128 / 64 (:54-86)"),
    ("generator", "G-D", "the reference body (:54-86)"),
    ("gen_output", "normalized", "Tanh + BatchNorm2d(1, affine=False); no normaliser (:54-86)"),
    ("gen_bn_eps", "0.8", "BatchNorm2d(c, 0.8) passes eps 0.8 (:54-86)"),
    ("oh", "1", ":30-43"), ("act", "0.1", "a (:30-43)"),
    ("balance", "2.1714724095162588", "ie 5 on a log10 entropy (:179) = 5 / ln 10 on the ln one"),
    ("T", "1", "kdloss: KL at T 1, summed / B (:168-185)"),
    ("adv", "0", "no adversarial term"), ("bn", "0", "no BN term (LeNet-5 has no BN layer)"))
MNIST_SOURCE = "DAFL README Table 1 (huawei-noah/Efficient-Computing, §20.1)"
#: DAFL's MNIST numbers (§20.1): the reference code runs LeNet-5; HintonNet's cell copies that row.
MNIST_NUMBERS = {
    ("", "mnist", "lenet5", "lenet5_half"): Published(
        dict(DAFL_TABLE_ROWS[("lenet5", "lenet5_half")])["DAFL"], "reproduction", MNIST_SOURCE,
        "the launcher runs the values of DAFL's own MNIST code (§20.1)"),
    ("", "mnist", "hintonnet", "hintonnet_half"): Published(
        dict(DAFL_TABLE_ROWS[("hintonnet", "hintonnet_half")])["DAFL"], "config not published", MNIST_SOURCE,
        "DAFL's code has LeNet-5 only; the launcher copies the LeNet-5 row (§20.1)"),
}
MNIST_LAUNCHERS = tuple(Launcher(
    "mnist", teacher, student, what="the reference's own MNIST configuration",
    source=f"{DAFL_TRAIN} (§20.1)" + ("" if teacher == "lenet5" else
                                      ". Its code trains LeNet-5 only: this cell copies that row"),
    settings=MNIST_SETTINGS, sections="§4.1, §20.1", shared_notes=False, scratch_line=False,
    reported_notes=("The table's other rows for this pair: "
                    + "; ".join(f"{row} {value:.2f}" for row, value in DAFL_TABLE_ROWS[(teacher, student)]) + ".",),
    remarks=("Cost: 24,000 iterations of about 350 GFLOP (the generator at B 512): minutes on one GPU, about a day "
             "on two CPU cores.",)) for teacher, student in MNIST_PAIRS)
#: DAFL's recipe (datafree.synthesis.recipe): the §4.7 baseline launchers of the paper's grid (§5.9) and
#: DAFL's own MNIST run (§20.1), with their published numbers.
RECIPE = baseline_recipe(
    label="DAFL", name="Data-Free Learning", section="§4.1", table_row=0,
    defaults=[("batch_size", "256"), ("synthesis_batch_size", "=B"), ("epochs", "200"), ("ep_steps", "400"),
              ("kd_steps", "5"), ("g_steps", "1"), ("lr", "0.1"), ("lr_g", "1e-3"), ("beta1", "0.5"),
              ("beta2", "0.999"), ("T", "1"), ("nz", "512"), ("adv", "0"), ("bn", "0"), ("oh", "1"),
              ("balance", "20"), ("act", "0.001")],
    rows={("cifar10", "wrn40_2", "wrn16_1"): BaselineRow(CMI_SCRIPT),
          ("cifar10", "resnet34", "resnet18"): BaselineRow(
              DFKD_SCRIPT, {"batch_size": "1024", "epochs": "250"}, "B, E", (LJRPROCC_KD_NOTE,))},
    no_cifar100=True,
    reported_notes={("cifar10", "wrn40_2", "wrn16_1"): ["Noisy-teacher experiment: 72.14 -> 67.22."],
                    ("cifar10", "resnet34", "resnet18"): ["Noisy-teacher experiment: 92.22 -> 88.86."]},
    notes=["Student loss is KL at T = 1: the reference scripts pass --T 20, but their driver replaces the "
           "criterion with KL_1 for the GAN baselines (§4.1, §7 item 8).",
           "Benchmark re-tuning of DAFL (oh 1, act 0.001, balance 20, 1 generator step per 5 KD steps), not "
           "the official DAFL release (§4.1). Adam betas (0.5, 0.999) as in zju-vipa/CMI; "
           "ljrprocc/DFKD used (0.9, 0.99)."],
    published={**paper_numbers([92.22, 81.10, 81.33, 81.55, 72.15], [74.47, 57.29, 34.66, 40.00],
                               notes={("cifar10", "wrn40_2", "wrn16_1"): "CMI README: 65.71"}),
               **MNIST_NUMBERS},
    more_launchers=MNIST_LAUNCHERS)


class DAFLSynthesizer(GenerativeSynthesizer):
    """DAFL: the shared generative synthesizer with DAFL's weights (§4.7 row DAFL; MNIST §20.1)."""

    recipe = RECIPE

    @dataclass(frozen=True)
    class Options(GenerativeSynthesizer.Options):
        DEFAULTS = {"nz": 512, "kd_steps": 5, "oh": 1.0, "act": 0.001, "balance": 20.0, "bn": 0.0, "adv": 0.0}
        ROWS = {"mnist": MNIST_ROW}
