"""Methods with one persistent generator and no image pool: DAFL, ZSKT, DFQ (and CuDFKD).

METHODS.md §4.1-§4.3, §3.5 "No pool". The generator is trained by Adam for ``g_steps``
iterations per round on a weighted sum of terms; every KD step then draws a fresh latent
batch and generates images with the generator in ``eval()`` mode (BN running statistics, the
[REF] behaviour; ``--gen_sample_mode train`` uses batch statistics instead, §7 item 16).

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
from datafree.models import LargeGenerator
from datafree.synthesis.base import SynthesisSetup, Synthesizer

#: Options every persistent-generator method reads (values here are §4.7's DAFL row).
GENERATIVE_DEFAULTS: dict[str, Any] = {
    "batch_size": 256, "epochs": 200, "ep_steps": 400, "kd_steps": 5, "g_steps": 1,
    "lr": 0.1, "lr_g": 1e-3, "beta1": 0.5, "beta2": 0.999, "T": 1.0,
    "adv": 0.0, "bn": 0.0, "oh": 1.0, "balance": 20.0, "act": 0.001, "nz": 512, "ngf": 64,
    "gen_sample_mode": "eval",
}


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
        self.image_generator = self.build_generator(options).to(setup.device)
        self.optimizer = torch.optim.Adam(self.image_generator.parameters(), lr=self.synthesis_lr,
                                          betas=self.betas)
        self.trained_generator: nn.Module = self.image_generator  # DDP-wrapped by distribute()
        self.last_images: torch.Tensor | None = None

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--gen_sample_mode", choices=["eval", "train"], default=None,
                           help="generator BN mode when sampling KD batches (default eval, [REF])")

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        if int(options["g_steps"]) < 1:
            raise UsageError(f"--g_steps must be positive, got {options['g_steps']}")

    def distribute(self, wrap) -> None:
        """Share the generator across ranks: its gradients are averaged by DDP (issue: scale)."""
        self.trained_generator = wrap(self.image_generator)

    def persistent_parameters(self) -> list[nn.Parameter]:
        return list(self.image_generator.parameters())

    def build_generator(self, options: Mapping[str, Any]) -> nn.Module:
        """G-L with the method's latent size (§1.7), PyTorch default init."""
        return LargeGenerator(nz=self.latent_dim, ngf=self.generator_width, img_size=self.setup.image_size)

    # ------------------------------------------------------------------ synthesis
    def generate(self, count: int) -> torch.Tensor:
        """Images in [0, 1] (float32) from ``count`` fresh latents, with gradients to the generator."""
        latents = self.randn(count, self.latent_dim)
        with torch.autocast(self.device.type, dtype=self.setup.autocast_dtype,
                            enabled=self.setup.autocast_dtype is not None):
            network = self.trained_generator if torch.is_grad_enabled() else self.image_generator
            images = network(latents)
        return images.float()

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
            student_logits = self.student_forward_eval(images)
            terms["adv"] = (self.adv, -kl_divergence(student_logits, teacher_logits, temperature=1.0))
        return terms

    def synthesize(self) -> dict[str, torch.Tensor]:
        """``g_steps`` Adam steps on the generator (train mode); returns the last step's terms."""
        self.image_generator.train()
        logged: dict[str, torch.Tensor] = {}
        for _ in range(self.g_steps):
            images = self.generate(self.setup.synthesis_batch_size)
            terms = self.generator_terms(self.normalizer(images))
            loss = sum(weight * value for weight, value in terms.values())
            self.optimizer_step(loss, self.optimizer)
            logged = {f"loss_{name}": value.detach() for name, (_, value) in terms.items()}
            logged["loss_generator"] = loss.detach()
        self.last_images = images.detach()
        return logged

    @torch.no_grad()
    def sample(self) -> torch.Tensor:
        """A fresh normalised batch of ``batch_size`` generated images (§3.5 "No pool")."""
        self.image_generator.train(self.sample_mode == "train")
        images = self.generate(self.setup.batch_size)
        return self.memory_format(self.normalizer(images))

    def preview_images(self) -> torch.Tensor | None:
        return self.last_images

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "image_generator": self.image_generator.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.image_generator.load_state_dict(state["image_generator"])
        self.optimizer.load_state_dict(state["optimizer"])
