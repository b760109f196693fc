"""JPEG folder datasets on disk (METHODS.md §18.1, §19.1): listing, decoding and a uint8 cache.

Two official layouts are read, each into ``(relative paths, labels)`` first (:class:`Listing`):

* ``tiny_folder`` — Tiny-ImageNet's zip as it unpacks, ``tiny-imagenet-200/``: ``wnids.txt`` (one
  wnid a line), ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG`` labelled by
  ``val/val_annotations.txt`` (tab-separated: file name, wnid, box). The class index is the
  position of the wnid in the **sorted** list of ``wnids.txt``: the order of the reference loaders
  and of an ImageFolder over ``train/``, which the released teachers were trained with (§18.1).
* ``imagefolder`` — one folder per class, ``<split>/<wnid>/**/*.JPEG`` (ImageNet's ``val/`` sorted
  into class folders, §19.1); classes are the sorted folder names, as torchvision's ImageFolder.

Files are taken in sorted order (class, then name; Tiny-ImageNet's val by file name). Anything
that does not fit the layout raises :class:`FolderError` with one line naming the file or folder;
:mod:`datafree.data` adds the expected layout and the fix.

Decoding uses Pillow (``convert("RGB")``), several threads (Pillow releases the GIL while it
decodes and resizes) and a tqdm bar. With ``resize`` the shorter side is first resized to
``resize`` pixels (bilinear) and the centre ``size``×``size`` square is cut, exactly as
torchvision's ``Resize(resize)`` + ``CenterCrop(size)`` compute their sizes and offsets; without
it every image must already be ``size``×``size`` (Tiny-ImageNet).

The decoded split is cached as one file written by ``torch.save`` (a temporary file renamed into
place, so a crash never leaves half a cache; a temporary file that a killed run left behind is
deleted by the next write) holding the uint8 images, the labels and a digest of
the sources: every image's relative path, label, size and modification time, and the decoding
parameters. A later run recomputes the digest from the listing (one ``stat`` per file, no
decoding) and reads the cache memory-mapped when it matches; otherwise it decodes again.
"""
from __future__ import annotations

import glob
import hashlib
import os
import struct
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

__all__ = ["CACHE_FORMAT", "FolderError", "IMAGE_EXTENSIONS", "Listing", "decode", "decode_all", "list_imagefolder",
           "list_tiny", "load_cache", "save_cache"]

#: The extensions an image file may have (case-insensitive), as torchvision's ImageFolder accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: Bumped whenever the cache's content or decoding changes; part of every digest.
CACHE_FORMAT = 1
#: Images per decoding task (one task writes its slice of the output array).
CHUNK = 256
#: A temporary cache file untouched this long was left by a killed run and is deleted.
ABANDONED_SECONDS = 3600


class FolderError(ValueError):
    """A folder dataset does not match its layout; the message is one line naming the file or folder."""


@dataclass(frozen=True)
class Listing:
    """One split of a folder dataset: image paths (relative to ``folder``), labels, and each file's
    size and modification time (ns), in reading order."""

    folder: Path
    files: tuple[str, ...]
    labels: np.ndarray
    sizes: tuple[int, ...]
    mtimes: tuple[int, ...]

    def digest(self, parameters: str) -> str:
        """SHA-256 over the decoding ``parameters`` and every file's path, label, size and mtime."""
        digest = hashlib.sha256(f"format {CACHE_FORMAT}; {parameters}\n".encode())
        for name, label, size, mtime in zip(self.files, self.labels.tolist(), self.sizes, self.mtimes):
            digest.update(f"{name}\t{label}\t{size}\t{mtime}\n".encode())
        return digest.hexdigest()


def _visible(entries: list[os.DirEntry]) -> list[os.DirEntry]:
    """Directory entries without hidden ones (``.DS_Store``, ``._*``), sorted by name."""
    return sorted((entry for entry in entries if not entry.name.startswith(".")), key=lambda entry: entry.name)


def _scan(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as iterator:
            return _visible(list(iterator))
    except NotADirectoryError:
        raise FolderError(f"{path} is a file, not a folder") from None
    except FileNotFoundError:
        raise FolderError(f"folder {path} does not exist") from None
    except OSError as error:
        raise FolderError(f"folder {path} cannot be read ({error.strerror or type(error).__name__})") from None


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _image_files(path: Path, recursive: bool) -> list[tuple[Path, os.stat_result]]:
    """The image files under ``path`` (sorted; sub-folders too when ``recursive``) with their stat."""
    found = []
    for entry in _scan(path):
        if entry.is_dir():
            if recursive:
                found.extend(_image_files(Path(entry.path), recursive))
        elif _is_image(entry.name):
            found.append((Path(entry.path), entry.stat()))
    return found


def _listing(folder: Path, items: list[tuple[Path, os.stat_result, int]]) -> Listing:
    return Listing(folder=folder, files=tuple(path.relative_to(folder).as_posix() for path, _, _ in items),
                   labels=np.asarray([label for _, _, label in items], dtype=np.int64),
                   sizes=tuple(stat.st_size for _, stat, _ in items),
                   mtimes=tuple(stat.st_mtime_ns for _, stat, _ in items))


# ----------------------------------------------------------------------------- Tiny-ImageNet
def read_wnids(folder: Path, num_classes: int) -> list[str]:
    """The sorted wnids of ``folder/wnids.txt``: ``num_classes`` distinct non-empty lines."""
    path = folder / "wnids.txt"
    if not path.is_file():
        raise FolderError(f"file {path} is missing")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise FolderError(f"file {path} cannot be read ({type(error).__name__}: {error})") from None
    wnids = [line.strip() for line in lines if line.strip()]
    if any(len(wnid.split()) != 1 for wnid in wnids):
        raise FolderError(f"file {path} must hold one wnid a line")
    if len(set(wnids)) != len(wnids):
        duplicate = next(wnid for wnid in wnids if wnids.count(wnid) > 1)
        raise FolderError(f"file {path} lists {duplicate} twice")
    if len(wnids) != num_classes:
        raise FolderError(f"file {path} lists {len(wnids)} wnids, expected {num_classes}")
    return sorted(wnids)


def list_tiny(folder: Path, split_folder: str, num_classes: int) -> Listing:
    """One split of ``tiny-imagenet-200/``: ``train`` (class folders) or ``val`` (annotation file)."""
    index = {wnid: position for position, wnid in enumerate(read_wnids(folder, num_classes))}
    if split_folder == "val":
        return _list_tiny_val(folder, index)
    items: list[tuple[Path, os.stat_result, int]] = []
    seen = set()
    for entry in _scan(folder / split_folder):
        relative = f"{split_folder}/{entry.name}"
        if not entry.is_dir():
            raise FolderError(f"{relative} is a file, not a class folder")
        if entry.name not in index:
            raise FolderError(f"class folder {relative}/ is not listed in wnids.txt")
        images = Path(entry.path) / "images"
        if not images.is_dir():
            raise FolderError(f"class folder {relative}/ has no images/ folder")
        files = _image_files(images, recursive=False)
        if not files:
            raise FolderError(f"class folder {relative}/images/ holds no image")
        items.extend((path, stat, index[entry.name]) for path, stat in files)
        seen.add(entry.name)
    missing = sorted(set(index) - seen)
    if missing:
        raise FolderError(f"wnids.txt lists {missing[0]} but {split_folder}/{missing[0]}/ is missing "
                          f"({len(missing)} class folder(s) missing)")
    return _listing(folder, items)


def _list_tiny_val(folder: Path, index: dict[str, int]) -> Listing:
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise FolderError(f"file {annotations} is missing")
    try:
        lines = annotations.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise FolderError(f"file {annotations} cannot be read ({type(error).__name__}: {error})") from None
    labels: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        columns = line.rstrip("\r").split("\t")
        if len(columns) < 2 or not columns[0] or not columns[1]:
            raise FolderError(f"line {number} of {annotations} is not 'file<TAB>wnid<TAB>box'")
        name, wnid = columns[0].strip(), columns[1].strip()
        if wnid not in index:
            raise FolderError(f"line {number} of {annotations} names wnid {wnid}, which wnids.txt does not list")
        if name in labels:
            raise FolderError(f"line {number} of {annotations} labels {name} a second time")
        labels[name] = index[wnid]
    files = {path.name: (path, stat) for path, stat in _image_files(folder / "val" / "images", recursive=False)}
    unlabelled = sorted(set(files) - set(labels))
    if unlabelled:
        raise FolderError(f"image val/images/{unlabelled[0]} has no line in {annotations}")
    absent = sorted(set(labels) - set(files))
    if absent:
        raise FolderError(f"{annotations} labels val/images/{absent[0]}, which is missing "
                          f"({len(absent)} image(s) missing)")
    return _listing(folder, [(*files[name], labels[name]) for name in sorted(files)])


# ----------------------------------------------------------------------------- ImageFolder
def list_imagefolder(folder: Path, split_folder: str, num_classes: int) -> Listing:
    """``folder/split_folder/<class>/**/<image>``: classes are the sorted folder names (ImageFolder)."""
    root = folder / split_folder
    classes = _scan(root)
    for entry in classes:
        if not entry.is_dir():
            raise FolderError(f"{split_folder}/{entry.name} is a file, not a class folder")
    if len(classes) != num_classes:
        raise FolderError(f"{root} holds {len(classes)} class folders, expected {num_classes}")
    items: list[tuple[Path, os.stat_result, int]] = []
    for label, entry in enumerate(classes):
        files = _image_files(Path(entry.path), recursive=True)
        if not files:
            raise FolderError(f"class folder {split_folder}/{entry.name}/ holds no image")
        items.extend((path, stat, label) for path, stat in files)
    return _listing(folder, items)


# ----------------------------------------------------------------------------- decoding
def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``shorter``, the longer one truncated
    (torchvision's ``Resize(int)``)."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def centre_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of the centre ``size`` square (torchvision's ``CenterCrop``)."""
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def decode(path: Path, size: int, resize: int = 0, channels: int = 3) -> np.ndarray:
    """One image file -> uint8 ``(channels, size, size)``; FolderError naming the file otherwise."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if channels == 3 else "L")
        if resize:
            width, height = resized_size(*image.size, resize)
            if (width, height) != image.size:
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            image = image.crop(centre_box(width, height, size))
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError) as error:
        raise FolderError(f"image {path} cannot be decoded ({type(error).__name__}: {error}); replace it or "
                          "extract the archive again") from None
    if image.size != (size, size):
        raise FolderError(f"image {path} is {image.size[0]}×{image.size[1]} px, expected {size}×{size}")
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def decode_all(listing: Listing, size: int, resize: int, channels: int, progress: bool = True,
               description: str = "decoding", workers: int | None = None) -> torch.Tensor:
    """Every image of ``listing`` -> uint8 ``(N, channels, size, size)`` in listing order (threads)."""
    count = len(listing.files)
    output = torch.empty((count, channels, size, size), dtype=torch.uint8)
    array = output.numpy()
    workers = workers or min(16, os.cpu_count() or 1)
    lock = threading.Lock()

    with tqdm(total=count, unit="img", desc=description, disable=not progress) as bar:
        def work(start: int) -> None:
            stop = min(start + CHUNK, count)
            for position in range(start, stop):
                array[position] = decode(listing.folder / listing.files[position], size, resize, channels)
            with lock:
                bar.update(stop - start)

        with ThreadPoolExecutor(max_workers=workers) as executor:
            futures = [executor.submit(work, start) for start in range(0, count, CHUNK)]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [future for future in futures if future.done() and future.exception() is not None]
            if failed:
                for future in futures:
                    future.cancel()
                raise failed[0].exception()  # type: ignore[misc]
    return output


# ----------------------------------------------------------------------------- cache
def load_cache(path: Path, digest: str, image_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached (images, labels) when ``path`` holds a cache of ``digest``; None (with a note on
    stderr when a cache exists but is stale or unreadable) otherwise. Memory-mapped, read-only use."""
    if not path.is_file():
        return None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a damaged file raises many kinds of errors; it is rebuilt
        print(f"note: cache {path} is unreadable ({type(error).__name__}); decoding again", file=sys.stderr)
        return None
    images = content.get("images") if isinstance(content, dict) else None
    labels = content.get("labels") if isinstance(content, dict) else None
    valid = (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor) and images.dtype == torch.uint8
             and images.dim() == 4 and tuple(images.shape[1:]) == tuple(image_shape) and labels.dtype == torch.int64
             and labels.shape == images.shape[:1] and content.get("format") == CACHE_FORMAT)
    if not valid:
        print(f"note: cache {path} is not a cache of this version; decoding again", file=sys.stderr)
        return None
    if content.get("digest") != digest:
        print(f"note: cache {path} is stale (the source files changed); decoding again", file=sys.stderr)
        return None
    return images, labels


def _remove_abandoned(path: Path) -> None:
    """Delete temporary files of ``path`` that a killed run left behind (untouched for
    :data:`ABANDONED_SECONDS`; a write in progress elsewhere keeps touching its file)."""
    now = time.time()
    for candidate in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        try:
            if now - candidate.stat().st_mtime > ABANDONED_SECONDS:
                candidate.unlink()
        except OSError:
            continue


def save_cache(path: Path, digest: str, images: torch.Tensor, labels: torch.Tensor) -> bool:
    """Write the cache atomically (temporary file + rename); a failure is a note, not an error."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(path)
        handle, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        temporary = Path(name)
        with os.fdopen(handle, "wb") as output:
            torch.save({"format": CACHE_FORMAT, "digest": digest, "images": images, "labels": labels}, output)
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, path)
        return True
    except OSError as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        print(f"note: cannot write the cache {path} ({error.strerror or type(error).__name__}); the images are "
              "decoded again next time (pass --cache_dir to a writable folder)", file=sys.stderr)
        return False
