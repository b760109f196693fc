"""Learning-rate schedules as pure functions of the epoch (docs/METHODS.md §3.3, §14.5)."""
from __future__ import annotations

import bisect
from typing import Sequence


def parse_milestones(text: str) -> tuple[int, ...]:
    """``"100,200"`` -> ``(100, 200)``; ``""`` -> ``()``. Raises ValueError for anything else, or for
    milestones that are not strictly increasing and >= 1."""
    milestones = tuple(int(part) for part in text.split(",") if part.strip())
    if any(m < 1 for m in milestones) or any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ValueError(f"milestones must be increasing integers >= 1, got {text!r}")
    return milestones


def multistep_factor(epoch: int, milestones: Sequence[int], gamma: float) -> float:
    """The factor of the base learning rate during KD epoch ``epoch`` (0-based): ``gamma`` to the
    number of milestones ``<= epoch`` (PyTorch's MultiStepLR stepped once after every epoch)."""
    return gamma ** bisect.bisect_right(list(milestones), epoch)
