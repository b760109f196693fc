"""NAYER's label-text embeddings: a constant C × D matrix, one row per class (METHODS.md §11.3).

``--label_embeddings`` takes one of

* a **file** ``PATH`` (the faithful input): a C × D float tensor of the CLIP ViT-B/32 text
  features of the class names, prompt "a image of {name}" as in [REF], D = 512, in torch's
  ``.pt`` (``torch.save`` of a tensor; ``.pth`` is accepted too) or NumPy's ``.npy`` format.
  It is read without unpickling anything (``torch.load(weights_only=True)``,
  ``np.load(allow_pickle=False)``) and refused in one line, before anything is created, when it
  is missing, unreadable, pickled, not 2-D, has a row count other than the dataset's class count,
  or holds a non-finite value. Its SHA-256 goes to ``config.yaml``. Nothing is ever downloaded.
* ``teacher_fc`` (offline default, a **deviation**): row ``c`` of the teacher's final Linear
  weight ``W_fc ∈ R^{C×D}`` (D = 512 for resnet34 / vgg11, 128 for wrn40_2): constant, data-free,
  and it carries the teacher's inter-class geometry, which the text embedding is meant to give.
* ``random`` (ablation, a **deviation**): fixed N(0, I) class codes, C × 512, drawn from a
  generator seeded with the run seed: no semantic information at all.

All three pass through the generator's BatchNorm1d (§11.4), so their scale does not matter.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from datafree.digests import file_sha256
from datafree.errors import UsageError, first_line

TEACHER_FC, RANDOM = "teacher_fc", "random"
KEYWORDS = (TEACHER_FC, RANDOM)
#: Width of the ``random`` codes: the CLIP ViT-B/32 text width the paper's embeddings have.
RANDOM_WIDTH = 512
TORCH_SUFFIXES, NUMPY_SUFFIXES = (".pt", ".pth"), (".npy",)
FLAG = "--label_embeddings"
HOW_TO = "give a C x D .pt/.npy tensor of class-name embeddings, or teacher_fc / random"


def is_keyword(source: str) -> bool:
    """True for the offline substitutes ``teacher_fc`` and ``random`` (not a file)."""
    return source in KEYWORDS


def read_embedding_file(path: str | Path) -> Any:
    """The raw content of a ``.pt``/``.pth``/``.npy`` file, never unpickled; one-line UsageError if unreadable."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UsageError(f"{FLAG} {path} {what}; {HOW_TO}")
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        try:
            with warnings.catch_warnings():   # torch warns about pickle protocols of legacy files
                warnings.simplefilter("ignore")
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickled objects, corrupt archives: refused without being run
            raise UsageError(f"{FLAG} {path} cannot be read as a tensor saved by torch.save ({_load_failure(error)}; "
                             f"read with weights_only=True, nothing in it is run); {HOW_TO}") from None
    if suffix in NUMPY_SUFFIXES:
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise UsageError(f"{FLAG} {path} cannot be read as a .npy array (read with allow_pickle=False, "
                             f"nothing pickled is run: {first_line(error)}); {HOW_TO}") from None
    raise UsageError(f"{FLAG} {path} has the unknown extension {path.suffix!r}; {HOW_TO}")


def _load_failure(error: Exception) -> str:
    """Why a weights-only ``torch.load`` failed, in our words (torch's own message runs to many lines)."""
    if isinstance(error, pickle.UnpicklingError) or "Weights only load failed" in str(error):
        return "it holds Python objects, not only tensors"
    return first_line(error, limit=100)


def check_embedding_file(path: str | Path, num_classes: int) -> torch.Tensor:
    """Read and validate an embedding file; returns it as a float32 C × D tensor.

    Raises a one-line UsageError unless the file holds one 2-D real tensor with ``num_classes``
    rows, at least one column, and only finite values.
    """
    content = read_embedding_file(path)
    if isinstance(content, np.ndarray):
        if content.dtype.kind not in "fiu":
            raise UsageError(f"{FLAG} {path} holds a {content.dtype} array, not real numbers; {HOW_TO}")
        content = torch.from_numpy(np.ascontiguousarray(content))
    if not isinstance(content, torch.Tensor):
        raise UsageError(f"{FLAG} {path} holds a {type(content).__name__}, not a tensor "
                         f"(save the C x D tensor itself with torch.save); {HOW_TO}")
    if content.is_complex() or content.dtype == torch.bool:
        raise UsageError(f"{FLAG} {path} holds a {content.dtype} tensor, not real numbers; {HOW_TO}")
    if content.dim() != 2 or content.shape[1] < 1:
        raise UsageError(f"{FLAG} {path} has shape {tuple(content.shape)}, expected 2-D (classes x width) "
                         f"with {num_classes} rows; {HOW_TO}")
    if content.shape[0] != num_classes:
        raise UsageError(f"{FLAG} {path} has {content.shape[0]} rows but the dataset has {num_classes} classes "
                         f"(one row per class, in the dataset's label order); {HOW_TO}")
    embeddings = content.detach().to(torch.float32).contiguous()
    if not torch.isfinite(embeddings).all():
        raise UsageError(f"{FLAG} {path} holds non-finite values (NaN or inf); {HOW_TO}")
    return embeddings


def check_source(source: str, num_classes: int) -> None:
    """NAYER's options check: a keyword, or a file that passes :func:`check_embedding_file`."""
    if not is_keyword(source):
        check_embedding_file(source, num_classes)


def teacher_fc_embeddings(teacher: nn.Module, num_classes: int) -> tuple[torch.Tensor, str]:
    """Row ``c`` = the teacher's final-Linear weight for class ``c`` (C × D, §11.3, a deviation).

    The final Linear is the last ``nn.Linear`` (in module order) with ``out_features == C``.
    """
    found: tuple[str, nn.Linear] | None = None
    for name, module in teacher.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            found = (name, module)
    if found is None:
        raise UsageError(f"{FLAG} teacher_fc: the teacher has no nn.Linear with {num_classes} outputs to take "
                         f"class embeddings from; {HOW_TO}")
    name, layer = found
    weight = layer.weight.detach().to(device="cpu", dtype=torch.float32).clone()
    return weight, f"teacher_fc: rows of the teacher's '{name}' weight ({weight.shape[0]} x {weight.shape[1]})"


def random_embeddings(num_classes: int, seed: int, width: int = RANDOM_WIDTH) -> tuple[torch.Tensor, str]:
    """Fixed N(0, I) class codes (C × ``width``) from a CPU generator seeded with the run seed (§11.3)."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randn(num_classes, width, generator=generator)
    return codes, f"random: N(0, I) codes ({num_classes} x {width}, seed {seed})"


def load_label_embeddings(source: str, num_classes: int, teacher: nn.Module, seed: int
                          ) -> tuple[torch.Tensor, str]:
    """The C × D float32 embedding matrix (on the CPU) for ``--label_embeddings source`` and a description."""
    if source == TEACHER_FC:
        return teacher_fc_embeddings(teacher, num_classes)
    if source == RANDOM:
        return random_embeddings(num_classes, seed)
    embeddings = check_embedding_file(source, num_classes)
    return embeddings, (f"file {source} ({embeddings.shape[0]} x {embeddings.shape[1]}, "
                        f"sha256 {file_sha256(source)[:16]}…)")


def source_sha256(source: str) -> str | None:
    """The SHA-256 of an embedding file, recorded in config.yaml (§11.3); None for a keyword, and for a
    missing file (left to :func:`check_source`)."""
    if not is_keyword(source) and Path(source).is_file():
        return file_sha256(source)
    return None


def deviation(source: str) -> list[str]:
    """The deviation line for the offline substitutes (none for a file)."""
    if source == TEACHER_FC:
        what = ("--label_embeddings teacher_fc feeds NAYER's generator the rows of the teacher's final Linear "
                "weight; label results 'NAYER (teacher-FC embedding)'")
    elif source == RANDOM:
        what = ("--label_embeddings random feeds NAYER's generator fixed N(0, I) class codes (an ablation without "
                "semantic information)")
    else:
        return []
    return [f"{what}, not the paper's CLIP ViT-B/32 text embeddings of the class names (§11.3); for the faithful "
            "input pass --label_embeddings FILE, a C x 512 .pt/.npy tensor of CLIP text features of "
            "'a image of {name}' per class"]
