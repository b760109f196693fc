"""Command-line pieces shared by ``train_scratch.py`` and ``datafree_kd.py``.

Configuration flows one way: argparse -> :func:`resolved_config` (a plain dict, with a method's or
a recipe's typed options, :mod:`datafree.options`, dumped as ``config.yaml``) -> typed constructor
arguments. The run flags here check their own values as they are parsed (:func:`checked`). ``--resume``
re-reads that file and refuses to continue with settings that change what the run computes
(:func:`check_resume_config`); paths and where the run lives do not count, so a run directory
that was moved, or named with a trailing slash, resumes.

:func:`run_cli` turns every foreseeable error into one line on stderr: exit code 2 for bad
input (and for a failed write or an allocation the machine cannot hold), 3 for a non-finite loss.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from datafree.data import DATASETS
from datafree.errors import NonFiniteLossError, UsageError, first_line
from datafree.run.seeding import MAX_SEED

#: Arguments that may differ between an interrupted run and its resumption: they change
#: where and how fast a run goes, or where its inputs live, not what it computes.
RUNTIME_KEYS = frozenset({"device", "max_minutes", "resume", "overwrite", "progress", "data_root",
                          "download", "log_interval", "num_threads", "nan_policy", "deterministic", "save_dir",
                          "teacher_ckpt", "pretrained_path", "environment", "world_size", "batch_size_per_rank",
                          "synthesis_batch_size_per_rank", "cache_dir", "test_on_device", "pool_device"})

def run_cli(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a command-line ``main`` and turn foreseeable errors into one line + an exit code."""
    try:
        main(argv)
    except UsageError as error:
        fail(str(error), 2)
    except NonFiniteLossError as error:
        fail(str(error), 3)
    except torch.OutOfMemoryError as error:
        fail(f"out of memory ({first_line(error)}); lower --batch_size / --synthesis_batch_size, then run the same "
             "command with --resume", 2)
    except MemoryError:
        fail("out of memory; lower --batch_size / --synthesis_batch_size, then run the same command with --resume", 2)
    except RuntimeError as error:
        if "can't allocate memory" not in str(error) and "out of memory" not in str(error):
            raise
        fail(f"out of memory ({first_line(error)}); lower --batch_size / --synthesis_batch_size, then run the same "
             "command with --resume", 2)
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        fail(f"cannot access{where} ({error.strerror or type(error).__name__}); check the path, its permissions "
             "and the free space", 2)
    except KeyboardInterrupt:
        fail("interrupted by a second signal; last.pth keeps the state of the last checkpoint", 130)


def fail(message: str, code: int) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (a UsageError, printed by :func:`run_cli`) and without
    abbreviations: ``--epoch 3`` is refused, not silently taken as ``--epochs 3``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def checked(flag: str, kind: type, valid: Callable[[Any], bool] = lambda value: value > 0,
            rule: str = "must be positive") -> Callable[[str], Any]:
    """argparse ``type`` for a run flag: a finite ``kind`` (int or float) for which ``valid`` holds, else a
    one-line UsageError that names the flag (not argparse's wording, which names this function)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise UsageError(f"{flag} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value):
            raise UsageError(f"{flag} must be a finite number, got {value}")
        if not valid(value):
            raise UsageError(f"{flag} {rule}, got {value}")
        return value

    return parse


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every training command has: data, device, precision, seeding, run directory."""
    group = parser.add_argument_group("run")
    group.add_argument("--dataset", default="cifar10", help=f"one of: {', '.join(DATASETS)}")
    group.add_argument("--data_root", default=os.environ.get("DATAFREE_DATA_ROOT", "data"),
                       help="torchvision-style root holding " + ", ".join(f"{info.folder}/" for info in DATASETS.values())
                            + " (default $DATAFREE_DATA_ROOT or ./data)")
    group.add_argument("--download", action="store_true",
                       help="download the dataset into --data_root if it is missing (never ImageNet)")
    group.add_argument("--cache_dir", default=None,
                       help="where JPEG datasets (tiny_imagenet, imagenet) keep their decoded uint8 splits, "
                            "rebuilt when a source file changes (default <data_root>/datafree_cache)")
    group.add_argument("--test_on_device", action="store_true",
                       help="copy the whole test split to the device even where the dataset keeps it in host "
                            "memory and copies one batch at a time (imagenet: 7.5 GB); same results either way")
    group.add_argument("--seed", type=checked("--seed", int, lambda value: 0 <= value <= MAX_SEED,
                                              f"must be in [0, {MAX_SEED}]"),
                       default=0, help=f"random seed, 0 ≤ seed ≤ {MAX_SEED}")
    group.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    group.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                       help="fp32 (default): the reference numerics, FP32 with cuDNN's TF32 convolutions as "
                            "PyTorch sets them (METHODS.md §7 item 22); bf16 / fp16: autocast of the forward "
                            "passes, faster, accuracy parity not yet measured. Evaluation always runs in fp32")
    group.add_argument("--channels_last", default="auto", choices=["auto", "on", "off"],
                       help="channels_last memory format; auto = on for CUDA")
    group.add_argument("--compile", action="store_true", help="torch.compile the student (falls back to eager)")
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic kernels (cuDNN, cuBLAS, torch.use_deterministic_algorithms; "
                            "warns for an op that has none) instead of autotuned ones: reproducible "
                            "GPU runs, slower")
    group.add_argument("--save_dir", default=None, help="run directory (default under runs/)")
    group.add_argument("--resume", action="store_true", help="continue the run in --save_dir from last.pth")
    group.add_argument("--overwrite", action="store_true",
                       help="replace a run already in --save_dir (deletes only the files it wrote)")
    group.add_argument("--max_minutes", type=checked("--max_minutes", float), default=None,
                       help="stop cleanly with a checkpoint after this many minutes (resume later)")
    group.add_argument("--no_progress", dest="progress", action="store_false", help="no tqdm bars")
    group.add_argument("--log_interval", type=checked("--log_interval", int), default=50,
                       help="steps between NaN checks and progress-bar updates (host syncs)")
    group.add_argument("--nan_policy", default="stop", choices=["stop", "skip"],
                       help="on a NaN/inf loss: stop with a message (default) or skip the batch")
    group.add_argument("--num_threads", type=checked("--num_threads", int), default=None, help="torch CPU threads")


def resolved_config(args: argparse.Namespace) -> dict[str, Any]:
    """The namespace as a plain, YAML-friendly dict."""
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}


def check_resume_config(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume a run with settings that change what it computes (paths do not count).

    A file option whose content is pinned by ``<key>_sha256`` (NAYER's ``--label_embeddings``) is
    compared by that hash: the same file under another path (a moved run) resumes.
    """
    def pinned(key: str) -> bool:
        return bool(saved.get(f"{key}_sha256")) and bool(current.get(f"{key}_sha256"))

    differences = [f"{key} (saved {saved.get(key)!r}, given {current.get(key)!r})"
                   for key in sorted(set(saved) | set(current))
                   if key not in RUNTIME_KEYS and not pinned(key) and saved.get(key) != current.get(key)]
    if differences:
        raise UsageError("--resume continues the saved configuration, but these flags differ: "
                         + "; ".join(differences) + " — pass the original flags or start a new --save_dir")


def resume_hint() -> str:
    """The exact command that continues the current run."""
    argv = [arg for arg in sys.argv if arg not in ("--resume", "--overwrite")]
    return " ".join(shlex.quote(arg) for arg in ["python", *argv, "--resume"])
