"""Synthetic image pool (METHODS.md §3.5) and CMI feature memory bank (§4.5, §7 item 11).

:class:`ImagePool` replaces the references' folder of 8-bit PNGs that is re-scanned into a new
DataLoader after every synthesis (§7 item 1): images are quantised exactly as the PNG round
trip would (clamp to [0, 1], ×255, truncate) and kept in one uint8 tensor, on the run's device,
or in host memory when it would not fit there (§21.3: batches are then gathered on the host and
copied to the device one at a time); batches are drawn like a cycling, shuffled DataLoader over
the whole pool.

:class:`MemoryBank` is CMI's ring buffer of instance features, without the reference's
``capacity % batch == 0`` assertion and without its empty sample at exactly full capacity.

:class:`NegativeQueue` is AdaDFKD's MoCo-style queue of unit-length negatives (§12.4, §12.8 item 2):
a device-resident ring buffer, full from the start, read whole, for any capacity and batch size.

All three classes hold all of their state in tensors and integers exposed through
``state_dict`` / ``load_state_dict``, so a resumed run draws exactly the same batches.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from datafree.augment import random_integers, random_permutation

__all__ = ["ImagePool", "MemoryBank", "NegativeQueue", "quantize_images"]


def quantize_images(images: torch.Tensor) -> torch.Tensor:
    """Float images -> uint8 exactly as the [REF] PNG writer: clamp to [0, 1], ×255, truncate (§3.5)."""
    return (images.detach().float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def ring_write_slots(pointer: int, count: int, capacity: int, device: torch.device) -> tuple[int, torch.Tensor]:
    """Where ``count`` rows written at ``pointer`` land in a ring of ``capacity`` rows.

    Returns ``(skipped, slots)``: the first ``skipped`` rows of a batch larger than the ring would
    be overwritten by its later rows, so only rows ``skipped:`` are written, at ``slots``.
    """
    skipped = max(0, count - capacity)
    start = (pointer + skipped) % capacity
    return skipped, (start + torch.arange(count - skipped, device=device)) % capacity


class ImagePool:
    """Growing (or, with ``max_size``, ring-bounded) uint8 pool of synthetic images (§3.5).

    ``add`` appends a batch of float images in [0, 1]; storage grows by amortised doubling.
    ``sample`` walks a random permutation of the whole current pool with a cursor, like a
    shuffled DataLoader that cycles: every image is drawn once per pass, a new permutation
    starts when the pass is exhausted or when images were added since it started (the
    references rebuild their loader after every synthesis), and a batch is never short — its
    remainder comes from the next permutation. A pool smaller than the batch is sampled with
    replacement.

    ``device`` is where batches are returned (the run's device). With ``on_host`` the storage lives
    in host memory instead (§21.3): each batch is gathered there into a staging tensor (pinned when
    ``device`` is CUDA), then copied to ``device`` without blocking. Every random draw (permutations,
    indices) is made exactly as on the device path, with the same generator, and only then moved,
    so both paths return identical batches. Host-path costs: one device-to-host copy per added batch
    and per new permutation (once per pass), and per step while the pool is smaller than a batch.
    """

    def __init__(self, device: torch.device | str = "cpu", max_size: int | None = None, on_host: bool = False) -> None:
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be positive or None, got {max_size}")
        self.device = torch.device(device)
        self.on_host = on_host
        self.storage_device = torch.device("cpu") if on_host else self.device
        self.max_size = max_size
        self._reserved = 0                               # capacity of the first allocation (host pools)
        self._storage: torch.Tensor | None = None       # (capacity, C, H, W) uint8
        self._size = 0                                   # valid images in storage
        self._write_position = 0                         # next slot once a bounded pool is full
        self._total_added = 0                            # images ever added (content version)
        self._permutation: torch.Tensor | None = None
        self._permutation_version = -1                   # _total_added when the permutation was drawn
        self._cursor = 0

    def __len__(self) -> int:
        return self._size

    @property
    def total_added(self) -> int:
        """Images ever added, including those a bounded pool has overwritten."""
        return self._total_added

    @property
    def capacity(self) -> int:
        """Allocated image slots (grows by doubling; never above ``max_size``)."""
        return 0 if self._storage is None else self._storage.shape[0]

    @property
    def images(self) -> torch.Tensor:
        """View of the stored uint8 images ``(len, C, H, W)`` (order = storage order), where they are stored."""
        if self._storage is None:
            return torch.empty((0, 3, 0, 0), dtype=torch.uint8, device=self.storage_device)
        return self._storage[:self._size]

    @property
    def pinned(self) -> bool:
        """Whether host batches are staged in pinned memory (a host pool feeding a CUDA device)."""
        return self.on_host and self.device.type == "cuda"

    def move_to_host(self, reserve: int = 0) -> None:
        """Keep the storage in host memory from now on (§21.3), moving what is stored; ``reserve`` is the
        capacity of the first allocation (the pool's projected final size), so that a large host pool
        grows without the doubling copies. Changes no sample."""
        self.on_host, self.storage_device = True, torch.device("cpu")
        self._reserved = reserve if self.max_size is None else min(reserve, self.max_size)
        if self._storage is not None:
            self._storage = self._storage.to(self.storage_device)
        if self._permutation is not None:
            self._permutation = self._permutation.to(self.storage_device)

    # ------------------------------------------------------------------ adding
    def _ensure_capacity(self, needed: int, image_shape: tuple[int, ...]) -> None:
        """Make room for ``needed`` images, doubling the storage (capped at ``max_size``)."""
        if self._storage is None:
            capacity = max(needed, self._reserved)
            if self.max_size is not None:
                capacity = min(capacity, self.max_size)
            self._storage = torch.empty((capacity, *image_shape), dtype=torch.uint8, device=self.storage_device)
            return
        if self._storage.shape[1:] != image_shape:
            raise ValueError(f"pool holds images of shape {tuple(self._storage.shape[1:])}, got {image_shape}")
        capacity = self._storage.shape[0]
        if needed <= capacity:
            return
        new_capacity = max(needed, 2 * capacity, self._reserved)   # a resumed host pool: straight to its final size
        if self.max_size is not None:
            new_capacity = min(new_capacity, self.max_size)
        if new_capacity == capacity:
            return
        grown = torch.empty((new_capacity, *image_shape), dtype=torch.uint8, device=self.storage_device)
        grown[:self._size] = self._storage[:self._size]
        self._storage = grown

    def add(self, images: torch.Tensor) -> None:
        """Quantise float images in [0, 1] ``(N, C, H, W)`` and store them (§3.5)."""
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(f"ImagePool.add expects float images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        count = images.shape[0]
        if count == 0:
            return
        quantized = quantize_images(images).to(self.storage_device)
        if self.max_size is not None and count > self.max_size:
            quantized = quantized[-self.max_size:]   # only the newest max_size survive a ring
        limit = self.max_size
        appended = quantized.shape[0] if limit is None else min(quantized.shape[0], limit - self._size)
        self._ensure_capacity(self._size + appended, tuple(quantized.shape[1:]))
        assert self._storage is not None
        self._storage[self._size:self._size + appended] = quantized[:appended]
        self._size += appended
        overwriting = quantized[appended:]
        if overwriting.shape[0] > 0 and limit is not None:  # full ring: replace the oldest images
            slots = (self._write_position + torch.arange(overwriting.shape[0], device=self.storage_device)) % limit
            self._storage.index_copy_(0, slots, overwriting)
            self._write_position = (self._write_position + overwriting.shape[0]) % limit
        self._total_added += count

    # ------------------------------------------------------------------ sampling
    def _new_permutation(self, generator: torch.Generator | None) -> torch.Tensor:
        """Start a new pass: a fresh permutation of the current pool, cursor at its start."""
        # Drawn where the device path draws it, then moved: the host path takes the same images.
        self._permutation = random_permutation(self._size, self.device, generator).to(self.storage_device)
        self._permutation_version = self._total_added
        self._cursor = 0
        return self._permutation

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch_size`` uint8 images ``(B, C, H, W)``, shuffled passes over the whole pool (§3.5)."""
        if self._size == 0 or self._storage is None:
            raise RuntimeError("cannot sample from an empty ImagePool; add images first")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if self._size < batch_size:
            indices = random_integers(0, self._size, (batch_size,), self.device, generator).to(self.storage_device)
            return self._gather(indices)
        permutation = self._permutation
        if permutation is None or self._permutation_version != self._total_added or self._cursor >= self._size:
            permutation = self._new_permutation(generator)
        taken = permutation[self._cursor:self._cursor + batch_size]
        self._cursor += taken.shape[0]
        if taken.shape[0] < batch_size:
            remainder = batch_size - taken.shape[0]
            permutation = self._new_permutation(generator)
            taken = torch.cat([taken, permutation[:remainder]])
            self._cursor = remainder
        return self._gather(taken)

    def _gather(self, indices: torch.Tensor) -> torch.Tensor:
        """The stored images at ``indices`` (on the storage device), as a batch on ``device``."""
        assert self._storage is not None
        if not self.on_host:
            return self._storage.index_select(0, indices)
        batch = torch.empty((indices.shape[0], *self._storage.shape[1:]), dtype=torch.uint8, pin_memory=self.pinned)
        torch.index_select(self._storage, 0, indices, out=batch)
        # From pinned memory the copy is asynchronous; the host allocator keeps the staging block
        # alive until the copy has run.
        return batch.to(self.device, non_blocking=self.pinned)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue with identical samples (tensors on the CPU)."""
        return {
            "images": self.images.cpu().clone(),
            "max_size": self.max_size,
            "write_position": self._write_position,
            "total_added": self._total_added,
            "permutation": None if self._permutation is None else self._permutation.cpu().clone(),
            "permutation_version": self._permutation_version,
            "cursor": self._cursor,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`, onto this pool's storage device."""
        images = state["images"].to(self.storage_device)
        self.max_size = state["max_size"]
        self._storage = images.clone() if images.shape[0] > 0 else None
        self._size = images.shape[0]
        self._write_position = int(state["write_position"])
        self._total_added = int(state["total_added"])
        permutation = state["permutation"]
        self._permutation = None if permutation is None else permutation.to(self.storage_device)
        self._permutation_version = int(state["permutation_version"])
        self._cursor = int(state["cursor"])

    def export_png(self, directory: str | Path) -> int:
        """Write every image as ``<directory>/<index:06d>.png`` for inspection only; returns the count.

        File names are built explicitly (§7 item 2). Needs Pillow; without it, warns and writes nothing.
        """
        try:
            from PIL import Image
        except ImportError:
            warnings.warn("Pillow is not installed; ImagePool.export_png wrote nothing")
            return 0
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = self.images.permute(0, 2, 3, 1).cpu().numpy()
        for index, image in enumerate(pixels):
            Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(folder / f"{index:06d}.png")
        return len(pixels)


class MemoryBank:
    """CMI's ring buffer of instance features ``capacity × dim`` on a device (§4.5, §7 item 11).

    ``add`` writes rows at the pointer and wraps around (any batch size; a batch that crosses
    the end continues at row 0). ``get(k)`` returns ``k`` distinct rows drawn uniformly from
    the whole buffer once ``capacity`` rows were ever written, else ``min(k, filled)`` distinct
    rows from the filled part; it is empty only when nothing was ever written.
    """

    def __init__(self, capacity: int, dim: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        if capacity < 1 or dim < 1:
            raise ValueError(f"capacity and dim must be positive, got {capacity} and {dim}")
        self.capacity = capacity
        self.dim = dim
        self.device = torch.device(device)
        self.features = torch.zeros((capacity, dim), dtype=dtype, device=self.device)
        self.pointer = 0            # next row to write
        self.total_written = 0      # rows ever written

    def __len__(self) -> int:
        """Filled rows."""
        return min(self.total_written, self.capacity)

    def add(self, features: torch.Tensor) -> None:
        """Write ``features (N, dim)`` (detached) at the pointer, wrapping around the end."""
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"MemoryBank.add expects (N, {self.dim}) features, got {tuple(features.shape)}")
        count = features.shape[0]
        if count == 0:
            return
        skipped, slots = ring_write_slots(self.pointer, count, self.capacity, self.device)
        rows = features[skipped:].detach().to(device=self.device, dtype=self.features.dtype)
        self.features.index_copy_(0, slots, rows)
        self.pointer = (self.pointer + count) % self.capacity
        self.total_written += count

    def get(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``min(k, len(self))`` distinct rows, uniformly at random; ``(0, dim)`` if nothing was written."""
        if k < 0:
            raise ValueError(f"k must be non-negative, got {k}")
        filled = len(self)
        count = min(k, filled)
        if count == 0:
            return self.features[:0]
        indices = random_permutation(filled, self.device, generator)[:count]
        return self.features.index_select(0, indices)

    def state_dict(self) -> dict[str, Any]:
        """Filled rows (CPU), pointer and counters."""
        return {"capacity": self.capacity, "dim": self.dim, "features": self.features[:len(self)].cpu().clone(),
                "pointer": self.pointer, "total_written": self.total_written}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a bank with the same capacity and dim."""
        if state["capacity"] != self.capacity or state["dim"] != self.dim:
            raise ValueError(f"bank state is {state['capacity']}×{state['dim']}, this bank is {self.capacity}×{self.dim}")
        features = state["features"]
        self.features.zero_()
        self.features[:features.shape[0]] = features.to(device=self.device, dtype=self.features.dtype)
        self.pointer = int(state["pointer"])
        self.total_written = int(state["total_written"])


class NegativeQueue:
    """AdaDFKD's queue of negatives: ``capacity`` (K) unit vectors of width ``dim`` (§12.4, §12.8 item 2).

    It starts full, with K random-normal rows normalised to unit length drawn from ``generator``
    (the synthesizer's noise stream). ``enqueue`` writes keys at the ring pointer and wraps around
    the end, for any batch size (no ``K % B == 0`` assertion as in [REF]; a batch longer than K
    leaves its last K rows). ``keys`` is the whole K × dim queue.

    The storage is replaced, never written in place: a ``keys`` tensor read before an ``enqueue``
    (e.g. saved by autograd for the backward of the R2M loss) keeps its values.
    """

    def __init__(self, dim: int, capacity: int, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> None:
        if capacity < 1 or dim < 1:
            raise ValueError(f"capacity and dim must be positive, got {capacity} and {dim}")
        self.capacity = capacity
        self.dim = dim
        self.device = torch.device(device)
        initial = torch.randn((capacity, dim), device=self.device, generator=generator)
        self._keys = torch.nn.functional.normalize(initial, dim=1)
        self.pointer = 0  # next row to write

    @property
    def keys(self) -> torch.Tensor:
        """The whole queue ``(capacity, dim)`` in ring order (row ``pointer`` is the next to be replaced)."""
        return self._keys

    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys (N, dim)`` (detached) at the pointer, wrapping around the end (§12.4)."""
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"NegativeQueue.enqueue expects (N, {self.dim}) keys, got {tuple(keys.shape)}")
        count = keys.shape[0]
        if count == 0:
            return
        skipped, slots = ring_write_slots(self.pointer, count, self.capacity, self.device)
        rows = keys[skipped:].detach().to(device=self.device, dtype=self._keys.dtype)
        self._keys = self._keys.index_copy(0, slots, rows)
        self.pointer = (self.pointer + count) % self.capacity

    def state_dict(self) -> dict[str, Any]:
        """The keys (CPU) and the pointer."""
        return {"capacity": self.capacity, "dim": self.dim, "keys": self._keys.cpu().clone(), "pointer": self.pointer}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a queue with the same capacity and dim."""
        if state["capacity"] != self.capacity or state["dim"] != self.dim:
            raise ValueError(f"queue state is {state['capacity']}×{state['dim']}, "
                             f"this queue is {self.capacity}×{self.dim}")
        self._keys = state["keys"].to(device=self.device, dtype=self._keys.dtype).clone()
        self.pointer = int(state["pointer"])
