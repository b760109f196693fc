"""Tiny MNIST data roots in torchvision's layout, for tests (METHODS.md §20).

``write_mnist(root)`` writes ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` as IDX
files (big-endian header: magic 0x803 / 0x801, then the sizes, then uint8 values), gzip-compressed
with ``.gz`` names or plain. With ``learnable=True`` each class is an easy 28×28 pattern — a bright
horizontal bar whose row depends on the class, plus a vertical bar for classes ≥ 5 — under pixel
noise, so LeNet-5 separates the classes within an epoch.

``break_mnist(root, how)`` damages a written root in the ways the reader must report.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
BREAKAGES = ("missing_file", "wrong_magic", "count_mismatch", "header_claims_more", "corrupt_gzip", "bad_label")


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """The IDX encoding of a uint8 ``array``."""
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def digit_arrays(count: int, learnable: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)): balanced classes, class patterns under noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 10).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.normal(20, 10, (count, 28, 28))
    if learnable:
        for index, label in enumerate(labels):
            row = 3 + 2 * (int(label) % 5) * 2
            images[index, row:row + 3, 4:24] = 230
            if label >= 5:
                images[index, 4:24, 12:15] = 230
    else:
        images = rng.integers(0, 256, (count, 28, 28))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def write_mnist(root: str | Path, n_train: int = 100, n_test: int = 50, learnable: bool = True,
                gz: bool = True, seed: int = 0) -> Path:
    """Write a tiny MNIST under ``root/MNIST/raw`` (``.gz`` files when ``gz``); returns ``root``."""
    root = Path(root)
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for split, count, offset in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = digit_arrays(count, learnable, seed + offset)
        for name, content in zip(FILES[split], (idx_bytes(images, 0x803), idx_bytes(labels, 0x801))):
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as handle:
                    handle.write(content)
            else:
                (folder / name).write_bytes(content)
    return root


def _file(folder: Path, name: str) -> Path:
    return folder / f"{name}.gz" if (folder / f"{name}.gz").exists() else folder / name


def _rewrite(path: Path, content: bytes) -> None:
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(content)
    else:
        path.write_bytes(content)


def _read(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def break_mnist(root: str | Path, how: str) -> str:
    """Damage the test split of a written root; returns a word the error message must contain."""
    folder = Path(root) / "MNIST" / "raw"
    images, labels = _file(folder, FILES["test"][0]), _file(folder, FILES["test"][1])
    if how == "missing_file":
        labels.unlink()
        return "missing"
    if how == "wrong_magic":
        content = _read(images)
        _rewrite(images, struct.pack(">I", 0x801) + content[4:])
        return "magic"
    if how == "count_mismatch":
        content = _read(labels)
        count = struct.unpack(">I", content[4:8])[0]
        _rewrite(labels, struct.pack(">II", 0x801, count - 1) + content[8:-1])
        return "labels"
    if how == "header_claims_more":
        content = _read(images)
        _rewrite(images, content[:-28 * 28 - 5])
        return "truncated"
    if how == "corrupt_gzip":
        path = images if images.suffix == ".gz" else None
        if path is None:
            raise ValueError("corrupt_gzip needs a .gz root")
        path.write_bytes(path.read_bytes()[:40])
        return "truncated"
    if how == "bad_label":
        content = bytearray(_read(labels))
        content[8] = 12
        _rewrite(labels, bytes(content))
        return "labels span"
    raise ValueError(f"unknown breakage {how!r}")
