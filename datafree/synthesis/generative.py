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

import argparse
from typing import Any, Mapping

import torch
import torch.nn as nn

from datafree.criterions import activation_loss, class_balance_loss, kl_divergence, pseudo_label_cross_entropy
from datafree.errors import UsageError
from datafree.models import LargeGenerator, ReferenceGenerator
from datafree.models.generators import GENERATOR_OUTPUTS
from datafree.synthesis.base import SynthesisSetup, Synthesizer

#: Options every persistent-generator method reads (values here are §4.7's DAFL row).
GENERATIVE_DEFAULTS: dict[str, Any] = {
    "batch_size": 256, "epochs": 200, "ep_steps": 400, "kd_steps": 5, "g_steps": 1,
    "lr": 0.1, "lr_g": 1e-3, "beta1": 0.5, "beta2": 0.999, "T": 1.0,
    "adv": 0.0, "bn": 0.0, "oh": 1.0, "balance": 20.0, "act": 0.001, "nz": 512, "ngf": 64,
    "gen_sample_mode": "eval", "generator": "G-L", "gen_output": "sigmoid", "gen_bn_eps": 1e-5,
}
#: Generator bodies of the persistent-generator methods (§1.7, §20.1).
GENERATOR_BODIES = ("G-L", "G-D")


class GenerativeSynthesizer(Synthesizer):
    """A persistent generator trained against the teacher (and optionally the student)."""

    DEFAULTS = GENERATIVE_DEFAULTS

    def __init__(self, setup: SynthesisSetup, options: Mapping[str, Any]) -> None:
        super().__init__(setup, options)
        self.latent_dim = int(options["nz"])
        self.generator_width = int(options["ngf"])
        self.g_steps = int(options["g_steps"])
        self.balance = float(options["balance"])
        self.act = float(options["act"])
        self.sample_mode = options["gen_sample_mode"]
        self.normalized_output = options["gen_output"] == "normalized"
        # Images of a normalised-output generator are already in model space (§20.1).
        self.to_model_space: nn.Module = nn.Identity() if self.normalized_output else self.normalizer
        self.image_generator = self.build_generator(options).to(setup.device)
        self.optimizer = torch.optim.Adam(self.image_generator.parameters(), lr=self.synthesis_lr,
                                          betas=self.betas)
        self.trained_generator: nn.Module = self.image_generator  # DDP-wrapped by distribute()
        self.last_images: torch.Tensor | None = None

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--gen_sample_mode", choices=["eval", "train", "last"], default=None,
                           help="KD batches: fresh latents with generator BN in eval (default, [REF]) or train "
                                "mode, or 'last': the images of the round's last generator step (DAFL MNIST, §20.1)")
        group.add_argument("--generator", choices=GENERATOR_BODIES, default=None,
                           help="generator body: G-L (default) or G-D, the DAFL/DFAD reference body (§20.1)")
        group.add_argument("--gen_output", choices=GENERATOR_OUTPUTS, default=None,
                           help="G-D output: sigmoid pixels through the dataset normaliser, or normalized "
                                "(Tanh + affine-free BN, no normaliser; DAFL/DFAD, §20.1)")
        group.add_argument("--gen_bn_eps", type=float, default=None,
                           help="eps of G-D's inner BNs (1e-5; DAFL's code 0.8, §20.1)")

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        if int(options["g_steps"]) < 1:
            raise UsageError(f"--g_steps must be positive, got {options['g_steps']}")
        if options["generator"] == "G-L" and options["gen_output"] != "sigmoid":
            raise UsageError("--gen_output normalized needs --generator G-D (G-L ends in a sigmoid)")
        if not float(options["gen_bn_eps"]) > 0:
            raise UsageError(f"--gen_bn_eps must be positive, got {options['gen_bn_eps']}")
        if options["gen_sample_mode"] == "last" and (
                int(options["kd_steps"]) != 1 or options["synthesis_batch_size"] != options["batch_size"]):
            raise UsageError("--gen_sample_mode last distils on the generator's batch: it needs --kd_steps 1 and "
                             "--synthesis_batch_size equal to --batch_size")

    def distribute(self, wrap) -> None:
        """Share the generator across ranks: its gradients are averaged by DDP (issue: scale)."""
        self.trained_generator = wrap(self.image_generator)

    def persistent_parameters(self) -> list[nn.Parameter]:
        return list(self.image_generator.parameters())

    def build_generator(self, options: Mapping[str, Any]) -> nn.Module:
        """G-L (§1.7) or G-D (§20.1) with the method's latent size, PyTorch default init."""
        if options["generator"] == "G-D":
            return ReferenceGenerator(nz=self.latent_dim, ngf=self.generator_width, img_size=self.setup.image_size,
                                      out_channels=self.setup.channels, bn_eps=float(options["gen_bn_eps"]),
                                      output=options["gen_output"])
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
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        if self.oh:
            terms["oh"] = (self.oh, pseudo_label_cross_entropy(teacher_logits))
        if self.act:
            terms["act"] = (self.act, activation_loss(features))
        if self.balance:
            terms["balance"] = (self.balance, class_balance_loss(teacher_logits))
        if self.bn_hook is not None:
            terms["bn"] = (self.bn, self.bn_hook.loss)
        if self.adv:
            student_logits = self.student_forward(images)
            terms["adv"] = (self.adv, -kl_divergence(student_logits, teacher_logits, temperature=1.0))
        return terms

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
