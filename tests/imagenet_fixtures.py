"""Tiny JPEG trees in the official Tiny-ImageNet and ImageNet layouts, for tests (METHODS.md §18.1, §19.1).

``write_tiny_imagenet(root)`` writes ``tiny-imagenet-200/`` as the official zip unpacks: ``wnids.txt``
(deliberately not in sorted order), ``train/<wnid>/images/<wnid>_<i>.JPEG`` with the unused
``<wnid>_boxes.txt``, ``val/images/val_<j>.JPEG`` with ``val/val_annotations.txt`` and an unlabelled
``test/`` split. Each class is a colour under noise, so a small network separates the classes. One
val image is greyscale (mode L), as a few official images are. ``write_imagefolder(root)`` writes
``imagenet/val/<wnid>/*.JPEG`` with images larger, smaller, wider and taller than 256 px, one PNG
with an alpha channel, and a file that is not an image.

``break_tiny`` / ``break_imagefolder`` damage a written tree in the ways the readers must report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: wnids.txt order of the fixture; the class index is the position in the sorted list (§18.1).
TINY_WNIDS = ("n03", "n01", "n02")
IMAGENET_WNIDS = ("n02", "n01", "n03")
#: (width, height) of the ImageFolder fixture's images, cycled over each class.
IMAGENET_SIZES = ((300, 260), (260, 300), (120, 90), (256, 256))
CLASS_COLOURS = ((200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40))
TINY_BREAKAGES = ("missing_folder", "missing_wnids", "missing_annotations", "corrupt_jpeg", "class_is_a_file",
                  "unknown_val_wnid", "unknown_train_folder", "empty_class", "missing_class_folder",
                  "unlabelled_val_image", "wrong_size", "wnid_count")
IMAGENET_BREAKAGES = ("missing_folder", "corrupt_jpeg", "class_is_a_file", "empty_class", "class_count",
                      "truncated_jpeg")


def picture(label: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3): the class colour under noise, a little structure so resizing matters."""
    base = np.array(CLASS_COLOURS[label % len(CLASS_COLOURS)], dtype=np.float64)
    pixels = base + rng.normal(0, 25, (height, width, 3))
    pixels[::7] *= 0.6   # stripes every 7 rows
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _save_jpeg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=90)


def write_tiny_imagenet(root: str | Path, n_train: int = 4, n_val: int = 6, seed: int = 0,
                        wnids: tuple[str, ...] = TINY_WNIDS, size: int = 64) -> Path:
    """Write ``root/tiny-imagenet-200`` with ``n_train`` images per class and ``n_val`` val images; returns ``root``."""
    root = Path(root)
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = sorted(wnids)
    (folder / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in wnids))
    for wnid in wnids:
        label = order.index(wnid)
        for index in range(n_train):
            _save_jpeg(folder / "train" / wnid / "images" / f"{wnid}_{index}.JPEG", picture(label, size, size, rng))
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(
            "".join(f"{wnid}_{index}.JPEG\t0\t0\t{size - 1}\t{size - 1}\n" for index in range(n_train)))
    lines = []
    for index in range(n_val):
        wnid = wnids[(index * 2 + 1) % len(wnids)]
        array = picture(order.index(wnid), size, size, rng)
        path = folder / "val" / "images" / f"val_{index}.JPEG"
        if index == 1:   # a greyscale JPEG: read as RGB
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array[..., 0]).save(path, format="JPEG", quality=90)
        else:
            _save_jpeg(path, array)
        lines.append(f"val_{index}.JPEG\t{wnid}\t1\t2\t{size - 2}\t{size - 3}\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(reversed(lines)))   # not in file order
    _save_jpeg(folder / "test" / "images" / "test_0.JPEG", picture(0, size, size, rng))
    return root


def tiny_val_labels(root: str | Path) -> dict[str, int]:
    """val file name -> label, from the fixture's annotations and the sorted wnids."""
    folder = Path(root) / "tiny-imagenet-200"
    order = sorted((folder / "wnids.txt").read_text().split())
    pairs = (line.split("\t")[:2] for line in (folder / "val" / "val_annotations.txt").read_text().splitlines())
    return {name: order.index(wnid) for name, wnid in pairs}


def write_imagefolder(root: str | Path, per_class: int = 2, seed: int = 0,
                      wnids: tuple[str, ...] = IMAGENET_WNIDS) -> Path:
    """Write ``root/imagenet/val/<wnid>/`` with ``per_class`` images each; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    position = 0
    for wnid in wnids:
        label = sorted(wnids).index(wnid)
        folder = root / "imagenet" / "val" / wnid
        for index in range(per_class):
            width, height = IMAGENET_SIZES[position % len(IMAGENET_SIZES)]
            position += 1
            _save_jpeg(folder / f"ILSVRC2012_val_{wnid}_{index}.JPEG", picture(label, width, height, rng))
        (folder / "notes.txt").write_text("not an image")
    rgba = np.concatenate([picture(0, 280, 280, rng), np.full((280, 280, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(root / "imagenet" / "val" / sorted(wnids)[0] / "extra.png")
    return root


def break_tiny(root: str | Path, how: str) -> tuple[str, str]:
    """Damage a written Tiny-ImageNet tree; returns (the split that fails, a phrase its message holds)."""
    folder = Path(root) / "tiny-imagenet-200"
    if how == "missing_folder":
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        folder.rmdir()
        return "test", "does not exist"
    if how == "missing_wnids":
        (folder / "wnids.txt").unlink()
        return "test", "wnids.txt is missing"
    if how == "missing_annotations":
        (folder / "val" / "val_annotations.txt").unlink()
        return "test", "val_annotations.txt is missing"
    if how == "corrupt_jpeg":
        path = folder / "val" / "images" / "val_3.JPEG"
        path.write_bytes(path.read_bytes()[:300])
        return "test", f"image {path} cannot be decoded"
    if how == "class_is_a_file":
        (folder / "train" / "n01x").write_text("not a folder")
        return "train", "train/n01x is a file, not a class folder"
    if how == "unknown_val_wnid":
        path = folder / "val" / "val_annotations.txt"
        path.write_text(path.read_text().replace("\tn02\t", "\tn09\t", 1))
        return "test", "names wnid n09, which wnids.txt does not list"
    if how == "unknown_train_folder":
        (folder / "train" / "n00" / "images").mkdir(parents=True)
        return "train", "class folder train/n00/ is not listed in wnids.txt"
    if how == "empty_class":
        for path in (folder / "train" / "n02" / "images").iterdir():
            path.unlink()
        return "train", "class folder train/n02/images/ holds no image"
    if how == "missing_class_folder":
        for path in sorted((folder / "train" / "n03").rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (folder / "train" / "n03").rmdir()
        return "train", "wnids.txt lists n03 but train/n03/ is missing"
    if how == "unlabelled_val_image":
        _save_jpeg(folder / "val" / "images" / "val_99.JPEG", np.zeros((64, 64, 3), np.uint8))
        return "test", "image val/images/val_99.JPEG has no line in"
    if how == "wrong_size":
        _save_jpeg(folder / "val" / "images" / "val_0.JPEG", np.zeros((60, 64, 3), np.uint8))
        return "test", "is 64×60 px, expected 64×64"
    if how == "wnid_count":
        (folder / "wnids.txt").write_text("n01\nn02\nn03\nn04\n")
        return "test", "lists 4 wnids, expected 3"
    raise ValueError(f"unknown breakage {how!r}")


def break_imagefolder(root: str | Path, how: str) -> str:
    """Damage a written ImageFolder tree; returns a phrase the error message holds."""
    val = Path(root) / "imagenet" / "val"
    if how == "missing_folder":
        for path in sorted(val.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        val.rmdir()
        return "does not exist"
    if how == "corrupt_jpeg":
        path = next(iter(sorted((val / "n03").glob("*.JPEG"))))
        path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        return f"image {path} cannot be decoded"
    if how == "truncated_jpeg":
        path = next(iter(sorted((val / "n01").glob("*.JPEG"))))
        path.write_bytes(path.read_bytes()[:400])
        return f"image {path} cannot be decoded"
    if how == "class_is_a_file":
        (val / "n04.JPEG").write_bytes(b"")
        return "val/n04.JPEG is a file, not a class folder"
    if how == "empty_class":
        for path in (val / "n02").iterdir():
            path.unlink()
        return "class folder val/n02/ holds no image"
    if how == "class_count":
        (val / "n04").mkdir()
        return "holds 4 class folders, expected 3"
    raise ValueError(f"unknown breakage {how!r}")
