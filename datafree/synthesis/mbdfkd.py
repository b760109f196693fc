"""MB-DFKD — memory-bank data-free KD (Binici et al., WACV 2022): a **reconstruction** (METHODS.md §15).

No code of MB-DFKD is public, and its paper body was not available: only its abstract is known.
It rehearses "a dynamic collection of generated samples over time" against catastrophic
forgetting, with a generator that seeks information gain under a real-distribution constraint
(§15.1). PRE-DFKD (§16) is the same authors' next step, with the stored samples replaced by a VAE,
so this reconstruction is PRE-DFKD with a bank of past synthetic images in place of the VAE (§15.4):

* the novel generator, its loss, the KD batch and the L1 student loss are PRE-DFKD's
  (:class:`~datafree.synthesis.replay.ReplaySynthesizer`);
* the memory is a ring buffer of ``--bank_size`` standardised images (the generator's normalised
  output, in model space; stored as ``--bank_dtype``): after each of the round's first
  ``--bank_writes`` KD steps, the first ``--bank_write_ratio``·B novel images of that step are
  written, as PRE-DFKD feeds its VAE;
* every KD batch is the B novel images plus ``--mem_ratio``·B distinct bank rows drawn uniformly
  (none while the bank is empty, on the first KD step of a run).

Bank size, write and read ratios are guesses (§15.4, §15.7 item 1): a run of this file is not a
reproduction of the paper's numbers, and everything a user sees calls it a reconstruction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from datafree.errors import UsageError
from datafree.options import option
from datafree.published import PAPER_CELLS, Published
from datafree.synthesis.base import BankSizeOptions, TestPreset
from datafree.synthesis.budget import Store
from datafree.synthesis.pool import MemoryBank
from datafree.synthesis.predfkd import CIFAR_SETTINGS as PREDFKD_SETTINGS
from datafree.synthesis.predfkd import KULUHAN, PUBLISHED_PAIR
from datafree.synthesis.recipe import Launcher, Recipe, Setting, settings
from datafree.synthesis.replay import ReplaySynthesizer

#: PRE-DFKD's values that configure its VAE, which the bank replaces (§15.4).
VAE_FLAGS = ("vae_half", "vae_updates", "vae_lr_div", "kld_w", "z_steps")
#: The bank's values: guesses of §15.4, sized like one epoch of PRE-DFKD's VAE inputs.
BANK_SETTINGS = settings(
    ("bank_size", "73728", "guess (§15.4): 36 rounds x 4 writes x 512 images = one epoch of PRE-DFKD's VAE inputs"),
    ("bank_writes", "4", "guess (§15.4): a write after each of the round's first 4 KD steps, as PRE-DFKD's VAE "
                         "steps"),
    ("bank_write_ratio", "0.5", "guess (§15.4): the first B/2 novel images, PRE-DFKD's VAE input"),
    ("bank_dtype", "float16", "half-precision storage of the standardised images (§15.4)"))
#: PRE-DFKD's reference defaults without the VAE, then the bank (§15.4): no MB-DFKD value is published.
CIFAR_SETTINGS = (*(Setting(row.flag, row.value, f"PRE-DFKD: {row.comment}") for row in PREDFKD_SETTINGS
                    if row.flag not in VAE_FLAGS), *BANK_SETTINGS)
#: The CuDFKD README's stability rows of MB-DFKD (μ / σ² / best over epochs, §15.3), per dataset.
SEED_ROW = {"cifar10": (83.3, 16.4, 92.4), "cifar100": (64.4, 18.3, 75.4)}
SEED_SOURCE = "CuDFKD README @81b96d4 stability table (probably from the PRE-DFKD paper, §15.7 item 3)"


def cifar_launcher(dataset: str, teacher: str, student: str) -> Launcher:
    """PRE-DFKD's reference defaults with the bank in place of the VAE, on one cell of the paper's grid."""
    return Launcher(
        dataset, teacher, student,
        what="a RECONSTRUCTION (no public code): PRE-DFKD's defaults with a bank of past images instead of its VAE",
        source=(f"none: MB-DFKD has no public code or command (§15.2); every value is PRE-DFKD's reference "
                f"default ({KULUHAN}) or a guess of §15.4"),
        settings=CIFAR_SETTINGS)


#: MB-DFKD's recipe (datafree.synthesis.recipe): the reconstruction on the paper's grid, with the
#: seed's stability rows (§15.3), whose best is compared with as kind "reconstruction".
RECIPE = Recipe(
    label="MB-DFKD (reconstruction)", name="Memory-Bank DFKD, reconstructed: no public code", section="§15",
    table_row=10, caveat="reconstruction",
    launchers=tuple(cifar_launcher(*cell) for cell in PAPER_CELLS),
    published={("", dataset, *PUBLISHED_PAIR): Published(
        row[2], "reconstruction", SEED_SOURCE,
        f"stability row (§15.3): mean {row[0]} / variance {row[1]} / best {row[2]}; the pair is presumed "
        "(§15.7 item 2) and the code is a reconstruction (§15.4)", stability=row)
        for dataset, row in SEED_ROW.items()},
    notes=("RECONSTRUCTION: MB-DFKD's code is not public; this is PRE-DFKD with a memory bank of past synthetic "
           "images in place of its VAE (§15.4). Bank size and ratios are guesses.",
           "Student loss: L1 between student and teacher logits on B novel + B/8 banked images (§16.4)."))


class MBDFKDSynthesizer(ReplaySynthesizer):
    """MB-DFKD, reconstructed (§15.4): PRE-DFKD's novel generator, replaying rows of a bank of past images."""

    recipe = RECIPE

    #: §15.6: PRE-DFKD's CPU check (§16.10) with the bank in place of the VAE (its wrap-around is a unit test).
    TEST_PRESET = TestPreset(tiny_flags=("--nz", "16", "--bank_size", "64"),
                             learning_flags=("--epochs", "4", "--ep_steps", "30", "--kd_steps", "10", "--ngf", "16",
                                             "--nz", "32", "--lr_schedule", "constant", "--bank_size", "1024"),
                             learning_bar=30.0)

    @dataclass(frozen=True)
    class Options(BankSizeOptions, ReplaySynthesizer.Options):
        """MB-DFKD options: a RECONSTRUCTION, no public code (§15.4)"""

        #: PRE-DFKD's reference defaults (the base's) and the bank of §15.4.
        DEFAULTS = {**ReplaySynthesizer.Options.DEFAULTS, "bank_size": 73728}

        bank_writes: int = option(4, "MB-DFKD (reconstruction): bank writes per round, after its first KD steps "
                                     "(§15.4)", "non_negative")
        bank_write_ratio: float = option(0.5, "MB-DFKD (reconstruction): novel rows written per bank write, as a "
                                              "fraction of B (§15.4)", "unit")
        bank_dtype: str = option("float16", "MB-DFKD (reconstruction): storage type of the banked standardised "
                                            "images (§15.4)", choices=("float16", "float32"))

        def validate(self) -> None:
            super().validate()
            if self.bank_write_ratio <= 0:
                raise UsageError(f"--bank_write_ratio must be above 0, got {self.bank_write_ratio}")

    @classmethod
    def deviations(cls, options: Options) -> list[str]:
        """Every run says it: the method is a reconstruction (§15.4, §15.7 item 1)."""
        return ["MB-DFKD has no public code: this is a reconstruction (PRE-DFKD with a bank of past images "
                "instead of its VAE; bank size and ratios are guesses, §15.4), not a reproduction"]

    def __init__(self, setup, options: Options) -> None:
        super().__init__(setup, options)
        self.bank_writes = options.bank_writes
        self.write_rows = max(1, round(setup.batch_size * options.bank_write_ratio))
        self.image_shape = (setup.channels, setup.image_size, setup.image_size)
        self.bank_store = Store("image bank", options.bank_size, self.image_shape, getattr(torch, options.bank_dtype),
                                unit="images", sized_by="--bank_size --bank_dtype")
        self._bank: MemoryBank | None = None   # allocated at first use, once the budget has accepted it

    @property
    def bank(self) -> MemoryBank:
        """The ring buffer of ``--bank_size`` flattened images (§15.4)."""
        if self._bank is None:
            self._bank = MemoryBank(self.bank_store.rows, math.prod(self.image_shape), device=self.device,
                                    dtype=self.bank_store.dtype)
        return self._bank

    def memory_stores(self) -> list[Store]:
        """The image bank at its full size, on the device (§15.4, §21.3): checked and reported at start,
        before it is allocated."""
        return [self.bank_store]

    def replay(self) -> torch.Tensor:
        """``--mem_ratio``·B distinct bank rows, uniformly at random, as float32 images (§15.4); fewer
        while the bank holds fewer, none while it is empty."""
        rows = self.bank.get(self.memory_rows, generator=self.augmentation_stream)
        return rows.float().view(-1, *self.image_shape)

    def after_student_step(self, kd_step: int) -> None:
        """Bank the first ``--bank_write_ratio``·B novel images after each of the round's first
        ``--bank_writes`` KD steps (§15.4)."""
        if kd_step % self.kd_steps < self.bank_writes and self.novel_images is not None:
            self.bank.add(self.novel_images[:self.write_rows].flatten(1))

    def state_dict(self) -> dict[str, Any]:
        """The base's state and the bank: its filled rows, write pointer and fill count (§15.4)."""
        return {**super().state_dict(), "bank": self.bank.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.bank.load_state_dict(state["bank"])
