"""The datasets on disk and in memory: CIFAR-10 / CIFAR-100 (METHODS.md §2.1), Tiny-ImageNet (§18.1),
ImageNet (§19.1) and MNIST (§20).

* :data:`DATASETS` holds one :class:`DatasetInfo` per dataset: everything a method or an entry
  point reads about it (classes, channels, image size, the exact mean/std the teachers were
  trained with, the reader of its official layout, the training and pool augmentation, where the
  test split lives, the ``train_scratch.py`` recipe). No code branches on a dataset's name; it
  reads these fields.
* :func:`load_split` reads one split into a uint8 tensor ``(N, C, S, S)`` once; anything wrong on
  disk raises :class:`DatasetError`, whose one-line message shows the expected layout and the
  fix. CIFAR pickles are read by :class:`CifarUnpickler`, which admits only what the official
  archives hold (NumPy arrays and dtypes, lists, dicts, bytes, str, int): a file that asks for
  anything else (e.g. a function to call) is refused in one line without running it. MNIST's
  IDX files are parsed by :mod:`datafree.idx` (no pickle involved); the JPEG folders of
  Tiny-ImageNet and ImageNet by :mod:`datafree.folders`, which caches the decoded uint8 split.
* :func:`download` fetches and verifies the official files, only when ``--download`` asks for
  it (§2.1 [CLEAN]: never download at run time unless a flag asks for it); ImageNet is never
  downloaded (§19.1).
* :class:`TensorLoader` replaces a DataLoader with workers: the whole split lives on the
  training device and batches are sliced, augmented (:mod:`datafree.augment`) and normalised
  there; :func:`evaluation_loader` keeps a test split too large for the device (ImageNet)
  in host memory and copies one batch at a time (§19.1).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from datafree import folders, idx
from datafree.augment import random_crop_flip, random_permutation, to_unit_float
from datafree.errors import UsageError

__all__ = ["DATASETS", "DatasetError", "DatasetInfo", "TensorLoader", "download", "evaluation_loader", "load_split"]

DOWNLOAD_CHUNK_BYTES = 1 << 20
#: Readers of official layouts: the python pickles of CIFAR (§2.1), MNIST's IDX files (§20),
#: Tiny-ImageNet's zip layout (§18.1) and class folders of JPEGs, ImageNet's (§19.1).
READERS = ("cifar_pickle", "idx", "tiny_folder", "imagefolder")
#: Where decoded folder datasets are cached when ``--cache_dir`` is not given: under the data root.
DEFAULT_CACHE_FOLDER = "datafree_cache"


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: its constants (§2.1, §20), official on-disk layout, augmentation and recipe.

    ``train_padding`` / ``train_flip`` are the training augmentation of ``train_scratch.py``
    (random crop with that zero padding, horizontal flip; 0 / False: none, as for digits), and
    ``pool_padding`` / ``pool_flip`` the augmentation synthetic pools and banks apply to a batch
    (§3.5). ``scratch_defaults`` overrides ``train_scratch.py``'s reference recipe (§2.2) where
    the dataset's references train differently (MNIST: Adam, 9 epochs, §20.1). ``file_md5`` holds
    the MD5 of each file fetched one by one (MNIST); archive datasets use ``archive_md5`` (a
    ``.zip`` or ``.tar.gz`` archive, told apart by ``archive_filename``).

    Folder datasets (§18.1, §19.1): ``train_files`` / ``test_files`` name the split's folder inside
    :attr:`folder` (empty: the split is never read); ``eval_resize`` > 0 resizes the shorter side
    to that many pixels before the centre ``image_size`` crop (ImageNet: 256 → 224), 0 requires
    images of exactly ``image_size``. ``test_on_device`` says whether the test split is copied to
    the training device whole (False: it stays in host memory, pinned for CUDA, and is copied one
    batch at a time, §19.1; ``--test_on_device`` overrides). A dataset that cannot be downloaded
    has no ``url`` and says in ``manual_download`` how to get the files; ``scratch_refusal`` is why
    ``train_scratch.py`` does not train on it (empty: it does).
    """

    name: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    url: str
    archive_filename: str
    archive_md5: str
    files_pattern: str  # the file list in brace notation, for error messages
    channels: int = 3
    image_size: int = 32
    reader: str = "cifar_pickle"
    train_padding: int = 4
    train_flip: bool = True
    pool_padding: int = 4
    pool_flip: bool = True
    scratch_defaults: Mapping[str, Any] = field(default_factory=dict)
    file_md5: Mapping[str, str] = field(default_factory=dict)
    test_on_device: bool = True
    eval_resize: int = 0
    manual_download: str = ""
    scratch_refusal: str = ""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, S, S)`` of one image as the classifiers see it."""
        return (self.channels, self.image_size, self.image_size)

    @property
    def train_augmentation(self) -> bool:
        """Whether ``train_scratch.py`` augments the training batches at all."""
        return self.train_padding > 0 or self.train_flip

    def split_files(self, split: str) -> tuple[str, ...]:
        """File names of ``split`` ('train' or 'test') inside :attr:`folder`."""
        if split == "train":
            return self.train_files
        if split == "test":
            return self.test_files
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    def expected_layout(self, root: str | os.PathLike[str]) -> str:
        """E.g. ``data/cifar-10-batches-py/{data_batch_1..5,test_batch}``."""
        return f"{Path(root) / self.folder}/{self.files_pattern}"


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        name="cifar10", num_classes=10,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),  # §2.1: keep these exact values
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{index}" for index in range(1, 6)), test_files=("test_batch",),
        label_key="labels",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive_filename="cifar-10-python.tar.gz", archive_md5="c58f30108f718f92721af3b95e74349a",
        files_pattern="{data_batch_1..5,test_batch}"),
    "cifar100": DatasetInfo(
        name="cifar100", num_classes=100,
        mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761),
        folder="cifar-100-python",
        train_files=("train",), test_files=("test",),
        label_key="fine_labels",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive_filename="cifar-100-python.tar.gz", archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        files_pattern="{train,test}"),
    # §20.1: 1 channel resized from 28 to 32 px once, the DAFL statistics, no augmentation
    # (digits are not flipped), the DAFL teacher recipe for train_scratch.py.
    "mnist": DatasetInfo(
        name="mnist", num_classes=10, mean=(0.1307,), std=(0.3081,),
        folder="MNIST/raw",
        train_files=("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        test_files=("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        label_key="", url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        archive_filename="", archive_md5="",
        files_pattern="{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
        channels=1, image_size=32, reader="idx",
        train_padding=0, train_flip=False, pool_padding=0, pool_flip=False,
        scratch_defaults={"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "epochs": 9, "milestones": "",
                          "batch_size": 256},
        file_md5={"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                  "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                  "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                  "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    # §18.1: the official zip as it unpacks; its val/ is the benchmark's test split (test/ has no
    # labels). mean = std = 0.5 as every reference and the released teachers (§18.1);
    # crop padding 4 (not scaled with the size) + flip for training and pools; the test split
    # (10,000 × 12,288 B = 123 MB) lives on the device.
    "tiny_imagenet": DatasetInfo(
        name="tiny_imagenet", num_classes=200, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        folder="tiny-imagenet-200", train_files=("train",), test_files=("val",), label_key="",
        url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        archive_filename="tiny-imagenet-200.zip", archive_md5="90528d7ca1a48142e341f4ef8d21d0de",
        files_pattern="{wnids.txt,train/<wnid>/images/*.JPEG,val/images/*.JPEG,val/val_annotations.txt}",
        channels=3, image_size=64, reader="tiny_folder",
        # §18.3, ljrprocc/DFKD scripts/run_scratch_tiny_imagenet.sh (the released 67.18 % ResNet-50):
        # SGD momentum 0.9, lr 0.2, total batch 128, wd 1e-4, 200 epochs, x0.1 at 120/150/180.
        scratch_defaults={"optimizer": "sgd", "epochs": 200, "batch_size": 128, "lr": 0.2, "momentum": 0.9,
                          "weight_decay": 1e-4, "milestones": "120,150,180", "gamma": 0.1}),
    # §19.1: ILSVRC-2012 val sorted into class folders, resized (shorter side 256) and centre-cropped
    # to 224 once, then cached; 50,000 × 150,528 B = 7.5 GB, so the test split stays in host memory
    # (§19.1). The train split is never read: the teachers are torchvision's pretrained weights.
    # Pool augmentation: the crop-4 + flip stand-in until the pools gain Fast's RandomResizedCrop
    # (§19.1).
    "imagenet": DatasetInfo(
        name="imagenet", num_classes=1000, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        folder="imagenet", train_files=(), test_files=("val",), label_key="", url="",
        archive_filename="", archive_md5="", files_pattern="val/<wnid>/*.JPEG",
        channels=3, image_size=224, reader="imagefolder", train_padding=0, train_flip=False,
        test_on_device=False, eval_resize=256,
        manual_download="ImageNet cannot be downloaded here (image-net.org needs an account): put the ILSVRC-2012 "
                        "val images there, sorted into one folder per wnid",
        scratch_refusal="ImageNet teachers are torchvision's pretrained weights (§19.1), so train_scratch.py "
                        "does not train on ImageNet"),
}


class DatasetError(UsageError):
    """The dataset is missing or broken on disk; the message is one line and says how to fix it.

    A :class:`~datafree.errors.UsageError`, so command-line entry points print it without a
    traceback.
    """


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _dataset_error(info: DatasetInfo, root: str | os.PathLike[str], problem: str) -> DatasetError:
    """A DatasetError naming the dataset, the problem, the expected layout and the fix."""
    fix = "pass --download to fetch it" if info.url else info.manual_download
    return DatasetError(_one_line(
        f"{info.name}: {problem}; expected layout {info.expected_layout(root)}; {fix}, "
        f"or point --data_root at a torchvision-style root that holds {info.folder}/"))


def dataset_info(dataset: str) -> DatasetInfo:
    """The :class:`DatasetInfo` called ``dataset``; DatasetError listing the valid names otherwise."""
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[dataset]


# ----------------------------------------------------------------------------- reading
class CifarUnpickler(pickle.Unpickler):
    """A pickle reader that can only rebuild the contents of the official CIFAR files.

    Plain containers and numbers need no global; the only globals admitted are those that
    rebuild NumPy arrays, dtypes and scalars, and ``_codecs.encode`` / ``bytes`` (how Python 3
    pickles ``bytes`` at protocol 2). Anything else (``os.system``, ``builtins.eval``, ...) raises
    :class:`pickle.UnpicklingError` before it is looked up, so nothing in the file runs.
    """

    ALLOWED = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"), ("builtins", "bytes"), ("__builtin__", "bytes"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR file never holds")
        return super().find_class(module, name)


def _normalise_keys(content: Mapping[Any, Any]) -> dict[str, Any]:
    """Pickle dict with ``str`` or ``bytes`` keys -> dict with ``str`` keys."""
    return {(key.decode("latin1") if isinstance(key, bytes) else str(key)): value for key, value in content.items()}


def _read_batch_file(info: DatasetInfo, root: Path, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One official pickle file -> (data uint8 (N, 3072), labels int64 (N,)), validated."""
    if not path.is_file():
        raise _dataset_error(info, root, f"file {path} is missing")
    try:
        with open(path, "rb") as handle:
            # latin1 decodes Python-2 strings of the official files; numpy arrays survive it.
            content = CifarUnpickler(handle, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        if "CIFAR file never holds" in str(error):
            raise _dataset_error(info, root, f"file {path} is refused without being run: {error} (a tampered or "
                                             "foreign file); delete it and download the dataset again") from None
        raise _dataset_error(info, root, f"file {path} is truncated or not a CIFAR pickle ({error})") from None
    except Exception as error:  # truncated or foreign files raise many different exceptions
        raise _dataset_error(info, root, f"file {path} is truncated or not a CIFAR pickle "
                                         f"({type(error).__name__}: {error})") from error
    if not isinstance(content, Mapping):
        raise _dataset_error(info, root, f"file {path} holds a {type(content).__name__}, not a dict")
    content = _normalise_keys(content)
    missing = [key for key in ("data", info.label_key) if key not in content]
    if missing:
        raise _dataset_error(info, root, f"file {path} lacks the key(s) {', '.join(missing)} "
                                         f"(has {', '.join(sorted(content)) or 'none'})")
    try:
        data = np.asarray(content["data"])
        labels = np.asarray(content[info.label_key])
    except Exception as error:
        raise _dataset_error(info, root, f"file {path} holds unreadable data or labels ({error})") from error
    values = info.channels * info.image_size * info.image_size
    if data.ndim != 2 or data.shape[1] != values:
        raise _dataset_error(info, root, f"file {path}: data has shape {data.shape}, expected (N, {values})")
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer) or (data.size and (data.min() < 0 or data.max() > 255)):
            raise _dataset_error(info, root, f"file {path}: data has dtype {data.dtype}, expected uint8")
        data = data.astype(np.uint8)
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise _dataset_error(info, root, f"file {path}: {labels.shape} labels of type {labels.dtype} "
                                         f"for {data.shape[0]} images, expected one integer label per image")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise _dataset_error(info, root, f"file {path}: labels span [{labels.min()}, {labels.max()}], "
                                         f"outside [0, {info.num_classes})")
    return data, labels


#: Files a folder reader needs beside the split folders (what a complete download holds).
FOLDER_READER_FILES = {"tiny_folder": {"train": ("wnids.txt",), "test": ("wnids.txt", "val/val_annotations.txt")},
                       "imagefolder": {"train": (), "test": ()}}


def _split_present(info: DatasetInfo, folder: Path, split: str) -> bool:
    if info.reader == "idx":
        return all(idx.find_file(folder, name) is not None for name in info.split_files(split))
    if info.reader in FOLDER_READER_FILES:
        return (all((folder / name).is_dir() for name in info.split_files(split))
                and all((folder / name).is_file() for name in FOLDER_READER_FILES[info.reader][split]))
    return all((folder / name).is_file() for name in info.split_files(split))


def _read_cifar_split(info: DatasetInfo, root: Path, folder: Path, split: str,
                      **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The pickles of one CIFAR split -> (uint8 (N, 3, 32, 32), int64 (N,)), in file order."""
    parts = [_read_batch_file(info, root, folder / name) for name in info.split_files(split)]
    data = np.concatenate([part[0] for part in parts])
    labels = np.concatenate([part[1] for part in parts])
    images = torch.from_numpy(np.ascontiguousarray(data)).view(-1, *info.image_shape)
    return images, torch.from_numpy(labels)


def _read_idx_split(info: DatasetInfo, root: Path, folder: Path, split: str,
                    **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The two IDX files of one MNIST split -> (uint8 (N, 1, S, S) resized once, int64 (N,)) (§20.1)."""
    paths = []
    for name in info.split_files(split):
        path = idx.find_file(folder, name)
        if path is None:
            raise _dataset_error(info, root, f"file {folder / name}[.gz] is missing")
        paths.append(path)
    try:
        images, labels = idx.read_digits(paths[0], paths[1], info.num_classes)
    except idx.IdxError as error:
        raise _dataset_error(info, root, str(error)) from None
    return idx.resize_uint8(images, info.image_size), torch.from_numpy(labels)


def cache_path(info: DatasetInfo, root: str | os.PathLike[str], split: str,
               cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the decoded ``split`` of a folder dataset is cached: ``<cache_dir>/<name>-<split>-<S>px.pt``,
    ``cache_dir`` defaulting to ``<root>/datafree_cache`` (§18.1, §19.1)."""
    folder = Path(cache_dir) if cache_dir is not None else Path(root) / DEFAULT_CACHE_FOLDER
    return folder / f"{info.name}-{split}-{info.image_size}px.pt"


def _read_folder_split(info: DatasetInfo, root: Path, folder: Path, split: str,
                       cache_dir: str | os.PathLike[str] | None = None,
                       progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A JPEG folder split (§18.1, §19.1) -> (uint8 (N, C, S, S), int64 (N,)), from the cache when it
    matches the source files, else decoded (and cached)."""
    names = info.split_files(split)
    if not names:
        raise DatasetError(f"{info.name}: the {split} split is never read ({info.scratch_refusal})")
    lister = folders.list_tiny if info.reader == "tiny_folder" else folders.list_imagefolder
    try:
        listing = lister(folder, names[0], info.num_classes)
    except folders.FolderError as error:
        raise _dataset_error(info, root, str(error)) from None
    if not listing.files:
        return torch.empty((0, *info.image_shape), dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    digest = listing.digest(f"reader {info.reader}; channels {info.channels}; size {info.image_size}; "
                            f"resize {info.eval_resize}")
    cache = cache_path(info, root, split, cache_dir)
    cached = folders.load_cache(cache, digest, info.image_shape)
    if cached is not None:
        return cached
    print(f"note: decoding the {len(listing.files)} images of {info.name} {split} once; cached in {cache}",
          file=sys.stderr)
    try:
        images = folders.decode_all(listing, info.image_size, info.eval_resize, info.channels, progress,
                                    description=f"{info.name} {split}")
    except folders.FolderError as error:
        raise _dataset_error(info, root, str(error)) from None
    labels = torch.from_numpy(listing.labels)
    folders.save_cache(cache, digest, images, labels)
    return images, labels


_READ_SPLIT = {"cifar_pickle": _read_cifar_split, "idx": _read_idx_split, "tiny_folder": _read_folder_split,
               "imagefolder": _read_folder_split}


def load_split(root: str | os.PathLike[str], dataset: str, split: str, cache_dir: str | os.PathLike[str] | None = None,
               progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split of a dataset's official files (§2.1, §18.1, §19.1, §20).

    Returns ``(images uint8 (N, C, S, S), labels int64 (N,))`` on the CPU. CIFAR ``data`` rows are
    the 3072 values of one image in channel planes (1024 red, 1024 green, 1024 blue, row-major);
    MNIST's 28-px digits are resized to ``image_size`` once here. JPEG folders are decoded once
    (``progress``: a tqdm bar) and cached under ``cache_dir`` (default ``<root>/datafree_cache``);
    a cached split comes back memory-mapped (copy-on-write).
    Raises :class:`DatasetError` for an unknown dataset or anything wrong on disk, and
    ``ValueError`` for a split other than 'train' / 'test'.
    """
    info = dataset_info(dataset)
    info.split_files(split)
    root_path = Path(root)
    if not root_path.is_dir():
        raise _dataset_error(info, root_path, f"data root {root_path} does not exist")
    folder = root_path / info.folder
    if not folder.is_dir():
        raise _dataset_error(info, root_path, f"folder {folder} does not exist")
    return _READ_SPLIT[info.reader](info, root_path, folder, split, cache_dir=cache_dir, progress=progress)


# ----------------------------------------------------------------------------- downloading
def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(DOWNLOAD_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(info: DatasetInfo, root: Path, url: str, progress: bool, target: Path | None = None,
           expected_md5: str | None = None) -> str:
    """Stream ``url`` into ``target`` (default ``root/<archive>``) through a temporary file that is
    renamed only once its MD5 matches ``expected_md5`` (default the archive's); returns the MD5."""
    archive = target or root / info.archive_filename
    expected_md5 = expected_md5 or info.archive_md5
    handle, temporary_name = tempfile.mkstemp(prefix=archive.name + ".", suffix=".part", dir=archive.parent)
    temporary = Path(temporary_name)
    digest = hashlib.md5()
    try:
        with os.fdopen(handle, "wb") as output, urllib.request.urlopen(url) as response:
            length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            with tqdm(total=int(length) if length else None, unit="B", unit_scale=True,
                      desc=archive.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(DOWNLOAD_CHUNK_BYTES), b""):
                    output.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        md5 = digest.hexdigest()
        if md5 != expected_md5:
            raise _dataset_error(info, root, f"downloaded {url} has MD5 {md5}, expected {expected_md5} "
                                             f"(corrupt or wrong file)")
        os.replace(temporary, archive)
        return md5
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise _dataset_error(info, root, f"could not download {url} ({type(error).__name__}: {error})") from error
    finally:
        temporary.unlink(missing_ok=True)


def _safe_extract_zip(info: DatasetInfo, root: Path, archive: Path) -> None:
    """Extract a zip ``archive`` into ``root``, refusing absolute names, names that would land
    outside ``root`` and symbolic links, before anything is written."""
    destination = root.resolve()
    try:
        with zipfile.ZipFile(archive) as handle:
            members = handle.infolist()
            for member in members:
                name = member.filename
                target = (destination / name).resolve()
                is_link = (member.external_attr >> 16) & 0o170000 == 0o120000
                if is_link or os.path.isabs(name) or "\\" in name or ":" in name \
                        or not target.is_relative_to(destination):
                    raise _dataset_error(info, root, f"archive {archive} holds an unsafe member {name!r}")
            handle.extractall(destination, members=members)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise _dataset_error(info, root, f"could not extract {archive} ({type(error).__name__}: {error})") from error


def _safe_extract(info: DatasetInfo, root: Path, archive: Path) -> None:
    """Extract ``archive`` into ``root``, refusing members that would land outside it or are links."""
    if archive.name.endswith(".zip"):
        _safe_extract_zip(info, root, archive)
        return
    destination = root.resolve()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                target = (destination / member.name).resolve()
                if not (member.isfile() or member.isdir()) or os.path.isabs(member.name) \
                        or not target.is_relative_to(destination):
                    raise _dataset_error(info, root, f"archive {archive} holds an unsafe member {member.name!r}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4; members were checked above
                tar.extractall(destination, members=members)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise _dataset_error(info, root, f"could not extract {archive} ({type(error).__name__}: {error})") from error


def _download_files(info: DatasetInfo, root: Path, progress: bool, url: str | None) -> Path:
    """MNIST: fetch each missing ``<file>.gz`` of :attr:`DatasetInfo.file_md5` into the folder, MD5-checked."""
    folder = root / info.folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, md5 in info.file_md5.items():
        stem = name.removesuffix(".gz")
        if idx.find_file(folder, stem) is not None:
            continue
        source = (url or info.url).rstrip("/") + "/" + name
        print(f"downloading {source} -> {folder / name}", file=sys.stderr)
        _fetch(info, root, source, progress, target=folder / name, expected_md5=md5)
    return folder


def download(root: str | os.PathLike[str], dataset: str, progress: bool = True, url: str | None = None) -> Path:
    """Fetch, verify (MD5) and unpack the official files into ``root`` (torchvision layout).

    Does nothing when every file of the layout is already there. CIFAR and Tiny-ImageNet: reuses an
    archive already in ``root`` whose MD5 matches; otherwise downloads it (urllib, tqdm bar) to a
    temporary file that is renamed only after the MD5 check; extraction (tar.gz or zip) refuses
    path traversal and links. MNIST: the four ``.gz`` files, each checked against its official MD5
    and read compressed. A dataset without a ``url`` (ImageNet) is refused in one line that says
    where to put the files. ``url`` overrides the official address (a mirror; for MNIST the folder
    holding the four files). Returns ``root/<folder>``.
    """
    info = dataset_info(dataset)
    root_path = Path(root)
    folder = root_path / info.folder
    if _split_present(info, folder, "train") and _split_present(info, folder, "test"):
        return folder
    if not info.url:
        raise DatasetError(_one_line(f"{info.name}: --download cannot fetch it; expected layout "
                                     f"{info.expected_layout(root_path)}; {info.manual_download}, or point "
                                     f"--data_root at the root that holds {info.folder}/"))
    root_path.mkdir(parents=True, exist_ok=True)
    if info.reader == "idx":
        return _download_files(info, root_path, progress, url)
    archive = root_path / info.archive_filename
    if archive.is_file() and _file_md5(archive) == info.archive_md5:
        print(f"{archive} already downloaded and verified", file=sys.stderr)
    else:
        source = url or info.url
        print(f"downloading {source} -> {archive}", file=sys.stderr)
        _fetch(info, root_path, source, progress)
    _safe_extract(info, root_path, archive)
    if info.reader in FOLDER_READER_FILES:
        needed = {*info.train_files, *info.test_files, *(name for names in FOLDER_READER_FILES[info.reader].values()
                                                           for name in names)}
        missing = sorted(name for name in needed if not (folder / name).exists())
    else:
        missing = [name for name in (*info.train_files, *info.test_files) if not (folder / name).is_file()]
    if missing:
        raise _dataset_error(info, root_path, f"archive {archive} did not contain {', '.join(missing)}")
    return folder


# ----------------------------------------------------------------------------- batching
class TensorLoader:
    """Batches of a split that already lives on a device, augmented and normalised there (§2.1).

    Iterating yields ``(images float (B, 3, H, W) normalised, labels (B,))``. Each ``iter()`` is
    one pass: a fresh order drawn with ``generator`` when ``shuffle``, else the stored order;
    with ``augment`` the train transform (random crop with ``padding`` zero pixels + horizontal
    flip unless ``flip`` is False, per sample, from :mod:`datafree.augment`) runs on the uint8 batch before conversion
    to [0, 1] and normalisation with ``mean`` / ``std`` (none when they are None).

    With ``stage_on_host`` the images stay in host memory (pinned when ``device`` is CUDA) and each
    batch is copied to ``device`` as it is served (ImageNet's 7.5 GB test split, §19.1); the batch
    then goes through the same preparation on the device, so the values are identical either way.
    Such a loader serves evaluation only: no shuffle, no augmentation.

    The loader keeps no state between passes (the caller owns ``generator``), so
    :meth:`state_dict` is empty; it exists so the loader can sit beside stateful objects.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool = False,
                 augment: bool = False, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 device: torch.device | str | None = None, generator: torch.Generator | None = None,
                 drop_last: bool = False, channels_last: bool = False, padding: int = 4, flip: bool = True,
                 stage_on_host: bool = False) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"TensorLoader expects uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape[:1] != images.shape[:1]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std, or neither")
        if stage_on_host and (shuffle or augment):
            raise ValueError("a loader staged on the host serves evaluation only: no shuffle, no augmentation")
        target = torch.device(device) if device is not None else images.device
        self.device = target
        self.stage_on_host = stage_on_host
        if stage_on_host:
            self.images = images.cpu()
            if target.type == "cuda":
                self.images = self.images.pin_memory()
        else:
            self.images = images.to(target)
        self.labels = labels.to(target)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.generator = generator
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.padding = padding
        self.flip = flip
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32, device=target).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32, device=target).view(1, -1, 1, 1)

    def __len__(self) -> int:
        count = self.images.shape[0]
        if self.drop_last:
            return count // self.batch_size
        return (count + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = random_permutation(self.images.shape[0], self.device, self.generator) if self.shuffle else None
        for batch in range(len(self)):
            start, stop = batch * self.batch_size, (batch + 1) * self.batch_size
            if order is None:
                images, labels = self.images[start:stop], self.labels[start:stop]
                if self.stage_on_host:   # one batch to the device; asynchronous from pinned memory
                    images = images.to(self.device, non_blocking=True)
            else:
                indices = order[start:stop]
                images, labels = self.images.index_select(0, indices), self.labels.index_select(0, indices)
            yield self.prepare(images), labels

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> (augmented) float batch in [0, 1] -> normalised, in the chosen memory format."""
        if self.augment:
            images = random_crop_flip(images, padding=self.padding, flip_prob=0.5 if self.flip else 0.0,
                                      generator=self.generator)
        output = to_unit_float(images)
        if self.mean is not None:
            output = (output - self.mean) / self.std
        if self.channels_last:
            output = output.contiguous(memory_format=torch.channels_last)
        return output

    def state_dict(self) -> dict[str, Any]:
        """Nothing to save: the order and augmentation come from the caller's generator."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Accepts the (empty) dict from :meth:`state_dict`."""
        if state:
            raise ValueError(f"TensorLoader has no state, got keys {sorted(state)}")


def evaluation_loader(info: DatasetInfo, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                      device: torch.device | str, channels_last: bool = False,
                      test_on_device: bool | None = None) -> TensorLoader:
    """The test split as normalised batches on ``device``, in stored order, for evaluation (§3.6).

    Where the split lives follows the dataset entry (``info.test_on_device``) unless
    ``test_on_device`` says otherwise (``--test_on_device`` passes True): on the device whole, or in
    host memory with one batch copied at a time (ImageNet, §19.1). Both give the same values.
    """
    on_device = info.test_on_device if test_on_device is None else test_on_device
    return TensorLoader(images, labels, batch_size=batch_size, shuffle=False, augment=False, mean=info.mean,
                        std=info.std, device=device, channels_last=channels_last, stage_on_host=not on_device)
