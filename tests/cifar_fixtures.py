"""Tiny CIFAR-10 / CIFAR-100 data roots in the official python-pickle layout, for tests.

``write_cifar(root)`` writes what torchvision downloads (METHODS.md §2.1), small:

* cifar10: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``, keys ``data``
  (uint8 N×3072 in channel planes), ``labels``, ``filenames``, ``batch_label``;
* cifar100: ``cifar-100-python/{train, test, meta}``, keys ``data``, ``fine_labels``,
  ``coarse_labels``, ``filenames``, ``batch_label``.

Keys are ``str`` or ``bytes`` (the official files are Python-2 pickles read with
``encoding='bytes'`` by some loaders). With ``learnable=True`` each class is an easy pattern — a
class colour plus, for class index ≥ 27, a stripe / checker texture — under pixel noise, so a tiny
CNN separates the classes within a couple of epochs; both cues survive random crop and flip.

``break_cifar(root, dataset, how)`` damages a written root in the ways the loader must report.
"""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np

FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
LABEL_KEYS = {"cifar10": "labels", "cifar100": "fine_labels"}
BREAKAGES = ("missing_folder", "missing_file", "truncated_file", "bad_shape", "missing_key", "bad_label")

_LEVELS = (40, 128, 215)   # per-channel colour levels: 27 distinct class colours
_NOISE_STD = 12.0


def class_pattern(label: int) -> np.ndarray:
    """The noiseless 3×32×32 float image of class ``label``: colour ``label % 27``, texture ``label // 27``."""
    colour = label % 27
    red, green, blue = _LEVELS[colour // 9], _LEVELS[(colour // 3) % 3], _LEVELS[colour % 3]
    image = np.empty((3, 32, 32), np.float64)
    image[0], image[1], image[2] = red, green, blue
    rows, columns = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    texture = label // 27
    if texture == 1:
        image += np.where((rows // 4) % 2 == 0, 35.0, -35.0)            # horizontal stripes
    elif texture == 2:
        image += np.where((columns // 4) % 2 == 0, 35.0, -35.0)         # vertical stripes
    elif texture == 3:
        image += np.where(((rows // 4) + (columns // 4)) % 2 == 0, 35.0, -35.0)  # checkerboard
    return image


def fixture_arrays(dataset: str, split: str, count: int, learnable: bool = True,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic ``(data uint8 (count, 3072), labels int64 (count,))`` that :func:`write_cifar` writes.

    Labels are balanced (``i % C``) and shuffled; with ``learnable`` images are the class pattern
    plus Gaussian noise, otherwise uniform noise.
    """
    num_classes = NUM_CLASSES[dataset]
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, num_classes])
    labels = rng.permutation(np.arange(count) % num_classes).astype(np.int64)
    if learnable:
        images = np.stack([class_pattern(int(label)) for label in labels]) if count else np.empty((0, 3, 32, 32))
        images = images + rng.normal(0.0, _NOISE_STD, size=images.shape)
        data = np.clip(np.rint(images), 0, 255).astype(np.uint8).reshape(count, 3072)
    else:
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    return data, labels


def _as_bytes(value: object) -> object:
    """Strings (and lists of strings) as bytes, like Python-2 ``str`` read with ``encoding='bytes'``."""
    if isinstance(value, str):
        return value.encode("ascii")
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [item.encode("ascii") for item in value]
    return value


def _keyed(content: dict[str, object], key_type: str) -> dict[object, object]:
    if key_type == "str":
        return content
    if key_type == "bytes":
        return {key.encode("ascii"): _as_bytes(value) for key, value in content.items()}
    raise ValueError(f"key_type must be 'str' or 'bytes', got {key_type!r}")


def write_pickle(path: Path, content: dict[str, object], key_type: str = "str") -> None:
    """Pickle ``content`` to ``path`` with ``str`` or ``bytes`` keys (as the official files)."""
    with open(path, "wb") as handle:
        pickle.dump(_keyed(content, key_type), handle, protocol=2)


def write_cifar(root: str | Path, dataset: str = "cifar10", n_train: int = 200, n_test: int = 100,
                key_type: str = "str", learnable: bool = True, seed: int = 0) -> Path:
    """Write a small ``dataset`` in the official layout under ``root``; returns ``root`` (a --data_root).

    The training split of cifar10 is spread over the five ``data_batch_*`` files in order
    (``np.array_split``), so concatenating them gives :func:`fixture_arrays` back.
    """
    root = Path(root)
    folder = root / FOLDERS[dataset]
    folder.mkdir(parents=True, exist_ok=True)
    label_key = LABEL_KEYS[dataset]
    train_data, train_labels = fixture_arrays(dataset, "train", n_train, learnable, seed)
    test_data, test_labels = fixture_arrays(dataset, "test", n_test, learnable, seed)

    def content(data: np.ndarray, labels: np.ndarray, batch_label: str) -> dict[str, object]:
        entry: dict[str, object] = {"batch_label": batch_label, label_key: [int(v) for v in labels], "data": data,
                                    "filenames": [f"image_{index:05d}.png" for index in range(len(labels))]}
        if dataset == "cifar100":
            entry["coarse_labels"] = [int(v) // 5 for v in labels]
        return entry

    if dataset == "cifar10":
        pieces = np.array_split(np.arange(n_train), 5)
        for number, indices in enumerate(pieces, start=1):
            write_pickle(folder / f"data_batch_{number}",
                         content(train_data[indices], train_labels[indices], f"training batch {number} of 5"), key_type)
        write_pickle(folder / "test_batch", content(test_data, test_labels, "testing batch 1 of 1"), key_type)
        write_pickle(folder / "batches.meta", {"label_names": [f"class_{index}" for index in range(10)],
                                               "num_cases_per_batch": len(pieces[0]), "num_vis": 3072}, key_type)
    elif dataset == "cifar100":
        write_pickle(folder / "train", content(train_data, train_labels, "train"), key_type)
        write_pickle(folder / "test", content(test_data, test_labels, "test"), key_type)
        write_pickle(folder / "meta", {"fine_label_names": [f"class_{index}" for index in range(100)],
                                       "coarse_label_names": [f"super_{index}" for index in range(20)]}, key_type)
    else:
        raise ValueError(f"unknown fixture dataset {dataset!r}")
    return root


def break_cifar(root: str | Path, dataset: str, how: str) -> str:
    """Damage a root written by :func:`write_cifar`; returns the split that no longer loads.

    ``missing_folder`` removes the dataset folder (both splits fail; returns 'test');
    ``missing_file`` removes one training file (returns 'train'); the others damage the test
    file: ``truncated_file`` cuts it in half, ``bad_shape`` rewrites ``data`` as N×3000,
    ``missing_key`` drops the label key, ``bad_label`` puts a label equal to the class count.
    """
    folder = Path(root) / FOLDERS[dataset]
    test_file = folder / ("test_batch" if dataset == "cifar10" else "test")
    if how == "missing_folder":
        shutil.rmtree(folder)
        return "test"
    if how == "missing_file":
        (folder / ("data_batch_3" if dataset == "cifar10" else "train")).unlink()
        return "train"
    if how == "truncated_file":
        raw = test_file.read_bytes()
        test_file.write_bytes(raw[: len(raw) // 2])
        return "test"
    with open(test_file, "rb") as handle:
        content = pickle.load(handle, encoding="latin1")
    content = {(key.decode() if isinstance(key, bytes) else key): value for key, value in content.items()}
    label_key = LABEL_KEYS[dataset]
    if how == "bad_shape":
        content["data"] = content["data"][:, :3000]
    elif how == "missing_key":
        del content[label_key]
    elif how == "bad_label":
        content[label_key] = [NUM_CLASSES[dataset]] + list(content[label_key])[1:]
    else:
        raise ValueError(f"unknown breakage {how!r}; valid: {', '.join(BREAKAGES)}")
    write_pickle(test_file, content)
    return "test"
