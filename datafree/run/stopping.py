"""When a run stops early: the ``--max_minutes`` budget and non-finite losses (signals:
:mod:`datafree.run.signals`).

Every early stop ends in a state ``--resume`` continues (the run lifecycle in
:mod:`datafree.run.lifecycle` writes ``last.pth`` before the first step and at every stop):

* :class:`TimeBudget` says when ``--max_minutes`` is spent.
* :class:`LossWatch` notices NaN / infinite losses without a host sync per step; ``check``
  (at logging points) raises :class:`~datafree.errors.NonFiniteLossError`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from datafree.errors import NonFiniteLossError


class TimeBudget:
    """``--max_minutes``: tells the loop when to stop cleanly (None = unlimited)."""

    def __init__(self, max_minutes: float | None) -> None:
        self.deadline = time.monotonic() + max_minutes * 60 if max_minutes else None

    def exhausted(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


@dataclass
class LossWatch:
    """Detects NaN / infinite losses without a host sync per step.

    ``observe`` records, on the device, the first (step, term) whose value was not finite;
    ``check`` (called at logging points) syncs once and raises NonFiniteLossError naming
    epoch, step and loss term, and what ``last.pth`` holds (``saved_at``).
    """

    device: torch.device
    term_names: list[str] = field(default_factory=list)
    first_bad_step: torch.Tensor | None = None
    first_bad_term: torch.Tensor | None = None

    def reset(self) -> None:
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.first_bad_term = torch.full((), -1, dtype=torch.long, device=self.device)

    def observe(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        if self.first_bad_step is None:
            self.reset()
        for name, value in terms.items():
            if name not in self.term_names:
                self.term_names.append(name)
            bad = ~torch.isfinite(value.detach()).all() & (self.first_bad_step < 0)
            self.first_bad_step = torch.where(bad, torch.full_like(self.first_bad_step, step), self.first_bad_step)
            self.first_bad_term = torch.where(bad, torch.full_like(self.first_bad_term, self.term_names.index(name)),
                                              self.first_bad_term)

    def check(self, epoch: int, saved_at: str = "the last good state") -> None:
        if self.first_bad_step is None:
            return
        step = int(self.first_bad_step.item())
        if step >= 0:
            term = self.term_names[int(self.first_bad_term.item())]
            raise NonFiniteLossError(f"non-finite loss '{term}' at epoch {epoch}, step {step}; last.pth keeps "
                                     f"{saved_at}: continue it with --resume --nan_policy skip (skips such "
                                     "batches), or start anew with a lower --lr / --lr_g and --overwrite")


def all_finite(tensors: Iterator[torch.Tensor]) -> bool:
    """True when every tensor is finite (one host sync); used by ``--nan_policy skip``."""
    flags = [torch.isfinite(t).all() for t in tensors]
    return bool(torch.stack(flags).all().item()) if flags else True
