"""DFQ — Data-Free Network Quantization With Adversarial Knowledge Distillation (CVPRW 2020).

METHODS.md §4.3: persistent G-L generator (nz 256) trained on the BN-statistics loss,
pseudo-label CE, class balance and the adversarial KL (bn 1, oh 1, balance 20, adv 1);
10 KD steps per generator step; student loss KL at T = 1.
"""
from dataclasses import dataclass

from datafree.synthesis.generative import GenerativeSynthesizer
from datafree.synthesis.recipe import (CMI_SCRIPT, LJRPROCC_KD_NOTE, BaselineRow, Launcher, baseline_recipe,
                                       paper_numbers, settings)

#: §18.5: ljrprocc's Tiny-ImageNet DFQ script (HEAD, last changed 0f20132), run by this benchmark's DFQ. Its
#: driver builds ljrprocc's torchvision-layout ResNets from the names resnet50 / resnet18 (§18.4).
TINY_SOURCE = "ljrprocc/DFKD scripts/dfq/dfq_timagenet.sh at HEAD (last changed 0f20132, 2023-10-13)"
TINY_LAUNCHER = Launcher(
    "tiny_imagenet", "resnet50_imagenet", "resnet18_imagenet",
    what="published script, run with this benchmark's DFQ (G-L generator, KL student loss; see the notes)",
    source=f"{TINY_SOURCE} (docs/METHODS.md §18.5)", sections="§4.3, §18.5",
    settings=settings(
        ("batch_size", "256", "§18.5 script value (total over its 2 GPUs)"),
        ("synthesis_batch_size", "256", "Bs = B (the script sets no synthesis batch)"),
        ("epochs", "400", "§18.5 script value"), ("ep_steps", "400", "§18.5 script value"),
        ("kd_steps", "10", "§18.5 script value (read by the HEAD driver)"), ("g_steps", "1", "§18.5 script value"),
        ("lr", "0.1", "§18.5 script value"), ("lr_g", "1e-3", "§18.5 script value"),
        ("beta1", "0.9", "ljrprocc's generator Adam betas (0.9, 0.99), §4.3"), ("beta2", "0.99", "§4.3"),
        ("T", "5", "§18.5 script value: KL at T 5 is what the script runs with --loss kl (see the notes)"),
        ("nz", "256", "the reference's DFQ latent size"), ("adv", "1", "§18.5 script value"),
        ("bn", "1", "§18.5 script value"), ("oh", "1", "§18.5 script value"),
        ("balance", "20", "§18.5 script value"), ("act", "0", "§18.5 script value"), ("seed", "0", "§18.5 script value")),
    notes=("The reference ran 2 GPUs (--world_size 2, each rank a batch of B/2); this launcher passes the total "
           "batch B on one device (§18.5).",
           "Generator: this benchmark's DFQ uses G-L (nz 256, a 16x16 start map at 64 px, §18.6); the reference "
           "builds its G-Cu with --depth 3 (start map 8x8) and nz 256 for DFQ.",
           "Losses: the script's --loss l1 makes the reference distil with L1 on the logits and use -L1 as the "
           "adversarial term; this DFQ distils with KL at T and its adversarial term is -KL at T 1 (§4.3).",
           "The script passes --log_fidelity (Agreement@1, probability loyalty, §6.3): add it to log them too."),
    shared_notes=False)

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
                            notes={("cifar100", "wrn40_2", "wrn40_1"): "CMI README: 62.92"}),
    more_launchers=[TINY_LAUNCHER])


class DFQSynthesizer(GenerativeSynthesizer):
    """DFQ: the shared generative synthesizer with DFQ's weights (§4.7 row DFQ)."""

    recipe = RECIPE

    @dataclass(frozen=True)
    class Options(GenerativeSynthesizer.Options):
        DEFAULTS = {"nz": 256, "kd_steps": 10, "bn": 1.0, "oh": 1.0, "balance": 20.0, "adv": 1.0, "act": 0.0}
        #: §18.5 ljrprocc Tiny-ImageNet script (B the total of its 2 GPUs); its generator (G-Cu, depth 3) and its
        #: L1 losses are not this DFQ's: G-L and KL at T stay (see the launcher's notes).
        ROWS = {"tiny_imagenet": {"batch_size": 256, "epochs": 400, "kd_steps": 10, "T": 5.0, "balance": 20.0,
                                  "beta1": 0.9, "beta2": 0.99}}
