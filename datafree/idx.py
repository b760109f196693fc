"""MNIST's IDX files on disk (METHODS.md §20): reading, validating and resizing them once.

The official files (and torchvision's layout, ``<root>/MNIST/raw/``) are
``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, each either plain or gzip-compressed (``.gz``).
An IDX file is a big-endian header — a magic number (0x00000803 for a uint8 image tensor of three
dimensions, 0x00000801 for a uint8 label vector), then one 32-bit size per dimension — followed by
the uint8 values. Anything that does not match (wrong magic, a header that claims more values than
the file holds, image and label counts that differ, a label outside the classes) raises
:class:`IdxError` with one line; :mod:`datafree.data` turns it into a DatasetError that shows the
expected layout.

The digits are resized once from 28 to the dataset's side (32 px, as the DAFL / DFAD references
do) with bilinear interpolation and rounded back to uint8, so the split stays a uint8 tensor.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801


class IdxError(ValueError):
    """An IDX file is missing, truncated or not what its name says; the message is one line."""


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz`` (plain first), or None when neither exists."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise IdxError(f"file {path} is truncated or not gzip data ({type(error).__name__}: {error})") from None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of one IDX file, validated against ``magic`` and its own header."""
    content = _read_bytes(path)
    dimensions = magic & 0xFF
    header_size = 4 + 4 * dimensions
    if len(content) < header_size:
        raise IdxError(f"file {path} holds {len(content)} bytes, less than its {header_size}-byte header")
    found = struct.unpack(">I", content[:4])[0]
    if found != magic:
        raise IdxError(f"file {path} has magic number 0x{found:08x}, expected 0x{magic:08x}")
    shape = struct.unpack(f">{dimensions}I", content[4:header_size])
    values = int(np.prod(shape, dtype=np.int64))
    if len(content) - header_size < values:
        raise IdxError(f"file {path}: its header claims {values} values of shape {tuple(shape)} but it holds "
                       f"{len(content) - header_size} (truncated)")
    return np.frombuffer(content, dtype=np.uint8, count=values, offset=header_size).reshape(shape).copy()


def read_digits(images_path: Path, labels_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W), labels int64 (N,)) of one split, checked against each other."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise IdxError(f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
                       f"{labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise IdxError(f"file {labels_path}: labels span [{labels.min()}, {labels.max()}], outside [0, {num_classes})")
    return images, labels


def resize_uint8(images: np.ndarray, size: int, chunk: int = 10_000) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, size, size) uint8: bilinear (antialiased), rounded, in chunks."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    if tensor.shape[-2:] == (size, size):
        return tensor.clone()
    parts = []
    for start in range(0, tensor.shape[0], chunk):
        part = F.interpolate(tensor[start:start + chunk].float(), size=(size, size), mode="bilinear",
                             align_corners=False, antialias=True)
        parts.append(part.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(parts) if parts else torch.empty((0, 1, size, size), dtype=torch.uint8)
