"""Methods with one persistent generator and no image pool: DAFL, ZSKT, DFQ (and CuDFKD).

METHODS.md §4.1-§4.3, §3.5 "No pool". The generator is trained by Adam for ``g_steps``
iterations per round on a weighted sum of terms; every KD step then draws a fresh latent
batch and generates images with the generator in ``eval()`` mode (BN running statistics, the
[REF] behaviour; ``--gen_sample_mode train`` uses batch statistics instead, §7 item 16;
``last`` distils on the images of the round's last generator step, as DAFL's MNIST code does:
one batch serves the generator step and the student step, §20.1).

The generator is G-L by default; ``--generator G-D`` is the DAFL / DFAD reference body (§20.1)
with ``--gen_bn_eps``, and ``--gen_output normalized`` ends it with Tanh and an affine-free BN,
whose images are already in model space and skip the dataset normaliser (§20.1).

Generator loss (all three baselines share it; the weights select the method)::

    L_G = oh·CE(t, argmax t) + act·L_act(feat) + balance·L_bal(t) + bn·L_bn + adv·(−KL_1(s, t))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn

from datafree.synthesis.criterions import activation_loss, class_balance_loss, kl_divergence, pseudo_label_cross_entropy
from datafree.errors import UsageError
from datafree.models import LargeGenerator, ReferenceGenerator
from datafree.models.generators import GENERATOR_OUTPUTS
from datafree.options import Options, option
from datafree.synthesis.base import LatentOptions, SynthesisSetup, Synthesizer, WidthOptions

#: Generator bodies of the persistent-generator methods (§1.7, §20.1).
GENERATOR_BODIES = ("G-L", "G-D")


@dataclass(frozen=True)
class StudentQueryOptions(Options):
    """Student query of an adversarial generator step (DFAD, §14.8 item 2; PRE-DFKD, §16.8)"""

    adv_student_mode: str = option("train", "the student's mode when queried for the generator step: train ([REF]: "
                                            "its BN sees and records the synthetic batch) or eval",
                                   choices=("train", "eval"))


class GenerativeSynthesizer(Synthesizer):
    """A persistent generator trained against the teacher (and optionally the student)."""

    @dataclass(frozen=True)
    class Options(LatentOptions, WidthOptions, Synthesizer.Options):
        """persistent-generator options (DAFL, ZSKT, DFQ, CuDFKD; §4.1-§4.3, §20.1)"""

        #: §4.7's DAFL row: the values every persistent-generator method starts from.
        DEFAULTS = {"batch_size": 256, "epochs": 200, "ep_steps": 400, "kd_steps": 5, "g_steps": 1,
                    "lr": 0.1, "lr_g": 1e-3, "beta1": 0.5, "beta2": 0.999, "T": 1.0,
                    "adv": 0.0, "bn": 0.0, "oh": 1.0, "nz": 512, "ngf": 64}

        balance: float = option(20.0, "class balance (batch-mean entropy) weight")
        act: float = option(0.001, "DAFL activation prior weight")
        gen_sample_mode: str = option(
            "eval", "KD batches: fresh latents with generator BN in eval ([REF]) or train mode, or 'last': the images "
                    "of the round's last generator step (DAFL MNIST, §20.1)", choices=("eval", "train", "last"))
        generator: str = option("G-L", "generator body: G-L or G-D, the DAFL/DFAD reference body (§20.1)",
                                choices=GENERATOR_BODIES)
        gen_output: str = option("sigmoid", "G-D output: sigmoid pixels through the dataset normaliser, or "
                                            "normalized (Tanh + affine-free BN, no normaliser; DAFL/DFAD, §20.1)",
                                 choices=GENERATOR_OUTPUTS)
        gen_bn_eps: float = option(1e-5, "eps of G-D's inner BNs (DAFL's code 0.8, §20.1)", "positive")

        def validate(self) -> None:
            super().validate()
            if self.generator == "G-L" and self.gen_output != "sigmoid":
                raise UsageError("--gen_output normalized needs --generator G-D (G-L ends in a sigmoid)")
            if self.gen_sample_mode == "last" and (self.kd_steps != 1
                                                   or self.synthesis_batch_size != self.batch_size):
                raise UsageError("--gen_sample_mode last distils on the generator's batch: it needs --kd_steps 1 "
                                 "and --synthesis_batch_size equal to --batch_size")

    def __init__(self, setup: SynthesisSetup, options: Options) -> None:
        super().__init__(setup, options)
        # The student is queried in eval() for the adversarial term, or in train() where the method's
        # options say so (StudentQueryOptions: DFAD's and PRE-DFKD's [REF], §14.8 item 2).
        self.adversarial_query_train = getattr(options, "adv_student_mode", "eval") == "train"
        self.latent_dim = options.nz
        self.generator_width = options.ngf
        self.g_steps = options.g_steps
        self.balance = options.balance
        self.act = options.act
        self.sample_mode = options.gen_sample_mode
        self.normalized_output = options.gen_output == "normalized"
        # Images of a normalised-output generator are already in model space (§20.1).
        self.to_model_space: nn.Module = nn.Identity() if self.normalized_output else self.normalizer
        self.image_generator = self.build_generator(options).to(setup.device)
        self.optimizer = torch.optim.Adam(self.image_generator.parameters(), lr=self.synthesis_lr,
                                          betas=self.betas)
        self.trained_generator: nn.Module = self.image_generator  # DDP-wrapped by distribute()
        self.last_images: torch.Tensor | None = None

    def distribute(self, wrap) -> None:
        """Share the generator across ranks: its gradients are averaged by DDP (issue: scale)."""
        self.trained_generator = wrap(self.image_generator)

    def persistent_parameters(self) -> list[nn.Parameter]:
        return list(self.image_generator.parameters())

    def build_generator(self, options: Options) -> nn.Module:
        """G-L (§1.7) or G-D (§20.1) with the method's latent size, PyTorch default init."""
        if options.generator == "G-D":
            return ReferenceGenerator(nz=self.latent_dim, ngf=self.generator_width, img_size=self.setup.image_size,
                                      out_channels=self.setup.channels, bn_eps=options.gen_bn_eps,
                                      output=options.gen_output)
        return LargeGenerator(nz=self.latent_dim, ngf=self.generator_width, img_size=self.setup.image_size,
                              out_channels=self.setup.channels)

    # ------------------------------------------------------------------ synthesis
    def generate(self, count: int) -> torch.Tensor:
        """Images (float32) from ``count`` fresh latents, with gradients to the generator: in [0, 1],
        or already in model space for a normalised-output generator."""
        latents = self.randn(count, self.latent_dim)
        network = self.trained_generator if torch.is_grad_enabled() else self.image_generator
        return self.forward_float(network, latents)

    def generator_terms(self, images: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """Weighted terms of the generator loss for normalised ``images``: name -> (weight, value)."""
        teacher_logits, features = self.teacher_forward(images, return_features=True)
        terms = self.prediction_terms(teacher_logits)
        if self.act:
            terms["act"] = (self.act, activation_loss(features))
        if self.balance:
            terms["balance"] = (self.balance, class_balance_loss(teacher_logits))
        if self.bn_hook is not None:
            terms["bn"] = (self.bn, self.bn_hook.loss)
        if self.adv:
            student_logits = self.student_forward(images, train_mode=self.adversarial_query_train)
            terms["adv"] = (self.adv, self.adversarial_term(student_logits, teacher_logits))
        return terms

    def prediction_terms(self, teacher_logits: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """The priors on the teacher's prediction: pseudo-label cross-entropy ``oh`` (§4.1)."""
        return {"oh": (self.oh, pseudo_label_cross_entropy(teacher_logits))} if self.oh else {}

    def adversarial_term(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """The generator's disagreement term (minimised, so negated): −KL at T = 1 (ZSKT, DFQ; §4.2)."""
        return -kl_divergence(student_logits, teacher_logits, temperature=1.0)

    def synthesize(self) -> dict[str, torch.Tensor]:
        """``g_steps`` Adam steps on the generator (train mode); returns the last step's terms."""
        self.image_generator.train()
        logged: dict[str, torch.Tensor] = {}
        for _ in range(self.g_steps):
            images = self.generate(self.setup.synthesis_batch_size)
            terms = self.generator_terms(self.to_model_space(images))
            loss = sum(weight * value for weight, value in terms.values())
            self.optimizer_step(loss, self.optimizer)
            logged = {f"loss_{name}": value.detach() for name, (_, value) in terms.items()}
            logged["loss_generator"] = loss.detach()
        self.last_images = images.detach()
        return logged

    @torch.no_grad()
    def sample(self) -> torch.Tensor:
        """A fresh normalised batch of ``batch_size`` generated images (§3.5 "No pool"), or with
        ``--gen_sample_mode last`` the images of the last generator step (§20.1)."""
        if self.sample_mode == "last":
            return self.memory_format(self.to_model_space(self.last_images))
        self.image_generator.train(self.sample_mode == "train")
        images = self.generate(self.setup.batch_size)
        return self.memory_format(self.to_model_space(images))

    def preview_images(self) -> torch.Tensor | None:
        if self.last_images is None or not self.normalized_output:
            return self.last_images
        return self.normalizer.denormalize(self.last_images).clamp(0, 1)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "image_generator": self.image_generator.state_dict(),
                 "optimizer": self.optimizer.state_dict()}
        if self.sample_mode == "last" and self.last_images is not None:
            state["last_images"] = self.last_images   # the next KD batch, for a resume between the two
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.image_generator.load_state_dict(state["image_generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "last_images" in state:
            self.last_images = state["last_images"].to(self.device)
