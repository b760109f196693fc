"""Command-line pieces shared by ``train_scratch.py`` and ``datafree_kd.py``.

Configuration flows one way: argparse -> :func:`resolved_config` (a plain dict, dumped as
``config.yaml``) -> plain constructor arguments. ``--resume`` re-reads that file and refuses
to continue with different training settings (:func:`check_resume_config`), so a resumed run
is the same run.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from datafree.errors import UsageError

#: Arguments that may differ between an interrupted run and its resumption: they change
#: where and how fast a run goes, not what it computes.
RUNTIME_KEYS = frozenset({"device", "max_minutes", "resume", "overwrite", "progress", "data_root",
                          "download", "log_interval", "num_threads", "nan_policy", "deterministic"})


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every training command has: data, device, precision, seeding, run directory."""
    group = parser.add_argument_group("run")
    group.add_argument("--dataset", default="cifar10", help="cifar10 or cifar100")
    group.add_argument("--data_root", default=os.environ.get("DATAFREE_DATA_ROOT", "data"),
                       help="folder holding cifar-10-batches-py/ or cifar-100-python/ "
                            "(default $DATAFREE_DATA_ROOT or ./data)")
    group.add_argument("--download", action="store_true",
                       help="download the dataset into --data_root if it is missing")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    group.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                       help="autocast dtype of forward passes; auto = bf16 on CUDA, fp32 on CPU")
    group.add_argument("--channels_last", default="auto", choices=["auto", "on", "off"],
                       help="channels_last memory format; auto = on for CUDA")
    group.add_argument("--compile", action="store_true", help="torch.compile the student (falls back to eager)")
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic kernels (cuDNN, cuBLAS, torch.use_deterministic_algorithms; "
                            "warns for an op that has none) instead of autotuned ones: reproducible "
                            "GPU runs, slower")
    group.add_argument("--save_dir", default=None, help="run directory (default under runs/)")
    group.add_argument("--resume", action="store_true", help="continue the run in --save_dir from last.pth")
    group.add_argument("--overwrite", action="store_true", help="replace a run already in --save_dir")
    group.add_argument("--max_minutes", type=float, default=None,
                       help="stop cleanly with a checkpoint after this many minutes (resume later)")
    group.add_argument("--no_progress", dest="progress", action="store_false", help="no tqdm bars")
    group.add_argument("--log_interval", type=int, default=50,
                       help="steps between NaN checks and progress-bar updates (host syncs)")
    group.add_argument("--nan_policy", default="stop", choices=["stop", "skip"],
                       help="on a NaN/inf loss: stop with a message (default) or skip the batch")
    group.add_argument("--num_threads", type=int, default=None, help="torch CPU threads")


def resolved_config(args: argparse.Namespace) -> dict[str, Any]:
    """The namespace as a plain, YAML-friendly dict."""
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}


def check_resume_config(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume a run with settings that change what it computes."""
    differences = [f"{key} (saved {saved.get(key)!r}, given {current.get(key)!r})"
                   for key in sorted(set(saved) | set(current))
                   if key not in RUNTIME_KEYS and saved.get(key) != current.get(key)]
    if differences:
        raise UsageError("--resume continues the saved configuration, but these flags differ: "
                         + "; ".join(differences) + " — pass the original flags or start a new --save_dir")


def resume_hint() -> str:
    """The exact command that continues the current run."""
    argv = [arg for arg in sys.argv if arg not in ("--resume", "--overwrite")]
    return " ".join(shlex.quote(arg) for arg in ["python", *argv, "--resume"])
