"""Checkpoint files: atomic writes, loads that never run code, classifier checkpoints.

* :func:`atomic_save` writes to a temporary file next to the target (a fixed name this program
  knows, ``.<name>.tmp``), fsyncs and renames it over the target: a crash, ``kill -9`` or a full
  disk at any moment leaves either the previous complete file or the new one.
* :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``: tensors, numbers,
  strings, lists and dicts only. A file that needs more (a pickled model, or a payload that
  would run a command) is refused in one line, without running anything.
* :func:`save_classifier` / :func:`load_classifier`: classifier weights with the metadata
  needed to validate them (architecture, class count, dataset, METHODS.md §7 item 12).
  :func:`load_classifier` also accepts the teachers released with CMI (``{dataset}_{arch}.pth``
  holding ``epoch``, ``arch``, ``state_dict``, ``best_acc1``, ``optimizer``, ``scheduler``) and
  ljrprocc (the same entries, keys of a DistributedDataParallel model, METHODS.md §18.4),
  DataParallel / DDP saves (``module.``-prefixed keys) and a plain ``state_dict`` (the
  architecture then comes from the command line, with a note).
"""
from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from datafree.errors import CheckpointError, UsageError
from datafree.models import ARCH_ALIASES, CLASSIFIERS
from datafree.run.numerics import unwrap

#: Version of the checkpoints this package writes; a ``last.pth`` of another version is refused.
CHECKPOINT_FORMAT = 2


def temporary_path(path: Path) -> Path:
    """The temporary file :func:`atomic_save` writes before renaming: ``.<name>.tmp`` beside ``path``."""
    return path.parent / f".{path.name}.tmp"


class WriteError(UsageError):
    """A file could not be written (full disk, permissions, read-only file system); one line.

    ``problem`` (``cannot write PATH (REASON)...``) is kept apart from the advice, so a caller that
    knows better what to do (e.g. a run that removed itself) can give its own advice.
    """

    def __init__(self, problem: str, advice: str) -> None:
        super().__init__(f"{problem}; {advice}")
        self.problem = problem


def write_error(path: Path, error: OSError, kept: bool) -> WriteError:
    """A one-line :class:`WriteError` naming the path, the reason and what to do."""
    reason = error.strerror or type(error).__name__
    previous = f"; the previous {path.name} is kept" if kept else ""
    return WriteError(f"cannot write {path} ({reason}){previous}",
                      f"free space or fix the permissions of {path.parent}, then run the same command with --resume")


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``.<name>.tmp`` in the same folder, fsync, then rename over ``path``.

    Files are created with the default permissions (readable by the group and others as the
    umask allows). A failed write removes the temporary and raises :class:`WriteError`; the
    previous ``path`` is untouched.
    """
    path = Path(path)
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise write_error(path, error, kept=path.exists()) from None
    except RuntimeError as error:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        if not is_write_failure(error):
            raise
        # torch's zip writer reports a full disk as a RuntimeError from inline_container.cc.
        raise write_error(path, OSError(errno.ENOSPC, "the write failed: no space left on the device?"),
                          kept=path.exists()) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def is_write_failure(error: RuntimeError) -> bool:
    """True for the RuntimeError torch.save raises when its file cannot be written (a full disk)."""
    text = str(error)
    return "PytorchStreamWriter" in text or "file write failed" in text or "inline_container" in text


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write a small text file atomically (temporary ``.<name>.tmp`` + rename)."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise write_error(path, error, kept=path.exists()) from None


def _refused_global(error: Exception) -> str | None:
    """The Python global a weights-only load refused (e.g. ``posix.system``), if it names one."""
    match = re.search(r"GLOBAL ([\w.]+)", str(error))
    return match.group(1) if match else None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``; problems are one-line CheckpointErrors.

    A missing, corrupt or unsafe file (one that holds Python objects beyond tensors, numbers,
    strings, lists and dicts) is refused; nothing in the file is executed. A whole model saved
    with ``torch.save(model)`` gets the command that converts it to a ``state_dict``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}" + ("" if not path.exists() else " (not a file)"))
    try:
        with warnings.catch_warnings():   # torch warns about the pickle protocol of legacy files
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        name = _refused_global(error)
        if name is None:
            raise CheckpointError(f"checkpoint {path} is corrupt or unreadable (UnpicklingError); "
                                  "delete it and retrain, or point to another file") from None
        if name.startswith("torch.nn.") or name.startswith("datafree.models"):
            raise CheckpointError(
                f"checkpoint {path} holds a whole pickled model ({name}), not a state_dict; it is refused because "
                "loading it could run code. If you trust the file, convert it once: python -c \"import torch; "
                f"torch.save(torch.load('{path}', weights_only=False).state_dict(), '{path}.state_dict.pth')\" "
                "and pass the new file") from None
        raise CheckpointError(f"checkpoint {path} holds {name}, which is not a tensor, number, string, list or "
                              "dict; it is refused without being run (loading it could execute code)") from None
    except Exception as error:  # truncated or foreign files raise many different exceptions
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}); "
                              "delete it and retrain, or point to another file") from None


def save_classifier(path: str | Path, model: nn.Module, arch: str, num_classes: int, dataset: str,
                    **extra: Any) -> None:
    """Save a trained classifier with the metadata needed to validate it on load."""
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    atomic_save({"format": CHECKPOINT_FORMAT, "kind": "classifier", "arch": arch,
                 "num_classes": num_classes, "dataset": dataset, "state_dict": state, **extra}, path)


def canonical_arch(name: str) -> str:
    """A checkpoint's architecture name in this zoo's spelling (``vgg11_bn`` -> ``vgg11``)."""
    return ARCH_ALIASES.get(name, name)


def _is_state_dict(value: Any) -> bool:
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(key, str) and isinstance(tensor, torch.Tensor) for key, tensor in value.items()))


def classifier_state(checkpoint: Any, path: Path, arch: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, metadata)`` of a classifier checkpoint in any accepted format.

    Accepted: this package's checkpoints, CMI's released teachers (metadata ``arch``,
    ``best_acc1``, ...), and a bare ``state_dict`` (metadata empty; a note says the architecture
    comes from the command line). ``module.`` prefixes of DataParallel saves are removed.
    """
    if _is_state_dict(checkpoint) and "state_dict" not in checkpoint:
        print(f"note: {path} is a plain state_dict without metadata; loading it as a {arch} "
              "(architecture from the command line)")
        state, metadata = checkpoint, {}
    elif isinstance(checkpoint, Mapping) and _is_state_dict(checkpoint.get("state_dict")):
        state, metadata = checkpoint["state_dict"], {k: v for k, v in checkpoint.items() if k != "state_dict"}
    else:
        raise CheckpointError(f"checkpoint {path} holds no usable state_dict (a dict of parameter tensors); it is "
                              "not a classifier checkpoint")
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return dict(state), metadata


def check_classifier_metadata(metadata: Mapping[str, Any], path: Path, arch: str, num_classes: int,
                              dataset: str | None) -> None:
    """Refuse a checkpoint of another architecture, class count or dataset, in one line."""
    saved_arch = metadata.get("arch")
    if isinstance(saved_arch, str) and canonical_arch(saved_arch) != arch:
        saved = canonical_arch(saved_arch)
        if saved in CLASSIFIERS:
            raise CheckpointError(f"checkpoint {path} is a {saved}, not a {arch}; pass --teacher {saved} "
                                  "or another checkpoint")
        raise CheckpointError(f"checkpoint {path} is a '{saved_arch}', an architecture this model zoo does not "
                              f"have (valid models: {', '.join(CLASSIFIERS)}); use a checkpoint of a {arch}")
    saved_classes = metadata.get("num_classes")
    if isinstance(saved_classes, int) and saved_classes != num_classes:
        raise CheckpointError(f"checkpoint {path} has {saved_classes} classes but {num_classes} are "
                              "expected; use a checkpoint trained on this dataset")
    saved_dataset = metadata.get("dataset")
    if dataset is not None and isinstance(saved_dataset, str) and saved_dataset != dataset:
        raise CheckpointError(f"checkpoint {path} was trained on {saved_dataset}, not {dataset}; "
                              f"pass --dataset {saved_dataset} or another checkpoint")


def load_classifier(path: str | Path, model: nn.Module, arch: str, num_classes: int,
                    dataset: str | None) -> dict[str, Any]:
    """Load weights into ``model`` after checking architecture, class count and dataset.

    Every mismatch is a one-line CheckpointError naming both sides; a state_dict whose keys or
    shapes do not fit the model says so (e.g. another class count in the final layer).
    Returns the checkpoint's metadata.
    """
    path = Path(path)
    state, metadata = classifier_state(load_checkpoint(path), path, arch)
    check_classifier_metadata(metadata, path, arch, num_classes, dataset)
    try:
        unwrap(model).load_state_dict(state)
    except RuntimeError as error:
        first_line = " ".join(str(error).strip().splitlines()[1:2]).strip() or str(error).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit a {arch} with {num_classes} classes "
                              f"({first_line[:200]}){layout_hint(state, arch)}") from None
    return metadata


def layout_hint(state: Mapping[str, torch.Tensor], arch: str) -> str:
    """Advice for a state_dict in torchvision's ResNet layout with a biased stem offered to a CIFAR ResNet.

    ljrprocc's Tiny-ImageNet teachers (METHODS.md §18.4) have ``conv1.bias`` and ``fc.*`` keys; a file of
    theirs without its ``arch`` entry, loaded as ``resnet50``, is meant for ``resnet50_imagenet``.
    """
    variant = f"{arch}_imagenet"
    if variant in CLASSIFIERS and "conv1.bias" in state and "fc.weight" in state:
        return f"; its keys are those of ljrprocc's Tiny-ImageNet ResNets: pass --teacher {variant}"
    return ""
