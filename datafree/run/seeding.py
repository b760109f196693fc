"""Seeds and random-number-generator states (METHODS.md §7 item 14).

* :func:`seed_everything` seeds Python, NumPy and torch (CPU and every CUDA device) from
  ``--seed``; synthesizers then draw from private ``torch.Generator`` streams of their own.
* :func:`capture_rng_state` / :func:`restore_rng_state` save and restore every global RNG, so
  that a resumed run continues the same random streams. The state is made of tensors, integers,
  floats and ``None`` only, because checkpoints are read with ``torch.load(weights_only=True)``
  (nothing loaded may run code): Python's and NumPy's Mersenne-Twister keys become int64 tensors.
* :func:`derived_generator` gives a generator seeded from integers (seed, epoch, step, ...),
  which needs no saved state at all.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

#: Largest seed accepted by ``--seed``: derived seeds must stay below torch's 64-bit limit.
MAX_SEED = 2**63 - 1


def mix_seed(*keys: int) -> int:
    """One non-negative 63-bit integer from several (seed, rank, stream, epoch, ...)."""
    value = 0
    for key in keys:
        value = (value * 1_000_003 + int(key)) % MAX_SEED
    return value


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device) (§7 item 14)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain numbers (loadable with ``weights_only=True``)."""
    version, python_keys, gauss = random.getstate()
    kind, numpy_keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "keys": torch.tensor(python_keys, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(numpy_keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    python = state["python"]
    random.setstate((python["version"], tuple(int(key) for key in python["keys"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def derived_generator(device: torch.device, *keys: int) -> torch.Generator:
    """A generator seeded from integers (seed, epoch, step, ...): resumable without saved state."""
    generator = torch.Generator(device=device)
    generator.manual_seed(mix_seed(*keys))
    return generator
