"""Synthesizers that invert the teacher into a growing image pool: ADI, CMI, Fast, NAYER (METHODS.md §3.5).

Each ``synthesize()`` optimises one batch (pixels for ADI §4.4, a fresh generator and its latents
for CMI §4.5, a meta-generator's clone for Fast §10.6, noisy layers for NAYER §11.6) with the
shared inversion routine :meth:`PooledSynthesizer.invert` on the shared teacher prior
(:meth:`PooledSynthesizer.teacher_prior`), and appends the best iterate, in [0, 1], to a pool
that lives for the whole run. Every KD step then draws ``B`` images uniformly, in shuffled passes, from
the **entire** pool and applies the train transform of §3.5 (random crop with 4-px zero
padding, horizontal flip, normalise).

[CLEAN] (§3.5, §7 item 1): instead of the references' folder of 8-bit PNGs re-read by a new
DataLoader after every synthesis, the pool is one uint8 tensor on the run's device
(:class:`datafree.synthesis.pool.ImagePool`, same 8-bit quantisation as the PNG round trip), and the
crop/flip/normalise runs batched on the device with the synthesizer's own RNG stream. A pool whose
final size would not fit the device budget lives in host memory instead, batches copied to the
device one at a time (``--pool_device``, §21.3); the samples are the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from datafree.augment import to_unit_float
from datafree.synthesis.criterions import adversarial_kl_masked
from datafree.synthesis.budget import Store
from datafree.synthesis.pool import ImagePool
from datafree.synthesis.base import LoopOptions, SynthesisSetup, Synthesizer

#: One inversion iterate: the weighted terms of L (name -> (weight, value)) and the tensors to keep
#: should this iterate be the best one.
Terms = dict[str, tuple[float, torch.Tensor]]


def keep_lower(loss: torch.Tensor, best_loss: torch.Tensor, candidates: tuple[torch.Tensor, ...],
               bests: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Best-iterate bookkeeping without a host sync (§4.4 "track the lowest L", §4.5 "remember").

    Returns ``(min(loss, best_loss), bests')`` where each ``bests'[i]`` is a detached **copy** of
    ``candidates[i]`` if ``loss < best_loss`` and ``bests[i]`` otherwise. The comparison stays a
    device tensor used through ``torch.where``, so no ``.item()`` is needed per iteration. A
    non-finite ``loss`` never replaces the best (NaN comparisons are false).
    """
    improved = loss.detach() < best_loss
    new_best_loss = torch.where(improved, loss.detach(), best_loss)
    new_bests = tuple(torch.where(improved, candidate.detach(), best)
                      for candidate, best in zip(candidates, bests))
    return new_best_loss, new_bests


@dataclass
class Inversion:
    """The outcome of :meth:`PooledSynthesizer.invert`: the lowest loss and its kept tensors, the first
    iterate's loss, and the last iterate's detached terms (``loss_<name>``, ``loss_synthesis``)."""

    best_loss: torch.Tensor
    best: tuple[torch.Tensor, ...]
    first_loss: torch.Tensor
    logged: dict[str, torch.Tensor]


class PooledSynthesizer(Synthesizer):
    """Base of ADI and CMI: a device-resident uint8 image pool sampled through the train transform (§3.5)."""

    def __init__(self, setup: SynthesisSetup, options: LoopOptions) -> None:
        super().__init__(setup, options)
        self.g_steps = options.g_steps
        self.pool = ImagePool(device=setup.device)

    # ------------------------------------------------------------------ inversion
    def invert(self, objective: Callable[[], tuple[Terms, tuple[torch.Tensor, ...]]],
               optimizers: Sequence[torch.optim.Optimizer], *, after_step: Callable[[], None] | None = None,
               start: tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None = None,
               keep_best: bool = True) -> Inversion:
        """``g_steps`` iterations of "evaluate L, remember the best iterate, step" (§4.4, §4.5, §10.6, §11.6).

        ``objective()`` returns the weighted terms of L for the current iterate and the tensors kept
        if it is the lowest so far (the pixels; or the images and CMI's features). The best is
        tracked on the device (:func:`keep_lower`, no host sync). The first iterate counts
        whatever its loss, unless ``start`` gives a loss and tensors to beat (ADI: +inf and the
        initial pixels, so that a non-finite first loss keeps the initial batch);
        ``keep_best=False`` tracks nothing (ADI's [REF] last iterate). Each step goes through the
        loss scaler (:meth:`optimizer_step`, every optimizer in ``optimizers``), then
        ``after_step()`` runs: ADI's pixel clamp, Fast's meta-gradient sum.
        """
        best_loss, best = start if start is not None else (None, ())
        first_loss: torch.Tensor | None = None
        logged: dict[str, torch.Tensor] = {}
        for _ in range(self.g_steps):
            terms, candidates = objective()
            loss = sum(weight * value for weight, value in terms.values())
            if first_loss is None:
                first_loss = loss.detach()
            if keep_best and best_loss is None:
                best_loss, best = loss.detach().clone(), tuple(tensor.detach().clone() for tensor in candidates)
            elif keep_best:
                best_loss, best = keep_lower(loss, best_loss, candidates, best)
            self.optimizer_step(loss, *optimizers)
            if after_step is not None:
                after_step()
            logged = {f"loss_{name}": value.detach() for name, (_, value) in terms.items()}
            logged["loss_synthesis"] = loss.detach()
        assert first_loss is not None, "g_steps is at least 1"
        return Inversion(best_loss if best_loss is not None else first_loss, best, first_loss, logged)

    def teacher_prior(self, view: torch.Tensor, targets: torch.Tensor, adversarial: bool,
                      student_train_mode: bool = False) -> tuple[Terms, torch.Tensor]:
        """The teacher-prior terms of an inversion objective for a normalised ``view``, and the teacher's logits.

        ``bn``: the BN-statistics loss of this teacher pass (§3.2; with ``--bn_mmt``, blended with past
        batches, §10.4); ``oh``: cross-entropy to the target labels; ``adv`` (when ``adversarial``):
        the agreement-masked KL at T = 1 without T² against the queried student (§4.5, §10.4, §11.5).
        """
        teacher_logits = self.teacher_forward(view)
        terms: Terms = {}
        if self.bn_hook is not None:
            terms["bn"] = (self.bn, self.bn_hook.loss)
        if self.oh:
            terms["oh"] = (self.oh, F.cross_entropy(teacher_logits, targets))
        if adversarial:
            student_logits = self.student_forward(view, train_mode=student_train_mode)
            terms["adv"] = (self.adv, adversarial_kl_masked(student_logits, teacher_logits, temperature=1.0,
                                                            scale_by_temperature_squared=False))
        return terms, teacher_logits

    # ------------------------------------------------------------------ pool
    def synthesis_batches(self) -> int:
        """Batches the run adds to the pool: one per round, ``epochs × (ep_steps // kd_steps)`` (warm-up
        epochs synthesise too)."""
        options = self.options
        return options.epochs * (options.ep_steps // options.kd_steps)

    def memory_stores(self) -> list[Store]:
        """The pool at its final size: every synthetic batch of this rank, uint8 ``C × S × S`` (§21.3)."""
        size = self.setup.image_size
        return [Store("pool", self.synthesis_batches() * self.setup.synthesis_batch_size,
                      (self.setup.channels, size, size), torch.uint8, unit="images", growing=True, spillable=True,
                      sized_by="--epochs --synthesis_batch_size")]

    def spill_to_host(self) -> None:
        """The pool in host memory, its first allocation at the final size (§21.3)."""
        self.pool.move_to_host(reserve=self.synthesis_batches() * self.setup.synthesis_batch_size)

    def store(self, images: torch.Tensor) -> None:
        """Append a batch of float images in [0, 1] to the pool (quantised to uint8, §3.5)."""
        self.pool.add(images.detach())

    @torch.no_grad()
    def sample(self) -> torch.Tensor:
        """``B`` pool images through random crop (pad 4) + flip, as float, normalised (§3.5)."""
        images = self.pool.sample(self.setup.batch_size, generator=self.augmentation_stream)
        augmented = self.pool_augment(images)
        return self.memory_format(self.normalizer(to_unit_float(augmented)))

    def preview_images(self) -> torch.Tensor | None:
        """The latest stored batch (as quantised in the pool), in [0, 1]."""
        if len(self.pool) == 0:
            return None
        return to_unit_float(self.pool.images[-self.setup.synthesis_batch_size:])

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pool": self.pool.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.pool.load_state_dict(state["pool"])
