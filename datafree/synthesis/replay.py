"""Methods that rehearse past synthetic images: a novel generator plus a replay of earlier batches.

PRE-DFKD (METHODS.md §16) and the MB-DFKD reconstruction (§15) share everything but their memory:

* the novel generator G_n is G-D with spectral norm and a normalised output (§16.3); its loss is
  the pseudo-label CE ``oh``, the base-10 information entropy ``ie``, DAFL's activation prior
  ``act`` and the disagreement ``adv·L_dis`` with ``L_dis = 1 − clamp(JS, 0, 1)`` (§16.4 item 1);
* every KD batch is B fresh novel images (generated under no_grad) followed by ``--mem_ratio``·B
  replayed rows, and the student minimises the L1 distance of the logits over all of them (§16.4
  items 2-3);
* the loop's post-KD-step hook (:meth:`Synthesizer.after_student_step`) lets the memory learn from
  the round's novel images.

A subclass says only what its memory is: :meth:`replay` returns the replayed rows of one KD batch
(PRE-DFKD: samples of a VAE memory generator; MB-DFKD: rows of a bank of stored images), and
:meth:`after_student_step` feeds the memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from datafree.errors import UsageError
from datafree.models.memory import novel_generator
from datafree.options import option
from datafree.synthesis.base import JSTemperatureOptions
from datafree.synthesis.criterions import information_entropy_log10, js_divergence_ref, l1_logits
from datafree.synthesis.generative import GenerativeSynthesizer, StudentQueryOptions


def js_disagreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 3.0,
                    reduction: str = "elementmean") -> torch.Tensor:
    """``L_dis = 1 − clamp(JS, 0, 1)`` with the reference JS at ``temperature`` (§16.4); minimising it
    maximises the teacher-student disagreement."""
    return 1.0 - js_divergence_ref(student_logits, teacher_logits, temperature, reduction).clamp(0.0, 1.0)


class ReplaySynthesizer(GenerativeSynthesizer):
    """A novel generator G_n trained on DAFL's priors and the JS disagreement; KD batches are B novel
    images followed by the rows :meth:`replay` returns (§16.4)."""

    @dataclass(frozen=True)
    class Options(StudentQueryOptions, JSTemperatureOptions, GenerativeSynthesizer.Options):
        """novel-generator-with-replay options (PRE-DFKD §16, MB-DFKD §15)"""

        #: PRE-DFKD's reference defaults (§16.6, §16.9), which the MB-DFKD reconstruction keeps (§15).
        DEFAULTS = {"batch_size": 1024, "epochs": 400, "ep_steps": 360, "kd_steps": 10, "g_steps": 1, "lr": 0.1,
                    "weight_decay": 5e-4, "lr_schedule": "cosine", "lr_g": 0.02, "beta1": 0.9, "beta2": 0.999,
                    "T": 1.0, "nz": 1000, "ngf": 64, "adv": 1.0, "bn": 0.0, "oh": 1.0, "act": 0.1, "balance": 0.0,
                    "generator": "G-D", "gen_output": "normalized", "gen_bn_eps": 0.8, "gen_sample_mode": "train"}

        ie: float = option(5.0, "weight of the base-10 information-entropy prior of the novel generator (§16.4)")
        js_reduction: str = option("elementmean", "the disagreement's JS over all B x C entries ([REF] KLDivLoss "
                                                  "default) or per sample (batchmean) (§16.8)",
                                   choices=("elementmean", "batchmean"))
        mem_ratio: float = option(0.125, "replayed rows per KD batch, as a fraction of B (§16.6)", "unit")

        def validate(self) -> None:
            super().validate()
            if self.generator != "G-D" or self.gen_output != "normalized":
                raise UsageError("--method predfkd and mbdfkd need --generator G-D --gen_output normalized (the "
                                 "novel generator is a G-D body with a normalised output, §16.3)")
            if self.gen_sample_mode == "last":
                raise UsageError("--method predfkd and mbdfkd draw fresh novel batches: --gen_sample_mode last "
                                 "does not apply")
            if self.mem_ratio <= 0:
                raise UsageError(f"--mem_ratio must be above 0, got {self.mem_ratio}")

    def __init__(self, setup, options: Options) -> None:
        super().__init__(setup, options)
        self.ie = options.ie
        self.js_temperature = options.js_T
        self.js_reduction = options.js_reduction
        self.kd_steps = options.kd_steps
        # At least 2 rows: PRE-DFKD's latent refinement (unbiased variance) and train-mode BNs need two.
        self.memory_rows = max(2, round(setup.batch_size * options.mem_ratio))
        self.novel_images: torch.Tensor | None = None

    def build_generator(self, options: Options) -> nn.Module:
        """G_n: G-D with spectral norm, BN eps ``--gen_bn_eps``, uniform init (§16.3)."""
        return novel_generator(nz=self.latent_dim, ngf=self.generator_width, img_size=self.setup.image_size,
                               out_channels=self.setup.channels, bn_eps=options.gen_bn_eps, spectral=True)

    def prediction_terms(self, teacher_logits: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """``oh·OH + ie·IE``: the base's pseudo-label CE and the base-10 information entropy (§16.4 item 1).
        With act, balance, bn and ``adv·L_dis`` the base's generator terms make G_n's objective; L_dis
        reaches G_n through the student only."""
        terms = super().prediction_terms(teacher_logits)
        if self.ie:
            terms["ie"] = (self.ie, information_entropy_log10(teacher_logits))
        return terms

    def adversarial_term(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """``L_dis(s, t.detach())`` (§16.4)."""
        return js_disagreement(student_logits, teacher_logits.detach(), self.js_temperature, self.js_reduction)

    def replay(self) -> torch.Tensor:
        """The replayed rows of one KD batch, in model space (float32); may be empty."""
        raise NotImplementedError

    def sample(self) -> torch.Tensor:
        """concat(B novel images of G_n, in ``--gen_sample_mode`` under no_grad; :meth:`replay`), in
        model space (§16.4 items 2-3). The novel images are kept for the memory's step."""
        with torch.no_grad():
            self.image_generator.train(self.sample_mode == "train")
            novel = self.generate(self.setup.batch_size)
        self.novel_images = novel
        return self.memory_format(torch.cat([novel, self.replay()]))

    def student_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, kd_step: int,
                     features=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L1 between the logits, mean over all rows × C entries, novel and replayed (§16.4 item 3)."""
        return l1_logits(student_logits, teacher_logits), {}
