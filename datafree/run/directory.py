"""A run's directory: what may be written, resumed or deleted there, and its logs.

Safe by construction:

* A run directory carries a marker, ``.datafree-run``, written before anything else. It names
  the kind of run and lists every file this program writes there. ``--overwrite`` refuses a
  directory without the marker and deletes only the files the marker lists; it also refuses when
  a protected input (the teacher checkpoint) lies inside the directory.
* :meth:`RunDirectory.validate` decides, before anything is created or deleted, whether the
  directory can hold a new run, be resumed, or be overwritten; every refusal is one line with
  the fix. A directory whose run stopped before its first ``last.pth`` gets one piece of advice:
  ``--resume`` starts it again with its saved configuration.
* Temporary files (``.<name>.tmp``, left by a crash during an atomic write) are removed only
  after validation, and only those of the names this program writes.

Also here: ``config.yaml`` (the resolved configuration), ``metrics.jsonl`` plus TensorBoard
(:class:`MetricsLogger`, METHODS.md §6.1) and the image grid of synthesised samples.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import yaml

from datafree.run.checkpoints import atomic_write_text, temporary_path
from datafree.errors import UsageError
from datafree.metrics_log import read_metrics_lines

#: The marker file of a run directory.
MARKER = ".datafree-run"
#: Files a run writes besides TensorBoard event files (whose names the marker adds as they appear).
RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pth", "best.pth", "summary.json")
EVENT_PATTERN = "events.out.tfevents.*"


class RunDirectoryError(UsageError):
    """The run directory cannot be used as asked; the one-line message says what to do."""


class RunDirectory:
    """The directory of one run (``--save_dir``) and its marker.

    ``kind`` is ``scratch_run`` (train_scratch.py) or ``distillation_run`` (datafree_kd.py).
    """

    def __init__(self, path: str | Path, kind: str) -> None:
        self.path = Path(path)
        self.kind = kind
        self.created = False   # set by open(): whether this run created the directory (abandon() removes it)

    # ------------------------------------------------------------------ reading (no side effects)
    def marker(self) -> dict[str, Any] | None:
        """The parsed marker, or None when the directory has none."""
        marker = self.path / MARKER
        if not marker.is_file():
            return None
        try:
            content = json.loads(marker.read_text())
        except (OSError, ValueError) as error:
            raise RunDirectoryError(f"{marker} is unreadable ({type(error).__name__}); nothing was deleted: "
                                    "choose another --save_dir") from None
        if not isinstance(content, dict) or not isinstance(content.get("files"), list):
            raise RunDirectoryError(f"{marker} is not a datafree run marker; nothing was deleted: choose another "
                                    "--save_dir")
        return content

    def _check_location(self) -> None:
        """The path must be a directory or creatable: not a file, not under a file."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"--save_dir {self.path} is a file, not a directory; choose another --save_dir")
        ancestor = self.path.absolute().parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise RunDirectoryError(f"--save_dir {self.path} lies under the file {ancestor}; choose another "
                                    "--save_dir")

    def validate(self, resume: bool, overwrite: bool, protected: Iterable[str | Path] = ()) -> str:
        """Decide what opening the directory means, without touching it.

        Returns ``"new"`` (create, or use an existing directory that holds no run),
        ``"resume"`` (continue from ``last.pth``), ``"restart"`` (``--resume`` of a run stopped
        before its first checkpoint: start it again with its saved configuration) or
        ``"overwrite"`` (delete the files the marker lists, then start anew).
        """
        self._check_location()
        if not self.path.is_dir():
            if resume:
                raise RunDirectoryError(f"--resume given but {self.path} does not exist; drop --resume to start a "
                                        "new run")
            return "new"
        marker = self.marker()
        if marker is None:
            return self._validate_unmarked(resume)
        if resume:
            if marker.get("kind") != self.kind:
                raise RunDirectoryError(f"{self.path} holds a {marker.get('kind')}, not a {self.kind}; --resume "
                                        "cannot continue it: choose another --save_dir")
            return "resume" if (self.path / "last.pth").is_file() else "restart"
        if overwrite:
            inside = [Path(p) for p in protected if p and Path(p).resolve().is_relative_to(self.path.resolve())]
            if inside:
                raise RunDirectoryError(f"--overwrite would delete files in {self.path}, which holds {inside[0]}, an "
                                        "input of this run; choose another --save_dir")
            return "overwrite"
        if (self.path / "last.pth").is_file():
            raise RunDirectoryError(f"{self.path} already holds a run; pass --resume to continue it, --overwrite to "
                                    "replace it, or choose another --save_dir")
        raise RunDirectoryError(f"{self.path} holds a run stopped before its first checkpoint; pass --resume to "
                                "start it again with its saved configuration, --overwrite to replace it, or "
                                "choose another --save_dir")

    def _validate_unmarked(self, resume: bool) -> str:
        """An existing directory without marker: usable only if it holds no file named like ours."""
        ours = [name for name in RUN_FILES if (self.path / name).exists()]
        ours += [path.name for path in self.path.glob(EVENT_PATTERN)]
        if ours:
            raise RunDirectoryError(f"{self.path} holds {', '.join(ours)} but no {MARKER} marker, so this program did "
                                    "not write them (or an older version did); nothing was deleted: move them away "
                                    "or choose another --save_dir")
        if resume:
            raise RunDirectoryError(f"--resume given but {self.path} holds no run (no last.pth); drop --resume to "
                                    "start a new run")
        return "new"

    # ------------------------------------------------------------------ writing (after validation)
    def open(self, mode: str) -> None:
        """Prepare the directory for a validated ``mode`` (see :meth:`validate`)."""
        self.created = not self.path.exists()
        marker = self.marker() if self.path.is_dir() else None
        if marker is not None:
            self._remove_temporaries(marker["files"])
        if mode == "overwrite":
            for name in marker["files"]:
                if "/" not in name and name != MARKER:
                    with contextlib.suppress(FileNotFoundError):
                        (self.path / name).unlink()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunDirectoryError(f"cannot create --save_dir {self.path} ({error.strerror or error}); choose "
                                    "another --save_dir") from None
        if mode in ("new", "overwrite"):
            self._write_marker(list(RUN_FILES))

    def abandon(self) -> None:
        """Undo a run that could not write its first checkpoint: delete the files this program wrote
        here (those its marker lists, and the marker) and the directory if this run created it and it
        is empty now. Used only before the run has any state, so nothing of value is lost."""
        marker = self.marker() if self.path.is_dir() else None
        for name in [*(marker["files"] if marker else []), MARKER]:
            if "/" not in name:
                with contextlib.suppress(FileNotFoundError):
                    (self.path / name).unlink()
                with contextlib.suppress(FileNotFoundError):
                    temporary_path(self.path / name).unlink()
        if self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def _remove_temporaries(self, names: Iterable[str]) -> None:
        """Delete ``.<name>.tmp`` left by an interrupted atomic write, for names this program writes."""
        for name in {*RUN_FILES, *names, MARKER}:
            with contextlib.suppress(FileNotFoundError):
                temporary_path(self.path / name).unlink()

    def _write_marker(self, files: list[str]) -> None:
        text = json.dumps({"written_by": "datafree", "kind": self.kind, "files": files}, indent=1)
        atomic_write_text(text + "\n", self.path / MARKER)

    def claim(self, name: str) -> None:
        """Add ``name`` (a file this program has just created here) to the marker."""
        marker = self.marker() or {"files": []}
        if name not in marker["files"]:
            self._write_marker([*marker["files"], name])

    def write_config(self, config: dict[str, Any]) -> None:
        """Dump the resolved configuration as ``config.yaml`` (atomically)."""
        atomic_write_text(yaml.safe_dump(config, sort_keys=False), self.path / "config.yaml")

    def read_config(self) -> dict[str, Any]:
        """``config.yaml`` back (``--resume`` checks that the run is the same)."""
        path = self.path / "config.yaml"
        try:
            config = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise RunDirectoryError(f"{path} is missing or unreadable ({type(error).__name__}); the run cannot be "
                                    "continued: start anew with --overwrite") from None
        if not isinstance(config, dict):
            raise RunDirectoryError(f"{path} is not a configuration; start anew with --overwrite")
        return config


class MetricsLogger:
    """Per-epoch metrics to ``metrics.jsonl`` (one JSON object per line) and TensorBoard.

    On resume, lines for epochs at or after the resumed epoch are dropped first, so that an
    epoch interrupted after logging is not recorded twice. TensorBoard is optional: if it does
    not import, only the JSON lines are written. The event file this logger creates is added to
    the directory's marker (``directory.claim``).
    """

    def __init__(self, directory: RunDirectory | None, start_epoch: int = 0) -> None:
        self.enabled = directory is not None
        self.writer = None
        if directory is None:
            return
        run_dir = directory.path
        self.path = run_dir / "metrics.jsonl"
        if start_epoch > 0 and self.path.exists():
            # an unreadable line (a write cut by a crash) counts as never logged
            kept = [line.text for line in read_metrics_lines(self.path)
                    if line.epoch is not None and line.epoch < start_epoch]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        before = set(run_dir.glob(EVENT_PATTERN))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_epoch)
        except Exception as error:  # tensorboard missing or broken: keep the JSON log
            print(f"note: TensorBoard logging disabled ({type(error).__name__}: {error})")
        for event_file in sorted(set(run_dir.glob(EVENT_PATTERN)) - before):
            directory.claim(event_file.name)

    def log(self, record: dict[str, Any]) -> None:
        """Append one epoch's record; numeric values also go to TensorBoard under their key."""
        if not self.enabled:
            return
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key.replace("loss_", "loss/", 1), value, record["epoch"])
            self.writer.flush()

    def log_images(self, tag: str, images: torch.Tensor, epoch: int, max_images: int = 64) -> None:
        """A grid of images in [0, 1] (N,3,H,W) to TensorBoard."""
        if self.enabled and self.writer is not None:
            grid = make_grid(images[:max_images].detach().float().cpu().clamp(0, 1))
            self.writer.add_image(tag, grid, epoch)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def make_grid(images: torch.Tensor, padding: int = 2) -> torch.Tensor:
    """Tile (N,C,H,W) images into one (C, H', W') image, rows of ceil(sqrt(N)) (no torchvision)."""
    count, channels, height, width = images.shape
    columns = max(1, int(np.ceil(np.sqrt(count))))
    rows = int(np.ceil(count / columns))
    grid = images.new_zeros(channels, rows * (height + padding) + padding,
                            columns * (width + padding) + padding)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[:, top:top + height, left:left + width] = images[index]
    return grid
