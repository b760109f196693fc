"""The Synthesizer interface every data-free method implements (METHODS.md §3.4).

The distillation loop in ``datafree_kd.py`` is method-agnostic. Per epoch it calls::

    schedule = synthesizer.begin_epoch(epoch)          # schedule values to log (e.g. adv_weight)
    for each round (ep_steps // kd_steps of them):
        terms = synthesizer.synthesize()               # g_steps generator / pixel iterations
        for each of kd_steps KD steps:
            images = synthesizer.sample()              # one normalised batch of B images
            teacher_logits = teacher(images)           # no grad
            student_logits = student(images)
            loss, terms = synthesizer.student_loss(student_logits, teacher_logits, kd_step, features)
            (student optimizer step)
            synthesizer.after_student_step(kd_step)      # default no-op (e.g. a VAE update)

(``features`` is None, or the penultimate features ``(student, teacher)`` for a method that sets
``needs_features``, §12.9.) ``sample()`` may return more than B rows (PRE-DFKD appends a replay
batch to the B novel images): the loop counts the rows it gets. The first ``--warmup`` epochs run
the rounds' ``synthesize()`` calls only (§10.7, §11.7). ``begin_epoch`` must be idempotent: a run resumed in the middle of an epoch
calls it again for that epoch, after restoring the synthesizer's state.

Everything method-specific (generator, pixel optimisation, pool, bank, curriculum weights,
student criterion and its temperature) lives behind these calls. ``state_dict`` /
``load_state_dict`` must capture all of it, including RNG streams, so that ``--resume``
continues to the same result.

A method is one module under ``datafree/synthesis/`` defining a subclass with its typed, frozen
``Options`` (:mod:`datafree.options`: the flags it reads, their help and checks, its published
``DEFAULTS`` and per-dataset ``ROWS``; the driver fills every flag left unset from them), plus
one line in ``registry.METHODS`` (docs/ARCHITECTURE.md, "Adding a method").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import torch
import torch.nn as nn

from datafree.augment import random_crop_flip
from datafree.synthesis.budget import Store
from datafree.synthesis.criterions import kl_divergence
from datafree.errors import UsageError
from datafree.synthesis.hooks import BatchNormStatisticsHook
from datafree.run.numerics import autocast
from datafree.options import Options, option
from datafree.schedules import parse_milestones
from datafree.run.seeding import MAX_SEED
from datafree.synthesis.recipe import Recipe

#: Offsets that make the two RNG streams of one (seed, rank) distinct.
NOISE_STREAM, AUGMENTATION_STREAM = 1, 2


@dataclass
class SynthesisSetup:
    """What every synthesizer is built from, besides its own options.

    ``teacher`` is frozen (eval, no parameter gradients, §7 item 15). ``student`` is the plain
    module being trained (never the DDP wrapper: every rank holds the same weights, and a
    synthesis query must not trigger gradient all-reduces); synthesizers that query it put it
    in eval() for the query and restore its mode. ``seed`` and ``rank`` seed the synthesizer's two
    private RNG streams (noise and augmentation, see ``Synthesizer``). ``image_size``,
    ``channels`` and the pool augmentation (``pool_padding``, ``pool_flip``) come from the
    dataset entry (§20, ``datafree.data.DatasetInfo``): methods read them here, never a dataset name.
    """

    teacher: nn.Module
    student: nn.Module
    normalizer: nn.Module
    num_classes: int
    dataset: str
    teacher_name: str
    batch_size: int
    synthesis_batch_size: int
    epochs: int
    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    seed: int
    image_size: int = 32
    rank: int = 0
    world_size: int = 1
    channels: int = 3
    pool_padding: int = 4
    pool_flip: bool = True


@dataclass(frozen=True)
class TestPreset:
    """How the registry-parametrised test suites run a method (tests/; docs/ARCHITECTURE.md, "Adding a
    method"), declared on its class so that a new method needs no entry in any test file.

    ``tiny_flags`` are added to the suites' tiny configuration (one short epoch on a fixture);
    ``learning_flags`` and ``learning_bar`` are the CPU learning check (tests/test_learning.py: the
    best top-1 % a tiny student must reach without training data); ``fp16_backoffs`` is how many
    loss-scaler steps one tiny ``synthesize()`` (``--g_steps 2``) takes, hence how often an
    overflowing scale must back off; ``persistent_synthesis`` says whether ``synthesize()`` trains
    parameters that persist from one call to the next (``persistent_parameters()`` is not empty).
    """

    __test__ = False   # not a pytest test class, despite its name

    tiny_flags: tuple[str, ...] = ()
    learning_flags: tuple[str, ...] = ("--epochs", "4", "--ep_steps", "60", "--kd_steps", "5", "--ngf", "16")
    learning_bar: float = 50.0
    fp16_backoffs: int = 2
    persistent_synthesis: bool = True


@dataclass(frozen=True)
class LatentOptions(Options):
    """Latent generator options (G-S, G-L, G-D, G-Cu; §1.7)"""

    nz: int = option(256, "generator latent size", "positive")


@dataclass(frozen=True)
class WidthOptions(Options):
    """Generator width (§1.7)"""

    ngf: int = option(64, "generator width (64 in every published setting)", "positive")


@dataclass(frozen=True)
class BNMomentumOptions(Options):
    """BN-statistics memory of Fast and NAYER (§10.4)"""

    bn_mmt: float = option(0.0, "momentum of the BN-statistics loss over past batches", "unit")


@dataclass(frozen=True)
class JSTemperatureOptions(Options):
    """Reference JS divergence (ADI's adversarial term, §4.4; PRE-DFKD's disagreement, §16.4)"""

    js_T: float = option(3.0, "temperature of the reference JS divergence", "positive")


@dataclass(frozen=True)
class BankSizeOptions(Options):
    """Capacity of a ring-buffer memory bank (CMI's instance features, §4.5; MB-DFKD's images, §15)"""

    bank_size: int = option(40960, "memory-bank capacity in rows (CMI: instance features; MB-DFKD: images)",
                            "positive")


@dataclass(frozen=True)
class LoopOptions(Options):
    """options of every method (schedule, student optimiser, synthesis optimiser, shared loss weights; §3.3, §4.7)

    The loop reads the schedule and the student's optimisation; every synthesizer reads the rest.
    """

    epochs: int = option(200, "epochs, warm-up epochs included", "positive")
    warmup: int = option(0, "first epochs that only synthesise (no KD step, no LR step; §10.7, §11.7)",
                         "non_negative")
    batch_size: int = option(256, "student (KD) batch B, global across ranks", "positive")
    synthesis_batch_size: int | None = option(None, "Bs, global across ranks (unset: = B)", "positive")
    ep_steps: int = option(400, "KD steps per epoch", "positive")
    kd_steps: int = option(400, "KD steps per synthesis round", "positive")
    g_steps: int | None = option(1, "synthesis iterations per round", "positive")
    lr: float = option(0.1, "student learning rate", "positive")
    optimizer: str = option("sgd", "student optimizer: sgd (momentum, weight decay) or adam (DAFL MNIST, §20.1)",
                            choices=("sgd", "adam"))
    lr_schedule: str = option("cosine", "student learning rate per KD epoch: cosine to --eta_min (§3.3), constant, or "
                                        "multistep (×--gamma at each of --milestones, §14.5)",
                              choices=("cosine", "constant", "multistep"))
    milestones: str = option("", "KD epochs at which --lr_schedule multistep multiplies the learning rate by --gamma "
                                 "(comma-separated)")
    gamma: float = option(0.1, "factor of each multistep decay", "positive")
    eta_min: float = option(0.0, "floor of the cosine schedule", "non_negative")
    momentum: float = option(0.9, "student SGD momentum", "non_negative")
    weight_decay: float = option(1e-4, "student weight decay", "non_negative")
    lr_g: float | None = option(1e-3, "generator / pixel / latent learning rate", "positive")
    beta1: float = option(0.5, "Adam beta1 of the synthesizer", "unit")
    beta2: float = option(0.999, "Adam beta2 of the synthesizer", "unit")
    T: float = option(20.0, "KD temperature", "positive")
    adv: float = option(0.0, "adversarial (teacher-student disagreement) weight")
    bn: float = option(0.0, "BN-statistics matching weight (§3.2)")
    oh: float = option(0.0, "one-hot / target-label cross-entropy weight")

    def derive(self) -> None:
        super().derive()
        if self.synthesis_batch_size is None:
            self.set("synthesis_batch_size", self.batch_size)

    def validate(self) -> None:
        super().validate()
        if self.kd_steps > self.ep_steps:
            raise UsageError(f"--kd_steps ({self.kd_steps}) exceeds --ep_steps ({self.ep_steps}): "
                             "an epoch would have no synthesis round")
        if self.warmup >= self.epochs:
            raise UsageError(f"--warmup ({self.warmup}) must be smaller than --epochs ({self.epochs})")
        try:
            parse_milestones(self.milestones)
        except ValueError:
            raise UsageError(f"--milestones must be comma-separated increasing epochs >= 1, got "
                             f"'{self.milestones}'") from None
        if self.lr_schedule == "multistep" and not self.milestones:
            raise UsageError("--lr_schedule multistep needs --milestones, e.g. --milestones 100,200")


class Synthesizer:
    """Base class: the setup, the options all methods share, the KD criterion, the RNG streams.

    Every method reads ``T``, ``lr_g``, ``beta1``/``beta2`` (Adam of its synthesis) and the loss
    weights ``adv``, ``bn``, ``oh``; with ``bn > 0`` the teacher's BN layers are hooked (§3.2).

    Randomness comes from two private ``torch.Generator`` streams per rank, never from the
    global one (§7 item 14): ``noise_stream`` draws latents, initial pixels, target labels and
    generator re-initialisations; ``augmentation_stream`` draws crops, flips, jitter and which
    pool or memory-bank entries a batch takes. What one stream draws does not depend on how much
    the other has drawn (e.g. for ADI and CMI, the noise of the next synthesis does not depend on
    how many KD batches were augmented in between).
    """

    #: The options the method reads: a subclass of :class:`LoopOptions` (see :mod:`datafree.options`).
    Options: ClassVar[type[LoopOptions]] = LoopOptions
    #: Why the method cannot run at all on a teacher without BatchNorm layers (e.g. CMI's instance
    #: features are the inputs of the teacher's BN layers, §4.5), or "" when it can (§20).
    requires_batchnorm: ClassVar[str] = ""
    #: How the test suites run this method (see :class:`TestPreset`).
    TEST_PRESET: ClassVar[TestPreset] = TestPreset()
    #: The method's published recipe (``datafree.synthesis.recipe``): its launchers and published numbers,
    #: defined as ``RECIPE`` above the class (§4.7, §5.10); None for a method without one.
    recipe: ClassVar[Recipe | None] = None
    #: True when ``student_loss`` needs the penultimate features of student and teacher (§12.9);
    #: the KD step then runs both networks with ``return_features=True``.
    needs_features: ClassVar[bool] = False

    def __init__(self, setup: SynthesisSetup, options: LoopOptions) -> None:
        self.setup = setup
        self.options = options
        self.teacher = setup.teacher
        self.student = setup.student
        self.normalizer = setup.normalizer
        self.device = setup.device
        self.temperature = options.T
        # Options every method has (§4.7): synthesis optimiser and the shared loss weights.
        self.synthesis_lr = options.lr_g
        self.betas = (options.beta1, options.beta2)
        self.adv = options.adv
        self.bn = options.bn
        self.oh = options.oh
        # BN-statistics loss (§3.2); Fast and NAYER blend past batches' statistics with momentum
        # --bn_mmt (§10.4).
        self.bn_hook = (BatchNormStatisticsHook(self.teacher, momentum=getattr(options, "bn_mmt", 0.0))
                        if self.bn > 0 else None)
        # fp16 only: the synthesis losses are scaled so that small gradients through fp16
        # activations do not underflow (issue: speed; §7 item 22). A no-op in bf16 and fp32.
        self.scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.autocast_dtype == torch.float16)
        self.noise_stream = self.new_stream(setup.seed, setup.rank, NOISE_STREAM)
        self.augmentation_stream = self.new_stream(setup.seed, setup.rank, AUGMENTATION_STREAM)

    # ------------------------------------------------------------------ options
    @classmethod
    def deviations(cls, options: LoopOptions) -> list[str]:
        """Ways in which this configuration departs from the paper, printed at start (e.g. NAYER
        without CLIP label embeddings, §11.3)."""
        return []

    @classmethod
    def batchnorm_terms(cls, options: LoopOptions) -> list[str]:
        """The options whose (positive) loss terms read the teacher's BN layers: ``bn`` (§3.2). A
        teacher without BN layers refuses them in one line instead of a silent zero (§20)."""
        return ["bn"] if options.bn > 0 else []

    # ------------------------------------------------------------------ loop hooks
    def begin_epoch(self, epoch: int) -> dict[str, float]:
        """Called before the first round of ``epoch``; returns schedule values to log."""
        return {}

    def synthesize(self) -> dict[str, torch.Tensor]:
        """Run the method's synthesis iterations; returns detached loss terms (``loss_<name>``)."""
        raise NotImplementedError

    def sample(self) -> torch.Tensor:
        """One normalised batch for a KD step: ``batch_size`` images, or more when the method appends
        rows of its own (a replay batch); the loop assumes no row count."""
        raise NotImplementedError

    def after_student_step(self, kd_step: int) -> None:
        """Called by the loop after the student's KD step ``kd_step`` (the run-wide index of
        ``student_loss``), once per KD step, skipped or not; e.g. a VAE update.
        Default: nothing."""

    def student_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, kd_step: int,
                     features: tuple[torch.Tensor, torch.Tensor] | None = None,
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The student objective; default KL at the run's temperature, batchmean ×T² (§3.1).

        ``features`` is ``(student_features, teacher_features)`` when ``needs_features``, else None.
        """
        loss = kl_divergence(student_logits, teacher_logits, temperature=self.temperature)
        return loss, {}

    def student_extra_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the student's optimizer besides the student's own (e.g. AdaDFKD's
        feature projection, §12.8 item 1). Default: none."""
        return []

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Multi-process runs: wrap persistent trainable modules shared across ranks with ``wrap``
        (DistributedDataParallel). Default: nothing is shared; each rank synthesizes on its own."""

    def persistent_parameters(self) -> list[nn.Parameter]:
        """Parameters that synthesis trains and that persist from one ``synthesize()`` call to the
        next (a persistent generator, CMI's head, Fast's meta-generator); empty when every call
        starts afresh (ADI). Tests use it to check that fp16 loss scaling skips overflowing steps."""
        return []

    def preview_images(self) -> torch.Tensor | None:
        """Images in [0, 1] from the latest synthesis, for the TensorBoard grid."""
        return None

    # ------------------------------------------------------------------ memory (§21.3)
    def memory_stores(self) -> list[Store]:
        """The method's stores at their final size for this run (an image pool, a feature bank, a queue),
        from the real image geometry; reported at start (:func:`datafree.synthesis.budget.plan_memory`).
        Default: none."""
        return []

    def spill_to_host(self) -> None:
        """Keep the stores that may live in host memory (the image pool) there from now on (§21.3).
        Called before the first synthesis; changes no result. Default: nothing to move."""

    # ------------------------------------------------------------------ helpers
    def autocast(self):
        """The run's autocast context for a forward pass (bf16 / fp16; a no-op in fp32, §7 item 22)."""
        return autocast(self.device, self.setup.autocast_dtype)

    def forward_float(self, module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
        """``module(*inputs)`` under the run's autocast, returned in float32 (e.g. a generator's images)."""
        with self.autocast():
            output = module(*inputs)
        return output.float()

    def teacher_forward(self, images: torch.Tensor, return_features: bool = False):
        """Teacher forward under the run's autocast, logits in float32."""
        with self.autocast():
            output = self.teacher(self.memory_format(images), return_features=return_features)
        if return_features:
            return output[0].float(), output[1].float()
        return output.float()

    def student_forward(self, images: torch.Tensor, return_features: bool = False, train_mode: bool = False):
        """Student logits for a synthesis objective, with the student in eval() (BN running stats), as in
        the references; ``train_mode=True`` queries it in train() instead (NAYER's [REF] mode, §11.10 item 1:
        batch statistics, and the synthetic batch updates the student's BN running statistics).

        Gradients flow to ``images`` only: the student's parameters are switched to
        ``requires_grad=False`` for the query (the references compute and discard those
        weight gradients, §8.1), then restored. ``return_features=True`` returns
        ``(logits, features)`` (the penultimate features, for AdaDFKD's R2M term, §12.4), both float32.
        """
        was_training = self.student.training
        flags = [parameter.requires_grad for parameter in self.student.parameters()]
        self.student.train(train_mode)
        self.student.requires_grad_(False)
        try:
            with self.autocast():
                if return_features:
                    logits, features = self.student(self.memory_format(images), return_features=True)
                    output = (logits.float(), features.float())
                else:
                    output = self.student(self.memory_format(images)).float()
        finally:
            for parameter, flag in zip(self.student.parameters(), flags):
                parameter.requires_grad_(flag)
            self.student.train(was_training)
        return output

    def optimizer_step(self, loss: torch.Tensor, *optimizers: torch.optim.Optimizer) -> None:
        """Backward of ``loss`` and one step of each optimizer, through the loss scaler.

        Under fp16 a step whose gradients are not finite is skipped and the scale backs off;
        otherwise this is ``zero_grad``, ``backward``, ``step``.
        """
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for optimizer in optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()

    def pool_augment(self, images: torch.Tensor) -> torch.Tensor:
        """The dataset's pool augmentation (§3.5): random crop with ``pool_padding`` zero pixels and a
        horizontal flip (CIFAR: 4 px + flip; MNIST: none), per sample, from the augmentation stream."""
        return random_crop_flip(images, padding=self.setup.pool_padding, flip_prob=self.flip_probability,
                                generator=self.augmentation_stream)

    @property
    def flip_probability(self) -> float:
        """0.5 where the dataset's pool augmentation flips (CIFAR), 0 where it does not (digits)."""
        return 0.5 if self.setup.pool_flip else 0.0

    def memory_format(self, images: torch.Tensor) -> torch.Tensor:
        if self.setup.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def randn(self, *shape: int) -> torch.Tensor:
        """Standard normal noise from the noise stream."""
        return torch.randn(*shape, device=self.device, generator=self.noise_stream)

    def random_labels(self, count: int) -> torch.Tensor:
        """``count`` labels uniform in [0, C) from the noise stream, sorted ascending (only for
        tidy image grids, §4.4)."""
        labels = torch.randint(0, self.setup.num_classes, (count,), device=self.device,
                               generator=self.noise_stream)
        return labels.sort().values

    def new_stream(self, seed: int, rank: int, stream: int) -> torch.Generator:
        """A private generator on the run's device, distinct per (seed, rank, stream)."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed((seed * 1_000_003 + 7919 * rank + stream) % MAX_SEED)
        return generator

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = {"noise_stream": self.noise_stream.get_state(),
                 "augmentation_stream": self.augmentation_stream.get_state(),
                 "scaler": self.scaler.state_dict()}
        if self.bn_hook is not None and self.bn_hook.momentum:
            state["bn_hook"] = self.bn_hook.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the RNG streams. Checkpoints hold rank 0's state; on resumption other ranks
        derive their own streams from it and their rank, so any number of ranks can resume."""
        for name in ("noise_stream", "augmentation_stream"):
            stream = getattr(self, name)
            stream.set_state(state[name].cpu())
            if self.setup.rank > 0:
                draw = torch.randint(0, 2**62, (1,), generator=stream, device=self.device)
                stream.manual_seed(int(draw.item()) + self.setup.rank)
        self.scaler.load_state_dict(state["scaler"])
        if self.bn_hook is not None and self.bn_hook.momentum:
            self.bn_hook.load_state_dict(state["bn_hook"])
