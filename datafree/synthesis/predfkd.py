"""PRE-DFKD — data-free KD with generative pseudo replay (Binici et al., AAAI 2022; METHODS.md §16).

A novel generator G_n (G-D with spectral norm, §16.3) is trained against the teacher's priors and
for disagreement with the student; a VAE memory (memory generator G_m + encoder E) learns the
distribution of all novel batches seen so far by also reconstructing its own samples, and the
student rehearses on them: every KD batch is B novel images plus B/8 replayed ones, so no image is
stored (§16.1).

One round (§16.5): one G_n step (§16.4 item 1), then ``kd_steps`` KD steps, each on
concat(novel, replay) with the L1 logit distance (items 2-3); after each of the round's first
``--vae_updates`` KD steps the VAE takes one step (item 4) in :meth:`after_student_step`, so KD
step k replays from G_m before VAE update k, the reference order.

[CLEAN] (§16.8): the novel KD batch is generated under ``no_grad`` (item 1, same student update);
the teacher is frozen. Kept from [REF] behind flags: BN eps 0.8 (``--gen_bn_eps``, item 2),
element-mean JS (``--js_reduction``, item 3), the one-step latent refinement (``--z_steps``, item
8), the student in train() for the G_n step (``--adv_student_mode``, item 10) and the refinement's
G_m gradient in the VAE step (``--vae_clean_grad`` unset, item 13).

The novel generator, the KD batch and the L1 student loss are :class:`ReplaySynthesizer`'s
(:mod:`datafree.synthesis.replay`), shared with the MB-DFKD reconstruction (§15); this file is the
VAE memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from datafree.errors import UsageError
from datafree.models.memory import Encoder, novel_generator
from datafree.options import option
from datafree.published import PAPER_CELLS, Published
from datafree.synthesis.base import TestPreset
from datafree.synthesis.criterions import information_entropy_log10, pseudo_label_cross_entropy
from datafree.synthesis.replay import ReplaySynthesizer
from datafree.synthesis.recipe import Launcher, Recipe, settings

#: kuluhan/PRE-DFKD, the official code (§16.2).
KULUHAN = "kuluhan/PRE-DFKD @604010d"
#: The reference defaults (main.py, README "CIFAR100, teacher ResNet34, student ResNet18"), in launcher order.
CIFAR_SETTINGS = settings(
    ("batch_size", "1024", "main.py --batch_size (novel batch; replay adds B/8, §16.6)"),
    ("synthesis_batch_size", "1024", "one G_n step on a batch of B (distillation.py:45-70)"),
    ("epochs", "400", "main.py --n_epochs"),
    ("ep_steps", "360", "36 rounds x 10 KD steps per epoch (main.py:93, §16.5)"),
    ("kd_steps", "10", "main.py --kd_iter"), ("g_steps", "1", "main.py --gen_iter"),
    ("lr", "0.1", "main.py --lr_S"), ("momentum", "0.9", "student SGD (main.py:47-70)"),
    ("weight_decay", "5e-4", "student SGD (main.py:47-70)"),
    ("lr_schedule", "cosine", "CosineAnnealingLR(T_max = n_epochs) per epoch, floor 0"), ("eta_min", "0", "floor 0"),
    ("lr_g", "0.02", "main.py --lr_G (G_n; z refinement; G_m and E at lr_G/40)"),
    ("beta1", "0.9", "Adam default betas"), ("beta2", "0.999", "Adam default betas"),
    ("nz", "1000", "main.py --latent_dim"), ("ngf", "64", "networks/generator.py width"),
    ("generator", "G-D", "Generator = G-D with spectral norm (§16.3)"),
    ("gen_output", "normalized", "Tanh + BatchNorm2d(3, affine=False); no dataset normaliser"),
    ("gen_bn_eps", "0.8", "BatchNorm2d(c, 0.8): eps 0.8 in G_n, G_m, E (§16.8 item 2)"),
    ("gen_sample_mode", "train", "G_n in train() for the KD batches (main.py:101-102)"),
    ("adv_student_mode", "train", "student in train() during the G_n step (§16.8 item 10)"),
    ("oh", "1", "main.py --oh"), ("ie", "5", "main.py --ie"), ("act", "0.1", "main.py --a"),
    ("adv", "1", "L_dis weight 1 (distillation.py:45-70)"), ("bn", "0", "no BN prior"),
    ("balance", "0", "no DAFL balance"),
    ("js_T", "3", "aux.py:70-85"), ("js_reduction", "elementmean", "KLDivLoss() default reduction (§16.8 item 3)"),
    ("mem_ratio", "0.125", "memory batch B/8 = 128"), ("vae_half", "0.5", "VAE input x_n[:B/2]"),
    ("vae_updates", "4", "dist_step < 4 (§16.5)"), ("vae_lr_div", "40", "G_m and E Adam at lr_G/40"),
    ("kld_w", "1e-5", "distillation.py:72-148"), ("z_steps", "1", "one Adam step on z (§16.8 item 8)"))
SEED_SOURCE = "CuDFKD README @81b96d4 accuracy table"
#: The CuDFKD README's stability rows of PRE-DFKD (μ / σ² / best over its epochs, §16.7), per dataset.
SEED_ROW = {"cifar10": (87.4, 10.3, 94.1), "cifar100": (70.2, 11.1, 77.1)}
#: Its accuracy-table cells (resnet34→resnet18) and what a note adds to them.
ACCURACY_ROW = {"cifar10": (94.10, ""), "cifar100": (77.04, "; 77.04 is also CMI's number (§16.11 item 4)")}
PUBLISHED_PAIR = ("resnet34", "resnet18")


def cifar_launcher(dataset: str, teacher: str, student: str) -> Launcher:
    """The reference defaults on one cell of the paper's grid; only CIFAR-100 resnet34→resnet18 is the
    published configuration (§16.6)."""
    published = (teacher, student) == PUBLISHED_PAIR
    if published and dataset == "cifar100":
        source = f"{KULUHAN} main.py defaults = README command (§16.5, §16.6)"
    elif published:
        source = (f"{KULUHAN} main.py defaults with --dataset cifar10: the README table gives a number but no command "
                  "(§16.6, §16.11 item 5)")
    else:
        source = f"none for this pair (unpublished pair): the method defaults of {KULUHAN} (§16.6)"
    return Launcher(
        dataset, teacher, student,
        what="the reference defaults (main.py)" if published else "the reference defaults, unpublished pair",
        source=source, settings=CIFAR_SETTINGS)


#: PRE-DFKD's recipe (datafree.synthesis.recipe): the reference defaults on the paper's grid, with the
#: published numbers of §16.7.
RECIPE = Recipe(
    label="PRE-DFKD", name="Pseudo Replay Enhanced DFKD", section="§16", table_row=11,
    launchers=tuple(cifar_launcher(*cell) for cell in PAPER_CELLS),
    published={("", dataset, *PUBLISHED_PAIR): Published(
        accuracy, "reproduction", SEED_SOURCE,
        f"stability row (§16.7): mean {SEED_ROW[dataset][0]} / variance {SEED_ROW[dataset][1]} / best "
        f"{SEED_ROW[dataset][2]} over PRE-DFKD's epochs of 360 KD steps{note}", stability=SEED_ROW[dataset])
        for dataset, (accuracy, note) in ACCURACY_ROW.items()},
    notes=("Student loss: L1 between student and teacher logits on B novel + B/8 replayed images (§16.4).",
           "No pool: the VAE memory (memory generator + encoder) replays past synthetic distributions (§16.1)."))


def latent_moment_loss(latents: torch.Tensor) -> torch.Tensor:
    """``MSE(var₀(z), 1) + MSE(mean₀(z), 0)``: per latent coordinate, over the batch, unbiased variance (§16.4)."""
    variance, mean = torch.var_mean(latents, dim=0, unbiased=True)
    return F.mse_loss(variance, torch.ones_like(variance)) + F.mse_loss(mean, torch.zeros_like(mean))


def kld_loss(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """``mean_i [−½ Σ_j (1 + log σ²_ij − μ²_ij − σ²_ij)]`` (§16.4), unweighted."""
    return (-0.5 * (1 + log_variance - mean.pow(2) - log_variance.exp()).sum(dim=1)).mean()


class PREDFKDSynthesizer(ReplaySynthesizer):
    """PRE-DFKD (§16): a novel generator, a VAE memory replaying past synthetic batches, L1 KD."""

    recipe = RECIPE

    #: §16.10, shortened: a narrow G_n on the fixture, 3 rounds of 10 KD steps per epoch.
    TEST_PRESET = TestPreset(tiny_flags=("--nz", "16"),
                             learning_flags=("--epochs", "4", "--ep_steps", "30", "--kd_steps", "10", "--ngf", "16",
                                             "--nz", "32", "--lr_schedule", "constant"),
                             learning_bar=30.0)

    @dataclass(frozen=True)
    class Options(ReplaySynthesizer.Options):
        """PRE-DFKD options (§16)"""

        vae_half: float = option(0.5, "PRE-DFKD: novel rows of the VAE input, as a fraction of B (§16.6)", "unit")
        vae_updates: int = option(4, "PRE-DFKD: VAE steps per round, after its first KD steps (at most "
                                     "--kd_steps, §16.5)", "non_negative")
        vae_lr_div: float = option(40.0, "PRE-DFKD: the VAE's Adam lr is --lr_g divided by this (§16.6)", "positive")
        kld_w: float = option(1e-5, "PRE-DFKD: weight of the VAE's KL term (§16.4)", "non_negative")
        z_steps: int = option(1, "PRE-DFKD: Adam steps of the memory latent refinement (§16.8)", "non_negative")
        vae_clean_grad: bool = option(False, "PRE-DFKD [CLEAN]: the memory generator's VAE step sees its own loss "
                                             "only; [REF] (unset) also adds the latent refinement's gradient "
                                             "(§16.8 item 13)")

        def validate(self) -> None:
            super().validate()
            if self.vae_half <= 0:
                raise UsageError(f"--vae_half must be above 0, got {self.vae_half}")

    def __init__(self, setup, options: Options) -> None:
        super().__init__(setup, options)
        self.vae_updates = options.vae_updates
        self.kld_weight = options.kld_w
        self.z_steps = options.z_steps
        self.vae_prior_grad = not options.vae_clean_grad
        # At least 2 rows: the train-mode BNs of the VAE step need two.
        self.vae_rows = max(2, round(setup.batch_size * options.vae_half))
        self.memory_generator = novel_generator(nz=self.latent_dim, ngf=self.generator_width,
                                                img_size=setup.image_size, out_channels=setup.channels,
                                                bn_eps=options.gen_bn_eps, spectral=False).to(setup.device)
        self.encoder = Encoder(nz=self.latent_dim, img_size=setup.image_size, in_channels=setup.channels,
                               bn_eps=options.gen_bn_eps).to(setup.device)
        vae_lr = self.synthesis_lr / options.vae_lr_div
        self.memory_optimizer = torch.optim.Adam(self.memory_generator.parameters(), lr=vae_lr)
        self.encoder_optimizer = torch.optim.Adam(self.encoder.parameters(), lr=vae_lr)
        self.last_vae_terms: dict[str, torch.Tensor] = {}

    def synthesize(self) -> dict[str, torch.Tensor]:
        """One round's G_n steps (§16.4 item 1); the terms also carry the latest VAE step's."""
        return {**super().synthesize(), **self.last_vae_terms}

    # ------------------------------------------------------------------ memory (§16.4 items 2 and 4)
    def memory_prior(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """``ie·IE + oh·OH`` of the memory latent refinement (§16.4 item 2)."""
        return self.ie * information_entropy_log10(teacher_logits) + self.oh * pseudo_label_cross_entropy(
            teacher_logits)

    def refined_latents(self, count: int, keep_generator_grad: bool) -> torch.Tensor:
        """Fresh ``z_m ~ N(0, I)`` after ``--z_steps`` steps of a fresh Adam at ``--lr_g`` on the memory
        prior plus :func:`latent_moment_loss`. With ``keep_generator_grad`` the first step's backward
        also accumulates into G_m's gradients (§16.8 item 13); otherwise only ``z_m`` gets a gradient."""
        latents = self.randn(count, self.latent_dim).requires_grad_(True)
        optimizer = torch.optim.Adam([latents], lr=self.synthesis_lr)
        with torch.enable_grad():
            for step in range(self.z_steps):
                images = self.forward_float(self.memory_generator, latents)
                loss = self.memory_prior(self.teacher_forward(images)) + latent_moment_loss(latents)
                optimizer.zero_grad(set_to_none=True)
                if keep_generator_grad and step == 0:
                    loss.backward()
                else:
                    latents.grad, = torch.autograd.grad(loss, [latents])
                optimizer.step()
        return latents.detach()

    def replay(self) -> torch.Tensor:
        """``--mem_ratio``·B images of the memory generator in eval() at refined latents (§16.4 item 2)."""
        self.memory_generator.eval()
        latents = self.refined_latents(self.memory_rows, keep_generator_grad=False)
        with torch.no_grad():
            return self.forward_float(self.memory_generator, latents)

    def after_student_step(self, kd_step: int) -> None:
        """The VAE step after each of the round's first ``--vae_updates`` KD steps (§16.5)."""
        if kd_step % self.kd_steps < self.vae_updates and self.novel_images is not None:
            self.vae_step(first_round=kd_step < self.kd_steps)

    def vae_step(self, first_round: bool) -> dict[str, torch.Tensor]:
        """One Adam step of G_m and E (§16.4 item 4) on the round's novel rows and, after the first
        round, the memory's own refined samples; returns the detached terms."""
        self.memory_generator.train()
        self.encoder.train()
        self.memory_optimizer.zero_grad(set_to_none=True)
        self.encoder_optimizer.zero_grad(set_to_none=True)
        inputs = self.novel_images[:self.vae_rows].detach()
        if not first_round:
            latents = self.refined_latents(self.memory_rows, keep_generator_grad=self.vae_prior_grad)
            with torch.no_grad():
                inputs = torch.cat([inputs, self.forward_float(self.memory_generator, latents)])
        with self.autocast():
            latents, mean, log_variance = self.encoder(inputs, self.randn(inputs.shape[0], self.latent_dim))
        reconstruction = self.forward_float(self.memory_generator, latents.float())
        with torch.no_grad():
            target_logits = self.teacher_forward(inputs)
        reconstruction_loss = (F.l1_loss(reconstruction, inputs)
                               + F.l1_loss(self.teacher_forward(reconstruction), target_logits))
        kld = kld_loss(mean.float(), log_variance.float())
        loss = reconstruction_loss + self.kld_weight * kld
        loss.backward()
        self.memory_optimizer.step()
        self.encoder_optimizer.step()
        self.last_vae_terms = {"loss_vae_rec": reconstruction_loss.detach(), "loss_vae_kld": kld.detach()}
        return self.last_vae_terms

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "memory_generator": self.memory_generator.state_dict(),
                "encoder": self.encoder.state_dict(), "memory_optimizer": self.memory_optimizer.state_dict(),
                "encoder_optimizer": self.encoder_optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.memory_generator.load_state_dict(state["memory_generator"])
        self.encoder.load_state_dict(state["encoder"])
        self.memory_optimizer.load_state_dict(state["memory_optimizer"])
        self.encoder_optimizer.load_state_dict(state["encoder_optimizer"])
