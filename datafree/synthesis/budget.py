"""Memory budget of a run's stores: projected sizes, where the image pool lives, the start-up line (METHODS.md §21.3).

The stores that grow over a run or scale with it (the image pool of ADI, CMI, Fast and NAYER; CMI's
feature bank; AdaDFKD's negative queue) are sized at their **final** size from the real image
geometry (channels × size × size) before training starts, and one line reports them, e.g.::

    memory: pool up to 140,000 images x 3x224x224 uint8 = 21.1 GB, on host (device budget 19.8 GB)

Placement (``--pool_device``): ``device`` keeps the pool on the run's device, ``host`` keeps it in host
memory (batches gathered there and copied to the device one at a time, through pinned memory on
CUDA, :class:`datafree.synthesis.pool.ImagePool`), and ``auto`` (default) keeps it on the device
while all stores together fit the **device budget** — :data:`DEVICE_FRACTION` of the device memory
free once the teacher, student and synthesizer are built — and moves it to the host otherwise. On a
CPU run there is no separate device: ``auto`` keeps everything where it is. Only the pool moves: the
bank and the queue are read whole (or in random rows) at every generator step and stay on the device.
Placement never changes a result (both pool paths draw the same random numbers on the same device).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from datafree.errors import UsageError

if TYPE_CHECKING:
    from datafree.synthesis.base import Synthesizer

#: Values of ``--pool_device``.
POOL_DEVICE_MODES = ("auto", "device", "host")
#: Share of the free device memory that the stores may take under ``--pool_device auto``; the rest is
#: left to activations (a 224-px ResNet-50 step needs far more than its weights, §21.3).
DEVICE_FRACTION = 0.25


@dataclass(frozen=True)
class Store:
    """One store at its final size: ``rows`` rows of ``row_shape`` elements of ``dtype``.

    ``growing`` stores (the pool) are reported as "up to"; ``spillable`` ones may live in host memory.
    """

    name: str
    rows: int
    row_shape: tuple[int, ...]
    dtype: torch.dtype
    unit: str = "rows"
    growing: bool = False
    spillable: bool = False
    sized_by: str = ""   # the flags that set its size, named when it cannot fit

    @property
    def nbytes(self) -> int:
        """Bytes at the final size."""
        return self.rows * math.prod(self.row_shape) * self.dtype.itemsize

    def describe(self) -> str:
        """E.g. ``pool up to 140,000 images x 3x224x224 uint8 = 21.1 GB``."""
        dtype = str(self.dtype).removeprefix("torch.")
        shape = "x".join(f"{size:,}" for size in self.row_shape)
        return (f"{self.name} {'up to ' if self.growing else ''}{self.rows:,} {self.unit} x {shape} {dtype} = "
                f"{format_bytes(self.nbytes)}")


def format_bytes(count: int) -> str:
    """Decimal units with three significant digits: ``960 B``, ``2.46 MB``, ``157 MB``, ``21.1 GB``."""
    value, unit = float(count), "B"
    for next_unit in ("kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, next_unit
    if unit == "B":
        return f"{count} B"
    decimals = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{decimals}f} {unit}"


def device_budget(device: torch.device) -> int | None:
    """:data:`DEVICE_FRACTION` of the free memory of a CUDA ``device`` now; None for a CPU run."""
    if device.type != "cuda":
        return None
    return int(free_memory(device) * DEVICE_FRACTION)


def pool_on_host(mode: str, stores: list[Store], budget: int | None) -> bool:
    """Whether the spillable stores go to host memory: always with ``host``, never with ``device``,
    and with ``auto`` when the stores together exceed a known ``budget``."""
    if mode not in POOL_DEVICE_MODES:
        raise ValueError(f"pool placement must be one of {POOL_DEVICE_MODES}, got {mode!r}")
    if mode != "auto":
        return mode == "host"
    return budget is not None and sum(store.nbytes for store in stores) > budget


def budget_line(stores: list[Store], on_host: bool, device: torch.device, budget: int | None,
                per_rank: bool = False) -> str:
    """The start-up line: every store, where it lives, that ``last.pth`` holds it too (its filled
    rows, up to the size shown), and the device budget (CUDA only)."""
    parts = [f"{store.describe()}, on {'host' if on_host and store.spillable else device}" for store in stores]
    notes = ["in last.pth too"] + (["per rank"] if per_rank else []) + (
        [f"device budget {format_bytes(budget)}"] if budget is not None else [])
    return "memory: " + "; ".join(parts) + f" ({', '.join(notes)})"


def host_free_memory() -> int | None:
    """Memory the host can still give this process: ``MemAvailable`` of /proc/meminfo, else the free
    pages; None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def free_memory(device: torch.device) -> int | None:
    """Free memory of ``device`` now: the CUDA device's, or the host's for a CPU run; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return host_free_memory()


def check_fits(stores: list[Store], on_host: bool, device: torch.device) -> None:
    """Refuse, in one line naming the flags that size them, stores that cannot fit where they will live
    at their final size: on the device (its free memory now) or in host memory (§21.3). Called before
    the stores are filled and before the run directory exists."""
    host = torch.device("cpu")
    spilled = [store for store in stores if on_host and store.spillable]
    # A CPU run has one memory, the host's; a CUDA run keeps on the device what did not spill.
    places = {host: stores} if device.type == "cpu" else {
        host: spilled, device: [store for store in stores if store not in spilled]}
    for where, kept in places.items():
        needed = sum(store.nbytes for store in kept)
        available = free_memory(where)
        if kept and available is not None and needed > available:
            flags = sorted({flag for store in kept for flag in store.sized_by.split() if flag})
            names = ", ".join(store.describe() for store in kept)
            raise UsageError(f"memory: {names} cannot fit: {format_bytes(needed)} needed, {format_bytes(available)} "
                             f"free on {'host' if where == host else where}; lower "
                             f"{' / '.join(flags) or 'the batch or epochs'}")


def plan_memory(synthesizer: "Synthesizer", mode: str) -> str:
    """Size the synthesizer's stores, refuse them if they cannot fit (:func:`check_fits`), move its pool
    to the host where ``mode`` says so, and return the start-up line ("" for a method without stores)."""
    stores = synthesizer.memory_stores()
    if not stores:
        return ""
    device = synthesizer.device
    budget = device_budget(device)
    on_host = pool_on_host(mode, stores, budget)
    check_fits(stores, on_host, device)
    if on_host:
        synthesizer.spill_to_host()
    return budget_line(stores, on_host, device, budget, per_rank=synthesizer.setup.world_size > 1)
