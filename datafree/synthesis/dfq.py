"""DFQ — Data-Free Network Quantization With Adversarial Knowledge Distillation (CVPRW 2020).

METHODS.md §4.3: persistent G-L generator (nz 256) trained on the BN-statistics loss,
pseudo-label CE, class balance and the adversarial KL (bn 1, oh 1, balance 20, adv 1);
10 KD steps per generator step; student loss KL at T = 1.
"""
from dataclasses import dataclass

from datafree.synthesis.generative import GenerativeSynthesizer
from datafree.synthesis.recipe import CMI_SCRIPT, LJRPROCC_KD_NOTE, BaselineRow, baseline_recipe, paper_numbers

#: DFQ's recipe (datafree.synthesis.recipe): the §4.7 baseline launchers of the paper's grid (§5.9).
RECIPE = baseline_recipe(
    label="DFQ", name="Data-Free Quantization", section="§4.3", table_row=3,
    defaults=[("batch_size", "256"), ("synthesis_batch_size", "=B"), ("epochs", "200"), ("ep_steps", "400"),
              ("kd_steps", "10"), ("g_steps", "1"), ("lr", "0.1"), ("lr_g", "1e-3"), ("beta1", "0.5"),
              ("beta2", "0.999"), ("T", "1"), ("nz", "256"), ("adv", "1"), ("bn", "1"), ("oh", "1"),
              ("balance", "20"), ("act", "0")],
    rows={("cifar10", "wrn40_2", "wrn16_1"): BaselineRow(CMI_SCRIPT),
          ("cifar100", "resnet34", "resnet18"): BaselineRow(
              "zju-vipa/CMI and ljrprocc/DFKD DFQ resnet34->resnet18 scripts",
              {"lr": "0.05", "T": "1", "batch_size": "256"}, "lr, T, B",
              ("[REF] file name disagrees: the reference script is named after cifar10 but runs --dataset cifar100 "
               "(§4.3, §7 item 25); its values are used here, not in dfq_cifar10_resnet34_resnet18.sh.",
               "B 256 as in zju-vipa/CMI; the ljrprocc/DFKD copy of the script uses B 768.",
               LJRPROCC_KD_NOTE))},
    missing_notes={("cifar10", "resnet34", "resnet18"): [
        "[REF] file name disagrees: the reference dfq script named after cifar10 resnet34_resnet18 runs "
        "--dataset cifar100 (§4.3, §7 item 25), so no published CIFAR-10 setting exists for this pair; see "
        "dfq_cifar100_resnet34_resnet18.sh for its values."]},
    notes=["Student loss is KL at T = 1: the reference scripts pass --T 20 (except resnet34->resnet18, --T 1), "
           "but their driver replaces the criterion with KL_1 for the GAN baselines (§4.3, §7 item 8).",
           "Adam betas (0.5, 0.999) as in zju-vipa/CMI; ljrprocc/DFKD used (0.9, 0.99)."],
    published=paper_numbers([94.61, 90.84, 91.69, 92.01, 86.14], [77.01, 68.32, 61.92, 59.01],
                            notes={("cifar100", "wrn40_2", "wrn40_1"): "CMI README: 62.92"}))


class DFQSynthesizer(GenerativeSynthesizer):
    """DFQ: the shared generative synthesizer with DFQ's weights (§4.7 row DFQ)."""

    recipe = RECIPE

    @dataclass(frozen=True)
    class Options(GenerativeSynthesizer.Options):
        DEFAULTS = {"nz": 256, "kd_steps": 10, "bn": 1.0, "oh": 1.0, "balance": 20.0, "adv": 1.0, "act": 0.0}
