"""FastDFKD: a meta-learned generator adapted for a few steps per batch (METHODS.md §10).

One **meta-generator** (G-S, §1.7, ``nz = 256``, PyTorch default init, §10.3; above 64 px the
spatial-latent deep generator of the reference's ImageNet code, latents ``nz × S/16 × S/16``, §19.3)
is the initialisation of every synthetic batch's generator. One ``synthesize()`` (§10.6):

1. copy the meta weights θ (and BN buffers) into the **fast generator** θ' (one module reused
   for every call, in train mode); draw a fresh learnable latent batch ``z`` (Bs × nz) and
   target labels ``y`` from the noise stream; build a fresh inner Adam over
   ``[θ' @ lr_g, z @ lr_z]``;
2. run ``k = g_steps`` inner iterations on (§10.4)

       L = bn·L_bn^mmt + oh·CE(t, y) + adv·L_adv,    t = teacher(A(G_θ'(z))),

   where ``A`` is random crop (pad 4) + flip + normalise, ``L_bn^mmt`` the momentum BN loss of
   the teacher hook (§10.4, ``--bn_mmt``), and ``L_adv`` the masked adversarial KL at T = 1
   without T² against the eval-mode student — only once the adversarial gate is open
   (epoch ≥ warmup − 1, the [REF] synthesis-counter quirk ``n ≥ warmup`` of §10.7);
   the lowest-``L`` iterate ``g`` is remembered without a host sync;
3. **meta-update** (§10.5) with the persistent meta Adam (lr ``k·lr_g``): FOMAML-sum (default,
   the meta-gradient is the sum of the k inner gradients ``Σ_j ∇_θ' L_j``) or Reptile
   (``67·(θ − θ'_k)``);
4. blend the statistics of the last teacher forward into the BN hook's momentum memory and append
   the best ``g`` to the image pool (§3.5).

The student learns from the whole pool (crop + flip) with KL at T = 20, ×T² (§10.7).

[CLEAN] (§10.10): ``--reset_l0_epoch`` (default ``warmup + 119``; −1 = never) re-initialises the
meta-generator's Linear and first BN at the start of that epoch (the fixed ``c188487`` state,
with the [REF] N(0, 0.02) draw for the BN γ), once; the fast generator is a device-agnostic copy;
the pool lives in memory; ``--fast_meta fomaml|reptile`` and ``--fast_variant fast2|fast5|fast10``
(§10.8) name the reference's switches. Under fp16 the meta step goes through the same loss scaler
as the inner steps and is skipped when any meta-gradient is not finite. In multi-process runs
the meta-gradient is averaged over the ranks before the meta step, so every rank keeps one
meta-generator (§10.11).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
import torch.nn as nn

from datafree.augment import random_resized_crop_flip
from datafree.errors import UsageError
from datafree.models import fast_generator
from datafree.options import option
from datafree.published import PAIRS, Published
from datafree.synthesis.base import BNMomentumOptions, LatentOptions, SynthesisSetup, TestPreset, WidthOptions
from datafree.synthesis.pooled import PooledSynthesizer, Terms
from datafree.synthesis.recipe import Launcher, Recipe, Setting, settings

#: §10.8 variant table: k inner steps, inner generator lr, latent lr (meta lr = k·lr_g); "fast50" is the
#: reference's ImageNet row (§19.4).
FAST_VARIANTS: dict[str, dict[str, Any]] = {
    "fast2": {"g_steps": 2, "lr_g": 5e-3, "lr_z": 0.015},
    "fast5": {"g_steps": 5, "lr_g": 3e-3, "lr_z": 0.01},
    "fast10": {"g_steps": 10, "lr_g": 2e-3, "lr_z": 0.01},
    "fast50": {"g_steps": 50, "lr_g": 2e-4, "lr_z": 0.01},
}
#: Area range of the synthesis views' random resized crop in the ImageNet reference (§19.3).
RESIZED_VIEW_SCALE = (0.75, 1.0)
#: Reptile's hard-coded gradient factor, ``g_θ = 67·(θ − θ'_k)`` ([REF] ``fast_meta.py:16–20``, §10.5).
REPTILE_SCALE = 67.0
#: The [REF] resets the first layers at synthesis ``120 + warmup``, i.e. epoch index ``warmup + 119`` (§10.6).
RESET_EPOCHS_AFTER_WARMUP = 119
#: Standard deviation of the reset draws (Linear weight and, sic, first BN γ; §10.10 item 2).
RESET_STD = 0.02


#: The published script of every FastDFKD launcher (§10.8).
SCRIPT = "zju-vipa/Fast-Datafree @0dcecbc scripts/fast_cifar.sh"
#: pair -> (adv, oh, script lines) (§10.8); the script's lines are CIFAR-100 and its line 2 says to change only
#: --dataset for CIFAR-10.
SCRIPT_PAIRS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("resnet34", "resnet18"): ("1.33", "0.5", "4-8"), ("vgg11", "resnet18"): ("1.0", "0.5", "12-16"),
    ("wrn40_2", "wrn16_1"): ("1.1", "0.4", "20-24"), ("wrn40_2", "wrn40_1"): ("1.1", "0.4", "28-32"),
    ("wrn40_2", "wrn16_2"): ("1.1", "0.4", "36-40"),
}
#: variant -> (its name in §10.8, g_steps k, inner lr_g, lr_z), as the launchers spell them (FAST_VARIANTS: numbers).
VARIANT_SETTINGS: dict[str, tuple[str, str, str, str]] = {
    "fast2": ("Fast-2", "2", "5e-3", "0.015"), "fast5": ("Fast-5", "5", "3e-3", "0.01"),
    "fast10": ("Fast-10", "10", "2e-3", "0.01")}
#: §10.8 common values; the per-pair and per-variant values go before the seed.
COMMON_SETTINGS = settings(
    ("batch_size", "256", "§10.8 common"), ("synthesis_batch_size", "256", "§10.8 common (Bs = B)"),
    ("epochs", "220", "§10.8 common: 20 warm-up + 200 KD epochs"), ("warmup", "20", "§10.7 synthesis-only epochs"),
    ("ep_steps", "400", "§10.8 common"), ("kd_steps", "400", "§10.7: one synthesis per epoch"),
    ("lr", "0.2", "§10.7 student SGD"), ("eta_min", "2e-4", "§10.7 cosine floor"), ("T", "20", "§10.7 KL at T = 20"),
    ("bn", "10", "§10.8 common"), ("bn_mmt", "0.9", "§10.4 momentum BN loss"), ("nz", "256", "§10.3 G-S latent"),
    ("ngf", "64", "§10.3"), ("beta1", "0.5", "§10.5 Adam betas, inner and meta"), ("beta2", "0.999", "§10.5"),
    ("fast_meta", "fomaml", "§10.5 FOMAML-sum (--is_maml 1 in every script)"),
    ("reset_l0_epoch", "139", "§10.6: reset at synthesis 120 + warmup = epoch 139 (fixed c188487 state)"),
    ("seed", "0", "§10.8 common"))


def recipe_launcher(cell: tuple[str, str, str], variant: str) -> Launcher:
    """The §10.8 launcher of one cell and variant (the script's lines are the same for both datasets)."""
    adv, oh, lines = SCRIPT_PAIRS[cell[1:]]
    title, g_steps, lr_g, lr_z = VARIANT_SETTINGS[variant]
    where = f"{SCRIPT} lines {lines}"
    values = (*COMMON_SETTINGS[:-1], Setting("adv", adv, f"§10.8 per-pair script value ({where})"),
              Setting("oh", oh, "§10.8 per-pair script value"), Setting("fast_variant", variant, f"§10.8 {title}"),
              Setting("g_steps", g_steps, f"§10.8 {variant}: k generator steps per batch"),
              Setting("lr_g", lr_g, f"§10.8 {variant}: inner generator lr (meta lr = k * lr_g)"),
              Setting("lr_z", lr_z, f"§10.8 {variant}: latent lr"), COMMON_SETTINGS[-1])
    notes = (("The script's lines are CIFAR-100; its line 2 says to change only --dataset for CIFAR-10 (§10.8, "
              "§13 item 4).",) if cell[0] == "cifar10" else ())
    return Launcher(*cell, what=f"published configuration ({title}, §10.8)",
                    source=f"{where} (docs/METHODS.md §10.8)", settings=values, variant=variant, notes=notes)


#: §19.4: Fast-50 on ImageNet, the three logged runs of the reference's ImageNet driver (their header values).
IMAGENET_SOURCE = "zju-vipa/Fast-Datafree @0dcecbc datafree_kd_imagenet.py and the headers of its logs/ (§19.4)"
IMAGENET_SETTINGS = settings(
    ("batch_size", "100", "log header (Bs = B)"), ("synthesis_batch_size", "100", "log header: unset, so = B"),
    ("epochs", "400", "log header"), ("warmup", "0", "the ImageNet driver has no warm-up (start_kd 0)"),
    ("ep_steps", "1000", "log header: 10 syntheses of 100 KD steps per epoch"), ("kd_steps", "100", "log header"),
    ("lr", "0.1", "log header: student SGD"), ("weight_decay", "1e-4", "log header"),
    ("lr_schedule", "cosine", "datafree_kd_imagenet.py: cosine over the 400 epochs"),
    ("eta_min", "0", "PyTorch's cosine floor (the driver sets none)"), ("T", "5", "log header: KL at T 5"),
    ("bn", "0.1", "log header"), ("oh", "0.1", "log header"), ("bn_mmt", "0.9", "log header"),
    ("nz", "256", "§19.3: a spatial latent 256x14x14"), ("ngf", "64", "§19.3"),
    ("beta1", "0.5", "fast_meta_imagenet.py: Adam betas (0.5, 0.999), inner and meta"), ("beta2", "0.999", "§19.4"),
    ("fast_meta", "reptile", "log header: is_maml 0 (Reptile)"),
    ("reset_l0_epoch", "-1", "the ImageNet code never resets (reset_l0 0; §19.3)"),
    ("fast_variant", "fast50", "log header: Fast-50"),
    ("g_steps", "50", "log header: 50 generator steps per batch"), ("lr_g", "2e-4", "log header: inner generator lr"),
    ("lr_z", "0.01", "log header: inner latent lr"),
    ("lr_g_meta", "1e-4", "log header: lr_g_meta (the meta Adam on the generator)"),
    ("lr_z_meta", "5e-3", "log header: lr_z_meta (one meta-learned latent batch, 100x256x14x14)"),
    ("z_reinit", "50", "log header: reinit 50 (new latents and meta Adam every 50 syntheses)"),
    ("reptile_scale", "1", "fast_meta_imagenet.py: Reptile gradient theta - theta' (no factor)"),
    ("synthesis_crop", "resized", "fast_meta_imagenet.py: RandomResizedCrop(224, scale 0.75-1) + flip"))
#: pair -> (adv, its comment, reported notes) of the three logged runs (§19.4).
IMAGENET_PAIRS: dict[tuple[str, str], tuple[str, str, tuple[str, ...]]] = {
    ("tv_resnet50", "tv_resnet50"): ("0.1", "log header", ("The log's best is 68.618.",)),
    ("tv_resnet50", "tv_resnet18"): ("1.0", "log header of the final run (a first attempt used adv 0.01, lr 0.01)",
                                     ()),
    ("tv_resnet50", "tv_mobilenet_v2"): ("0.1", "log header", ("The log's best is 43.024.",)),
}
#: Where this FastDFKD still differs from the reference's ImageNet run (§19.4).
IMAGENET_MISSING = (
    "A re-run, not a reproduction (§19.4): the reference reads its pool through the ImageNet training transform "
    "(RandomResizedCrop(224) + flip); here KD batches take the dataset entry's 4-px crop + flip (§19.1).",
    "The reference pools the last inner iterate; this one the lowest-loss iterate (§10.6).",
    "The logs name a --cmi_init folder (a pool from earlier runs); whether it held images is not known, and the "
    "released datafree_kd_imagenet.py does not parse, so the logs come from an earlier code state.",
    "The pool grows to 400,000 images (60.2 GB uint8; on the host with --pool_device auto, §21.3), against the "
    "README's '140k' (§19.4).")


def imagenet_launcher(teacher: str, student: str) -> Launcher:
    """The Fast-50 launcher of one ImageNet pair (§19.4)."""
    adv, comment, _ = IMAGENET_PAIRS[(teacher, student)]
    values = (*IMAGENET_SETTINGS, Setting("adv", adv, comment), Setting("seed", "0", "log header"))
    return Launcher("imagenet", teacher, student, what="Fast-50, the values of the reference's ImageNet log",
                    source=IMAGENET_SOURCE, settings=values, variant="fast50", sections="§10, §19.4",
                    notes=IMAGENET_MISSING, reported_notes=IMAGENET_PAIRS[(teacher, student)][2], shared_notes=False)


#: The Fast-Datafree README's ImageNet table (§19.4): Fast-50, in the order of IMAGENET_PAIRS.
IMAGENET_TABLE = (68.61, 53.45, 43.02)
#: The Fast-Datafree README's table (§10.9): dataset -> variant -> values in the order of PAIRS.
PAPER_TABLE = {"cifar10": {"fast2": [92.62, 84.67, 89.56, 89.68, 88.36], "fast5": [93.63, 89.94, 92.04, 91.96, 88.90],
                           "fast10": [94.05, 90.53, 92.51, 92.45, 89.29]},
               "cifar100": {"fast2": [69.76, 62.83, 53.15, 57.08, 41.77], "fast5": [72.82, 65.28, 61.80, 63.83, 52.90],
                            "fast10": [74.34, 67.44, 63.91, 65.12, 54.02]}}
#: FastDFKD's recipe (datafree.synthesis.recipe): every pair in the three variants of §10.8 and §10.9's numbers.
RECIPE = Recipe(
    label="FastDFKD", name="meta-learned generator", section="§10", table_row=6,
    variants=(*VARIANT_SETTINGS, "fast50"),
    launchers=(*(recipe_launcher((dataset, teacher, student), variant) for dataset, pairs in PAIRS.items()
                 for teacher, student in pairs for variant in VARIANT_SETTINGS),
               *(imagenet_launcher(teacher, student) for teacher, student in IMAGENET_PAIRS)),
    notes=("The pool is in memory (uint8), never a folder of PNGs that a rerun would silently reuse (§10.10 item 5).",
           "Cosine schedule over the 200 KD epochs (epochs - warmup), not the script's hard-coded 200 "
           "(§10.10 item 6).",
           "Reported hours are synthesis-only; benchmarks/throughput.py reports both synthesis and full-run time "
           "(§10.9)."),
    published={**{(variant, dataset, teacher, student): Published(
        value, "reproduction", "Fast-Datafree README (§10.9)",
        "the code state behind the paper is unknown (§13 item 3)")
        for dataset, variants in PAPER_TABLE.items() for variant, values in variants.items()
        for (teacher, student), value in zip(PAIRS[dataset], values)},
        **{("fast50", "imagenet", teacher, student): Published(
            value, "re-run", "Fast-Datafree README and logs (§19.4)",
            "this FastDFKD reads its pool with the 4-px crop and pools the best iterate; the reference's code "
            "state is unknown (§19.4)")
           for (teacher, student), value in zip(IMAGENET_PAIRS, IMAGENET_TABLE)}})


class FastSynthesizer(PooledSynthesizer):
    """FastDFKD (§10): a meta-learned G-S, cloned and adapted for k steps per batch, pooled images."""

    recipe = RECIPE

    #: docs/METHODS.md §10.12
    TEST_PRESET = TestPreset(tiny_flags=("--warmup", "0", "--synthesis_batch_size", "8"),
                             learning_flags=("--epochs", "5", "--warmup", "1", "--ep_steps", "30", "--kd_steps", "10",
                                             "--g_steps", "5", "--ngf", "16"), fp16_backoffs=1)

    @dataclass(frozen=True)
    class Options(LatentOptions, WidthOptions, BNMomentumOptions, PooledSynthesizer.Options):
        """FastDFKD options (§10)"""

        #: §10.11 defaults (wrn40_2 row, both datasets, §10.8). ``g_steps``, ``lr_g`` and ``lr_z`` come from
        #: ``--fast_variant`` unless given; ``reset_l0_epoch`` defaults to warmup + 119. ``synthesis_batch_size``
        #: is tied to the batch: Bs = B = 256 (§10.8).
        DEFAULTS = {"batch_size": 256, "epochs": 220, "warmup": 20, "ep_steps": 400, "kd_steps": 400,
                    "g_steps": None, "lr_g": None, "lr": 0.2, "eta_min": 2e-4, "beta1": 0.5, "beta2": 0.999,
                    "T": 20.0, "adv": 1.1, "bn": 10.0, "oh": 0.4, "bn_mmt": 0.9, "nz": 256, "ngf": 64}

        #: §19.4 Fast-50 on ImageNet (the reference's log headers), with its meta-learned latents, meta lrs,
        #: Reptile without factor and resized-crop views (§19.3).
        ROWS = {"imagenet": {"batch_size": 100, "epochs": 400, "warmup": 0, "ep_steps": 1000, "kd_steps": 100,
                             "fast_variant": "fast50", "lr": 0.1, "weight_decay": 1e-4, "lr_schedule": "cosine",
                             "eta_min": 0.0, "T": 5.0, "adv": 0.1, "bn": 0.1, "oh": 0.1, "bn_mmt": 0.9,
                             "fast_meta": "reptile", "nz": 256, "reset_l0_epoch": -1, "lr_g_meta": 1e-4,
                             "lr_z_meta": 5e-3, "z_reinit": 50, "reptile_scale": 1.0, "synthesis_crop": "resized"}}

        fast_variant: str = option("fast10", "Fast-k row of §10.8 (fast50: the ImageNet row, §19.4): sets --g_steps, "
                                             "--lr_g, --lr_z unless given", choices=sorted(FAST_VARIANTS))
        fast_meta: str = option("fomaml", "meta-gradient: FOMAML sum of the inner gradients or Reptile ×67",
                                choices=("fomaml", "reptile"))
        lr_z: float | None = option(None, "Fast latent learning rate (unset: the variant's)", "positive")
        reset_l0_epoch: int | None = option(None, "epoch at which Fast re-initialises the meta-generator's Linear "
                                                  "and first BN (unset: warmup + 119; -1 = never)")
        lr_g_meta: float | None = option(None, "Fast: lr of the meta Adam on the generator (unset: g_steps x lr_g, "
                                               "§10.5; the ImageNet reference 1e-4, §19.3)", "positive")
        lr_z_meta: float = option(0.0, "Fast: meta-learn one latent batch with a meta Adam at this lr, as the "
                                        "ImageNet reference (5e-3, §19.3); 0: fresh latents per synthesis",
                                  "non_negative")
        z_reinit: int = option(0, "Fast with --lr_z_meta: re-draw the meta latents and a fresh meta Adam every this "
                                  "many syntheses (0: never; the ImageNet reference 50, §19.3)", "non_negative")
        reptile_scale: float = option(REPTILE_SCALE, "Fast: factor of the Reptile meta-gradient theta - theta' "
                                                     "([REF] 67 on CIFAR, 1 on ImageNet; §10.5, §19.3)", "positive")
        synthesis_crop: str = option("crop", "Fast: the synthesis views: the dataset's crop + flip, or resized "
                                             "(RandomResizedCrop, scale 0.75-1, + flip: the ImageNet reference, §19.3)",
                                     choices=("crop", "resized"))

        def derive(self) -> None:
            """``g_steps``/``lr_g``/``lr_z`` from ``--fast_variant`` where not given, and the reset epoch."""
            super().derive()
            for key, value in FAST_VARIANTS[self.fast_variant].items():
                if getattr(self, key) is None:
                    self.set(key, value)
            if self.reset_l0_epoch is None:
                self.set("reset_l0_epoch", self.warmup + RESET_EPOCHS_AFTER_WARMUP)

        def validate(self) -> None:
            super().validate()
            if self.reset_l0_epoch < -1:
                raise UsageError(f"--reset_l0_epoch must be an epoch index >= 0, or -1 for no reset; "
                                 f"got {self.reset_l0_epoch}")
            if max(self.bn, self.oh) <= 0:
                raise UsageError("FastDFKD needs --bn or --oh above 0 (the adversarial term alone is off in warm-up)")
            if self.z_reinit and not self.lr_z_meta:
                raise UsageError("--z_reinit re-draws meta-learned latents: it needs --lr_z_meta")

    def __init__(self, setup: SynthesisSetup, options: Options) -> None:
        super().__init__(setup, options)
        self.latent_dim = options.nz
        self.latent_lr = options.lr_z
        self.meta_rule = options.fast_meta
        self.warmup = options.warmup
        self.reset_epoch = options.reset_l0_epoch
        # G-S up to 64 px; above, the spatial-latent deep generator of Fast's ImageNet code (§19.3).
        self.meta_generator = fast_generator(nz=self.latent_dim, ngf=options.ngf, img_size=setup.image_size,
                                             out_channels=setup.channels).to(setup.device)
        if not hasattr(self.meta_generator, "linear") and 0 <= self.reset_epoch < setup.epochs:
            raise UsageError(f"--reset_l0_epoch {self.reset_epoch} re-initialises G-S's Linear, but at "
                             f"{setup.image_size} px Fast's deep generator has none (the reference's ImageNet "
                             "code never resets, §19.3): pass --reset_l0_epoch -1")
        # θ': one module for every synthesis, overwritten with θ at the start of each call.
        self.fast_generator = copy.deepcopy(self.meta_generator)
        self.meta_lr = options.lr_g_meta if options.lr_g_meta is not None else self.synthesis_lr * self.g_steps
        self.latent_meta_lr = options.lr_z_meta or None   # 0: no meta-learned latents
        self.latent_reinit = options.z_reinit
        self.reptile_scale = options.reptile_scale
        self.resized_views = options.synthesis_crop == "resized"
        self.syntheses = 0   # synthesize() calls so far (the re-draw period of the meta latents)
        self.meta_latents: torch.Tensor | None = None
        self.meta_optimizer = self.new_meta_optimizer()
        self.reset_done = False
        self.adversarial_open = self.gate_open(0)

    def new_meta_optimizer(self) -> torch.optim.Adam:
        """The meta Adam: on θ at ``--lr_g_meta`` (default k·lr_g, §10.5) and, with ``--lr_z_meta``, on a
        freshly drawn meta latent batch at that lr (the ImageNet reference, §19.3)."""
        groups: list[dict[str, Any]] = [{"params": list(self.meta_generator.parameters()), "lr": self.meta_lr}]
        if self.latent_meta_lr is not None:
            shape = (self.setup.synthesis_batch_size, *self.meta_generator.latent_shape)
            self.meta_latents = self.randn(*shape).requires_grad_(True)
            groups.append({"params": [self.meta_latents], "lr": self.latent_meta_lr})
        return torch.optim.Adam(groups, betas=self.betas)

    # ------------------------------------------------------------------ loop hooks
    def gate_open(self, epoch: int) -> bool:
        """Adversarial gate (§10.7): [REF] ``n ≥ warmup``, at one synthesis per epoch ``epoch ≥ warmup − 1``."""
        return epoch >= self.warmup - 1

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        """Open the adversarial gate from epoch ``warmup − 1``; reset the first layers at ``--reset_l0_epoch``.

        Idempotent: the reset happens once per run (``reset_done`` is part of the state).
        """
        self.adversarial_open = self.gate_open(epoch)
        if epoch == self.reset_epoch and not self.reset_done:
            self.reset_first_layers()
            self.reset_done = True
        return {"adv_weight": self.adv if self.adversarial_open else 0.0}

    @torch.no_grad()
    def reset_first_layers(self) -> None:
        """Re-initialise the meta-generator's Linear and first BN (§10.6, §10.10 items 1–2).

        Linear weight ~ N(0, 0.02), bias 0; first BN γ ~ N(0, 0.02) (sic, as in [REF]), β 0; draws from
        the noise stream. The meta Adam state is kept. Under torchrun rank 0's draw is broadcast.
        """
        linear, first_norm = self.meta_generator.linear, self.meta_generator.conv_blocks[0]
        assert isinstance(first_norm, nn.BatchNorm2d)
        for layer in (linear, first_norm):
            layer.weight.normal_(0.0, RESET_STD, generator=self.noise_stream)
            layer.bias.zero_()
        if self.setup.world_size > 1:
            for tensor in (linear.weight, linear.bias, first_norm.weight, first_norm.bias):
                dist.broadcast(tensor, src=0)

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """All ranks keep one meta-generator: rank 0's weights now, averaged meta-gradients later (§10.11)."""
        if self.setup.world_size > 1:
            with torch.no_grad():
                for tensor in self.meta_generator.state_dict().values():
                    dist.broadcast(tensor, src=0)

    def persistent_parameters(self) -> list[nn.Parameter]:
        """The meta-generator θ (the fast generator is overwritten at every call)."""
        return list(self.meta_generator.parameters())

    # ------------------------------------------------------------------ synthesis
    def synthesize(self) -> dict[str, torch.Tensor]:
        """One synthetic batch: clone θ, k inner steps on (θ', z), one meta step, pool the best batch (§10.6).

        Logs the last iteration's terms (``loss_bn``, ``loss_oh``, ``loss_adv``, ``loss_synthesis``), the
        lowest L (``loss_synthesis_best``) and L at iteration 0, i.e. of the meta-generator itself on fresh
        latents (``loss_synthesis_first``): it falls as meta-learning improves the initialisation (§10.12).
        """
        count = self.setup.synthesis_batch_size
        self.fast_generator.load_state_dict(self.meta_generator.state_dict())
        self.fast_generator.train()
        self.syntheses += 1
        if self.meta_latents is None:
            latents = self.randn(count, *self.meta_generator.latent_shape).requires_grad_(True)
        else:
            if self.latent_reinit and self.syntheses % self.latent_reinit == 0:
                self.meta_optimizer = self.new_meta_optimizer()   # [REF] --reinit: new z, new meta Adam
            latents = self.meta_latents.detach().clone().requires_grad_(True)
        targets = self.random_labels(count)
        inner_optimizer = torch.optim.Adam([{"params": self.fast_generator.parameters(), "lr": self.synthesis_lr},
                                            {"params": [latents], "lr": self.latent_lr}], betas=self.betas)
        fast_parameters = list(self.fast_generator.parameters())
        # Σ_j ∇θ' L_j (unscaled): the FOMAML meta-gradient, and the non-finite check of Reptile under fp16.
        gradient_sum = self.zeroed_meta_gradients() if self.sums_inner_gradients() else None

        def objective() -> tuple[Terms, tuple[torch.Tensor, ...]]:
            images = self.forward_float(self.fast_generator, latents)
            view = self.normalizer(self.synthesis_view(images))
            terms, _ = self.teacher_prior(view, targets, adversarial=self.adv > 0 and self.adversarial_open)
            return terms, (images,)

        inner_tensors = fast_parameters + ([latents] if self.meta_latents is not None else [])

        def add_inner_gradients() -> None:   # the fast gradients are unscaled after the step
            torch._foreach_add_(gradient_sum, [self.gradient_of(p) for p in inner_tensors])

        result = self.invert(objective, [inner_optimizer],
                             after_step=add_inner_gradients if gradient_sum is not None else None)
        self.meta_step(gradient_sum, latents)
        if self.bn_hook is not None:
            self.bn_hook.update_momentum()   # statistics of this synthesis' last teacher forward (§10.4)
        self.store(result.best[0])
        return {"loss_synthesis_first": result.first_loss, **result.logged, "loss_synthesis_best": result.best_loss}

    def synthesis_view(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's view of a synthetic batch: the dataset's crop + flip (§10.4), or with
        ``--synthesis_crop resized`` RandomResizedCrop (scale 0.75–1) + flip (§19.3)."""
        if self.resized_views:
            return random_resized_crop_flip(images, scale=RESIZED_VIEW_SCALE, flip_prob=self.flip_probability,
                                            generator=self.augmentation_stream)
        return self.pool_augment(images)

    # ------------------------------------------------------------------ meta-update
    def meta_tensors(self) -> list[torch.Tensor]:
        """What the meta Adam steps: θ, then the meta latents when they are learned (§19.3)."""
        return list(self.meta_generator.parameters()) + ([self.meta_latents] if self.meta_latents is not None else [])

    def sums_inner_gradients(self) -> bool:
        """FOMAML needs the sum; Reptile only under an enabled loss scaler (to skip on overflow)."""
        return self.meta_rule == "fomaml" or self.scaler.is_enabled()

    def zeroed_meta_gradients(self) -> list[torch.Tensor]:
        """The ``.grad`` tensors of :meth:`meta_tensors`, zeroed (allocated once, then reused)."""
        gradients = []
        for parameter in self.meta_tensors():
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            else:
                parameter.grad.zero_()
            gradients.append(parameter.grad)
        return gradients

    @staticmethod
    def gradient_of(parameter: torch.Tensor) -> torch.Tensor:
        return parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)

    def meta_step(self, gradient_sum: list[torch.Tensor] | None, latents: torch.Tensor) -> None:
        """Set the meta-gradient (FOMAML sum or Reptile ``--reptile_scale``·(θ − θ'_k)), average it over
        ranks, step (§10.5). Meta-learned latents (§19.3) get the same rule from their inner copy
        ``latents``; they are each rank's own and are not averaged.

        The step goes through the run's loss scaler: the (unscaled) meta-gradient is scaled by the
        current scale and ``scaler.step`` unscales it again (exactly: the scale is a power of two),
        so under fp16 a meta-gradient with an inf / NaN skips the step (and backs the scale off);
        in fp32 / bf16 this is a plain Adam step.
        """
        meta_tensors = self.meta_tensors()
        if self.meta_rule == "reptile":
            inner = [p.detach() for p in self.fast_generator.parameters()]
            if self.meta_latents is not None:
                inner.append(latents.detach())
            with torch.no_grad():
                differences = torch._foreach_sub([p.detach() for p in meta_tensors], inner)
                torch._foreach_mul_(differences, self.reptile_scale)
                if gradient_sum is not None:
                    # 0 when every inner gradient was finite, NaN otherwise: the scaler then skips.
                    poison = torch.stack([gradient.sum() for gradient in gradient_sum]).sum() * 0.0
                    torch._foreach_add_(differences, poison)
            for tensor, difference in zip(meta_tensors, differences):
                tensor.grad = difference
        generator_count = len(list(self.meta_generator.parameters()))
        self.average_across_ranks([tensor.grad for tensor in meta_tensors[:generator_count]])
        for tensor in meta_tensors:
            tensor.grad = self.scaler.scale(tensor.grad)
        self.scaler.step(self.meta_optimizer)
        self.scaler.update()

    def average_across_ranks(self, gradients: list[torch.Tensor]) -> None:
        """Mean of the meta-gradient over the ranks (one all-reduce of a flat buffer); no-op on one rank."""
        world_size = self.setup.world_size
        if world_size <= 1:
            return
        flat = torch.cat([gradient.reshape(-1) for gradient in gradients])
        dist.all_reduce(flat)
        flat.div_(world_size)
        for gradient, averaged in zip(gradients, flat.split([gradient.numel() for gradient in gradients])):
            gradient.copy_(averaged.view_as(gradient))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Meta-generator, meta Adam, reset flag, plus pool, RNG streams, scaler and BN momentum memory;
        with ``--lr_z_meta`` the meta latents and the synthesis count too (§19.3)."""
        state = {**super().state_dict(), "meta_generator": self.meta_generator.state_dict(),
                 "meta_optimizer": self.meta_optimizer.state_dict(), "reset_done": self.reset_done}
        if self.meta_latents is not None:
            state.update(meta_latents=self.meta_latents.detach().clone(), syntheses=self.syntheses)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.meta_generator.load_state_dict(state["meta_generator"])
        if self.meta_latents is not None:
            with torch.no_grad():
                self.meta_latents.copy_(state["meta_latents"].to(self.device))
            self.syntheses = int(state["syntheses"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.reset_done = bool(state["reset_done"])
