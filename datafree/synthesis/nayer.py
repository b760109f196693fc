"""NAYER: noisy-layer generation from label embeddings (METHODS.md §11).

The generator's input is **constant and meaningful**: the embedding ``E[y]`` of each target
class (CLIP text features of the class name in the paper; ``--label_embeddings``, §11.3). The
randomness lives in the **noisy layers** ``NL_c`` between the embedding and the generator body
(:class:`datafree.models.NoisyLayerGenerator`, §11.4), which are re-initialised (weights
N(0, 1), biases 0) before every synthetic batch and then trained with the rest of the generator.

One ``synthesize()`` is one epoch's synthesis (§11.6): ``gwp_loops`` batches in the warm-up
epochs (``epoch < warmup``), ``g_loops`` afterwards. Per batch: re-initialise the noisy layers,
take balanced labels (⌊Bs/C⌋ copies of 0..C−1, so every noisy layer makes one image per class),
build a **fresh** Adam over all generator parameters, and run ``g_steps`` iterations of

    g = G(y);  x = normalise(crop_pad4_flip(g));  t = teacher(x)
    L = bn·L_bn^mmt + oh·CE(t, y) + adv·L_adv                                   (§11.5)

with ``L_bn^mmt`` the BN-statistics loss blended with past batches (momentum ``bn_mmt``, §10.4)
and ``L_adv`` the agreement-masked KL at T = 1 against the student (eval mode), only from the
first KD epoch (``epoch ≥ warmup``; the student is not queried before). The lowest-``L``
iterate ``g`` goes to the image pool (§3.5); the BN momentum memory is updated after the batch.
The student then learns from the whole pool with KL at T = 20 (the base criterion).

The generator body and BN1d persist across batches; the whole generator is re-created — in
place, PyTorch-default init from the noise stream — at the start of every epoch with
``(epoch − warmup) % g_life == 0 or epoch % g_life == 0`` (epochs 0, 10, 20, … for the
published warmup 20 / g_life 10; the rule is kept verbatim, §11.10 item 7).

[CLEAN] (§11.10): the student is in eval for every batch's query (``--nayer_ref_student_mode``
reproduces [REF], which queries it in train mode from the second batch of an epoch and so
updates its BN running statistics); no wandb, no per-iteration printing; an in-memory uint8
pool instead of PNG files; embeddings from a ``.pt``/``.npy`` tensor, never a pickle.
Multi-process runs share nothing: every rank re-creates and trains its own generator (§13 item 8).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn

from datafree.synthesis import label_embeddings
from datafree.errors import UsageError
from datafree.models import NoisyLayerGenerator, reset_default_init
from datafree.options import derived, option
from datafree.published import ALL_CELLS, Published
from datafree.synthesis.base import BNMomentumOptions, SynthesisSetup, TestPreset, WidthOptions
from datafree.synthesis.pooled import PooledSynthesizer, Terms
from datafree.synthesis.recipe import Launcher, Recipe, Setting, settings


def balanced_labels(count: int, num_classes: int, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """NAYER's target labels (§11.4): ⌊count/C⌋ copies of ``[0, 1, …, C−1]`` concatenated, then
    ``count mod C`` labels uniform in [0, C) drawn from ``generator`` (none when C divides count).

    Every chunk of C consecutive rows therefore holds each class exactly once, so noisy layer
    ``c`` makes one image per class.
    """
    copies, extra = divmod(count, num_classes)
    labels = torch.arange(num_classes, device=device).repeat(copies)
    if extra:
        random = torch.randint(0, num_classes, (extra,), device=device, generator=generator)
        labels = torch.cat([labels, random])
    return labels


def recreation_epoch(epoch: int, warmup: int, life: int) -> bool:
    """True when the generator is re-created at the start of ``epoch`` (§11.6, kept verbatim)."""
    return (epoch - warmup) % life == 0 or epoch % life == 0


#: The published scripts of every NAYER launcher (§11.8): identical for every pair.
SCRIPT = "tmtuan1307/NAYER @c6bedcd scripts/nayer_{100,200,300}.sh"
#: variant -> (its name in §11.7, epochs = KD epochs + 20 warm-up).
VARIANT_EPOCHS = {"nayer100": ("NAYER-100", "120"), "nayer200": ("NAYER-200", "220"), "nayer300": ("NAYER-300", "320")}
#: dataset -> (g_steps, its comment) (§11.8).
DATASET_G_STEPS = {"cifar10": ("30", "§11.8 CIFAR-10"), "cifar100": ("40", "§11.8 CIFAR-100")}
#: §11.8 common values; epochs and g_steps go after the first two.
COMMON_SETTINGS = settings(
    ("batch_size", "512", "§11.8"), ("synthesis_batch_size", "400", "§11.8 (40 noisy layers on CIFAR-10, 4 on 100)"),
    ("warmup", "20", "§11.7 synthesis-only epochs"), ("ep_steps", "400", "§11.7"),
    ("kd_steps", "400", "§11.7: one synthesis (g_loops batches) per epoch"), ("g_loops", "2", "§11.8"),
    ("gwp_loops", "10", "§11.8 batches per warm-up epoch"),
    ("g_life", "10", "§11.6 generator re-created every 10 epochs"),
    ("lr", "0.2", "§11.7"), ("eta_min", "2e-4", "§11.7"), ("lr_g", "4e-3", "§11.8"), ("beta1", "0.5", "§11.6"),
    ("beta2", "0.999", "§11.6"), ("T", "20", "§11.7"), ("adv", "1.33", "§11.8"), ("bn", "10", "§11.8"),
    ("oh", "0.5", "§11.8"), ("bn_mmt", "0.9", "§11.5"), ("ngf", "64", "§11.4"), ("le_hidden", "1000", "§11.4"),
    ("label_embeddings", "teacher_fc", "§11.3 offline substitute (a deviation); pass --label_embeddings PATH "
                                       "with CLIP ViT-B/32 class-name features (README) for the paper's input"),
    ("seed", "0", "§11.8 driver default"))


def recipe_launcher(cell: tuple[str, str, str], variant: str) -> Launcher:
    """The §11.8 launcher of one cell and variant."""
    title, epochs = VARIANT_EPOCHS[variant]
    g_steps, g_steps_comment = DATASET_G_STEPS[cell[0]]
    values = (*COMMON_SETTINGS[:2],
              Setting("epochs", epochs, f"§11.7 {title}: {int(epochs) - 20} KD epochs + 20 warm-up"),
              Setting("g_steps", g_steps, g_steps_comment), *COMMON_SETTINGS[2:])
    return Launcher(*cell, what=f"published configuration ({title}; identical for every pair, §11.8)",
                    source=f"{SCRIPT} (docs/METHODS.md §11.8)", settings=values, variant=variant)


#: NAYER's recipe (datafree.synthesis.recipe): every pair in the three variants of §11.8 and §11.9's figure.
RECIPE = Recipe(
    label="NAYER", name="noisy-layer generation", section="§11", table_row=7, variants=tuple(VARIANT_EPOCHS),
    launchers=tuple(recipe_launcher(cell, variant) for cell in ALL_CELLS for variant in VARIANT_EPOCHS),
    notes=("Without --label_embeddings PATH the run uses the teacher_fc substitute: report it as NAYER (teacher-FC "
           "embedding), not as the paper's NAYER (§11.3).",
           "The student is queried in eval mode for every batch; --nayer_ref_student_mode reproduces the reference's "
           "train-mode leak (§11.10 item 1)."),
    # the repository has only a figure, for CIFAR-100 wrn40_2->wrn16_2 (§11.9, §13 item 1)
    published={(variant, "cifar100", "wrn40_2", "wrn16_2"): Published(
        value, "read off a figure", "NAYER README figure (§11.9)", "approximate")
        for variant, value in {"nayer100": 70.2, "nayer200": 71.2, "nayer300": 71.7}.items()})


class NAYERSynthesizer(PooledSynthesizer):
    """NAYER: noisy-layer generation from label embeddings (§11)."""

    recipe = RECIPE

    #: §11.12 with 5 generator steps and Bs 20 (not 10 and 40) for speed; 90-100 % over seeds 0-4.
    TEST_PRESET = TestPreset(tiny_flags=("--warmup", "0", "--synthesis_batch_size", "10", "--g_loops", "1",
                                         "--gwp_loops", "1", "--le_hidden", "64"),
                             learning_flags=("--epochs", "4", "--warmup", "1", "--ep_steps", "30", "--kd_steps", "30",
                                             "--g_steps", "5", "--g_loops", "2", "--gwp_loops", "4",
                                             "--synthesis_batch_size", "20", "--ngf", "16", "--label_embeddings",
                                             "random"), fp16_backoffs=1)

    @dataclass(frozen=True)
    class Options(WidthOptions, BNMomentumOptions, PooledSynthesizer.Options):
        """NAYER options (§11)"""

        #: §11.8 / §11.11: NAYER-200 on CIFAR-10 (E = 220 including 20 warm-up epochs).
        DEFAULTS = {"batch_size": 512, "synthesis_batch_size": 400, "epochs": 220, "warmup": 20, "ep_steps": 400,
                    "kd_steps": 400, "g_steps": 30, "lr": 0.2, "eta_min": 2e-4, "lr_g": 4e-3, "beta1": 0.5,
                    "beta2": 0.999, "T": 20.0, "adv": 1.33, "bn": 10.0, "oh": 0.5, "bn_mmt": 0.9, "ngf": 64}
        #: §11.8: CIFAR-100 takes 40 generator iterations per batch; at 64 and 224 px the reference's pool
        #: augmentation is the padding-4 crop without the flip (§18.6).
        ROWS = {"cifar100": {"g_steps": 40}, "tiny_imagenet": {"pool_flip": "off"}, "imagenet": {"pool_flip": "off"}}

        g_loops: int = option(2, "NAYER synthetic batches per epoch after warm-up", "positive")
        gwp_loops: int = option(10, "NAYER synthetic batches per warm-up epoch", "positive")
        g_life: int = option(10, "NAYER generator re-creation period in epochs", "positive")
        le_hidden: int = option(1000, "NAYER noisy-layer output width", "positive")
        label_embeddings: str = option(
            label_embeddings.TEACHER_FC, "class embeddings fed to the generator: a C x D .pt/.npy tensor (the paper: "
            "CLIP ViT-B/32 text features of 'a image of {name}'), or teacher_fc (rows of the teacher's last Linear, "
            "a deviation) or random (N(0, I) codes, an ablation)")
        pool_flip: str = option("dataset", "NAYER: the horizontal flip of its crop augmentation, as the dataset entry "
                                           "says or off ([REF] on Tiny-ImageNet and ImageNet, §18.6)",
                                choices=("dataset", "off"))
        nayer_ref_student_mode: bool = option(
            False, "NAYER: reproduce the reference's student query in train mode from the second batch of an epoch "
                   "(updates the student's BN statistics; §11.10 item 1)")
        #: The embedding file's SHA-256 (None for a keyword), so that config.yaml pins its content (§11.3).
        label_embeddings_sha256: str | None = derived()

        def derive(self) -> None:
            super().derive()
            self.set("label_embeddings_sha256", label_embeddings.source_sha256(self.label_embeddings))

        def validate(self) -> None:
            super().validate()
            count, classes = self.synthesis_batch_size, self.num_classes
            if count % classes:
                raise UsageError(f"--synthesis_batch_size ({count}) must be a multiple of the class count ({classes}) "
                                 f"for NAYER's balanced labels (§11.4: every noisy layer makes one image per class); "
                                 f"pass e.g. {max(1, round(count / classes)) * classes}")
            label_embeddings.check_source(self.label_embeddings, classes)

    def __init__(self, setup: SynthesisSetup, options: Options) -> None:
        super().__init__(setup, options)
        self.flip_off = options.pool_flip == "off"
        self.warmup = options.warmup
        self.loops = options.g_loops
        self.warmup_loops = options.gwp_loops
        self.life = options.g_life
        self.ref_student_mode = options.nayer_ref_student_mode
        embeddings, self.embedding_description = label_embeddings.load_label_embeddings(
            options.label_embeddings, setup.num_classes, self.teacher, setup.seed)
        self.image_generator = NoisyLayerGenerator(
            embeddings.to(setup.device), hidden=options.le_hidden, ngf=options.ngf,
            img_size=setup.image_size, batch_size=setup.synthesis_batch_size,
            out_channels=setup.channels).to(setup.device)
        if setup.rank == 0:
            print(f"NAYER label embeddings: {self.embedding_description}", flush=True)
        self.epoch = 0
        #: The last epoch for which the generator was re-created (−1: never), so that a resumed
        #: epoch does not re-create it a second time.
        self.recreated_epoch = -1

    @property
    def flip_probability(self) -> float:
        """The dataset's flip probability, or 0 with ``--pool_flip off`` (§18.6)."""
        return 0.0 if self.flip_off else super().flip_probability

    @classmethod
    def deviations(cls, options: Options) -> list[str]:
        return label_embeddings.deviation(options.label_embeddings)

    # ------------------------------------------------------------------ loop hooks
    def loops_for(self, epoch: int) -> int:
        """Synthetic batches of ``epoch``: ``gwp_loops`` in warm-up, ``g_loops`` afterwards (§11.6)."""
        return self.warmup_loops if epoch < self.warmup else self.loops

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        """Re-create the generator in place when ``epoch`` is a re-creation epoch (once per epoch,
        also when a resumed run calls this again) and fix the epoch's loop count (§11.6)."""
        self.epoch = epoch
        due = recreation_epoch(epoch, self.warmup, self.life)
        if due and self.recreated_epoch != epoch:
            reset_default_init(self.image_generator, generator=self.noise_stream)
            self.recreated_epoch = epoch
        return {"synthesis_loops": float(self.loops_for(epoch)), "generator_recreated": float(due)}

    def synthesis_batches(self) -> int:
        """Batches the run adds to the pool: per round, ``gwp_loops`` in a warm-up epoch and ``g_loops``
        afterwards (§11.6)."""
        options = self.options
        warmup_epochs = min(options.warmup, options.epochs)
        batches_per_round = warmup_epochs * options.gwp_loops + (options.epochs - warmup_epochs) * options.g_loops
        return batches_per_round * (options.ep_steps // options.kd_steps)

    def persistent_parameters(self) -> list[nn.Parameter]:
        """The generator without its noisy layers (re-initialised before every batch)."""
        return self.image_generator.persistent_parameters()

    # ------------------------------------------------------------------ synthesis
    def synthesize_batch(self, batch_index: int, adversarial: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One synthetic batch (§11.6): re-initialised noisy layers, fresh Adam, ``g_steps`` iterations on
        the teacher prior of the augmented images (§11.5); the lowest-L iterate goes to the pool.
        Returns the last iteration's terms and the best L."""
        self.image_generator.train()
        self.image_generator.re_init_noisy_layers(self.noise_stream)
        targets = balanced_labels(self.setup.synthesis_batch_size, self.setup.num_classes,
                                  generator=self.noise_stream, device=self.device)
        optimizer = torch.optim.Adam(self.image_generator.parameters(), lr=self.synthesis_lr, betas=self.betas)
        student_train_mode = self.ref_student_mode and batch_index > 0

        def objective() -> tuple[Terms, tuple[torch.Tensor, ...]]:
            images = self.forward_float(self.image_generator, targets)
            view = self.normalizer(self.pool_augment(images))
            terms, _ = self.teacher_prior(view, targets, adversarial, student_train_mode)
            return terms, (images,)

        result = self.invert(objective, [optimizer])
        if self.bn_hook is not None:
            self.bn_hook.update_momentum()
        self.store(result.best[0])
        return result.logged, result.best_loss

    def synthesize(self) -> dict[str, torch.Tensor]:
        """One epoch's synthesis (§11.6): ``loops_for(epoch)`` batches into the pool."""
        adversarial = self.epoch >= self.warmup and self.adv != 0
        loops = self.loops_for(self.epoch)
        logged: dict[str, torch.Tensor] = {}
        best_total = torch.zeros((), device=self.device)
        for batch_index in range(loops):
            logged, best_loss = self.synthesize_batch(batch_index, adversarial)
            best_total = best_total + best_loss
        logged["loss_synthesis_best"] = best_total / loops
        return logged

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Generator (noisy layers included), the last re-creation epoch, plus pool, hook and RNG state.

        The embeddings are not saved: they are a non-persistent buffer rebuilt from the options.
        """
        return {**super().state_dict(), "generator": self.image_generator.state_dict(),
                "recreated_epoch": self.recreated_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.image_generator.load_state_dict(state["generator"])
        self.recreated_epoch = int(state["recreated_epoch"])
