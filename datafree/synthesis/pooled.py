"""Synthesizers that store their best batch in a growing image pool: ADI and CMI (METHODS.md §3.5).

Both methods optimise one fresh batch per ``synthesize()`` (pixels for ADI §4.4, a generator
and its latents for CMI §4.5) and append the best iterate, in [0, 1], to a pool that lives
for the whole run. Every KD step then draws ``B`` images uniformly, in shuffled passes, from
the **entire** pool and applies the train transform of §3.5 (random crop with 4-px zero
padding, horizontal flip, normalise).

[CLEAN] (§3.5, §7 item 1): instead of the references' folder of 8-bit PNGs re-read by a new
DataLoader after every synthesis, the pool is one uint8 tensor on the run's device
(:class:`datafree.pool.ImagePool`, same 8-bit quantisation as the PNG round trip), and the
crop/flip/normalise runs batched on the device with the synthesizer's own RNG stream.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from datafree.augment import to_unit_float
from datafree.pool import ImagePool
from datafree.synthesis.base import SynthesisSetup, Synthesizer

#: Zero padding of the pool's train-transform random crop (§3.5).


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


class PooledSynthesizer(Synthesizer):
    """Base of ADI and CMI: a device-resident uint8 image pool sampled through the train transform (§3.5)."""

    def __init__(self, setup: SynthesisSetup, options: Mapping[str, Any]) -> None:
        super().__init__(setup, options)
        self.g_steps = int(options["g_steps"])
        self.pool = ImagePool(device=setup.device)

    # ------------------------------------------------------------------ pool
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
