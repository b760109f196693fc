"""Reading run directories into :class:`Run` records.

A run directory written by ``datafree_kd.py`` / ``train_scratch.py`` (ARCHITECTURE.md, "Run
directory") holds ``config.yaml`` (what was run) and ``metrics.jsonl`` (one record per epoch,
read with :mod:`datafree.metrics_log`, the reader the run lifecycle uses too). ``summary.json``
is not read: everything reported is recomputed from the per-epoch records, which also exist for
unfinished runs.

Every problem with a run directory is a :class:`ReportError` whose one-line message names the
file (and the line of ``metrics.jsonl``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from datafree.errors import UsageError
from datafree.metrics_log import read_metrics_lines
from datafree.report.keys import NO_TEACHER, CellKey

#: The fidelity metrics of §6.3 whose best value over epochs is reported when logged.
FIDELITY_KEYS: tuple[str, ...] = ("agreement1", "prob_loyalty_ref", "prob_loyalty_js")


class ReportError(UsageError):
    """A run directory cannot be read; the one-line message names the file (and line)."""


@dataclass(frozen=True)
class Run:
    """What the report needs from one run directory.

    ``key`` is the table cell the run belongs to. ``accuracies[i]`` is the test top-1 of the
    ``i``-th evaluated epoch, whose 0-based epoch number is ``accuracy_epochs[i]``: warm-up
    epochs (Fast, NAYER: synthesis only) are logged without accuracy, so with ``warmup_epochs``
    of them the first accuracy belongs to epoch ``warmup_epochs``. ``peak_memory_mb`` is the max
    over epochs (``None`` when never logged, e.g. on CPU); ``wall_seconds`` is the sum of
    ``epoch_seconds``; ``best_fidelity`` maps each logged §6.3 metric to its best (max) value
    over epochs.
    """

    path: Path
    key: CellKey
    seed: int | None
    epochs_configured: int | None
    accuracies: tuple[float, ...]
    accuracy_epochs: tuple[int, ...]
    peak_memory_mb: float | None
    wall_seconds: float
    best_fidelity: dict[str, float]
    warmup_epochs: int = 0

    @property
    def epochs_done(self) -> int:
        """Number of epochs recorded in ``metrics.jsonl`` (warm-up epochs included)."""
        return self.warmup_epochs + len(self.accuracies)

    @property
    def is_partial(self) -> bool:
        """True when fewer epochs were recorded than configured (an unfinished run)."""
        return self.epochs_configured is not None and self.epochs_done < self.epochs_configured

    @property
    def progress(self) -> str:
        """``"done/configured"`` epochs, with ``?`` when the config has no epoch count."""
        configured = "?" if self.epochs_configured is None else str(self.epochs_configured)
        return f"{self.epochs_done}/{configured}"


def run_sort_key(run: Run) -> tuple:
    """Runs in table order: their cell's order (:meth:`CellKey.sort_key`), then seed, then path."""
    return (*run.key.sort_key(), run.seed is None, run.seed or 0, str(run.path))


def _read_config(path: Path) -> dict[str, Any]:
    """Parse ``config.yaml`` into a mapping, or raise a one-line ReportError."""
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise ReportError(f"{path}: not a run directory (no config.yaml)")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ReportError(f"{config_path}: cannot be read as YAML ({first_line})") from None
    if not isinstance(config, dict):
        raise ReportError(f"{config_path}: expected a mapping, got {type(config).__name__}")
    return config


def _config_text(config: dict[str, Any], key: str, config_path: Path) -> str:
    """A required string entry of the config."""
    value = config.get(key)
    if value is None or value == "":
        raise ReportError(f"{config_path}: missing key '{key}'")
    return str(value)


def _config_optional_int(config: dict[str, Any], key: str, config_path: Path) -> int | None:
    """An optional integer entry of the config (``seed``, ``epochs``)."""
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReportError(f"{config_path}: '{key}' must be an integer, got {value!r}")
    return value


def _finite_number(value: Any) -> bool:
    """True for an int/float that is neither bool, NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """Per-epoch records of ``metrics.jsonl``, one per epoch 0..n-1 in order.

    A resumed run may log an epoch twice (written, then crashed before the checkpoint); the
    later line wins. Blank lines are skipped. Anything else that is not a JSON object with an
    integer ``epoch`` >= 0 and a finite numeric ``acc1`` (or, for a warm-up epoch, no ``acc1``
    and ``"warmup": true``) is an error naming file and line, and so is a gap in the epochs (the
    statistics index accuracies by epoch).
    """
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.is_file():
        raise ReportError(f"{path}: not a run directory (no metrics.jsonl)")
    try:
        lines = read_metrics_lines(metrics_path)
    except (OSError, UnicodeDecodeError) as error:
        raise ReportError(f"{metrics_path}: cannot be read ({type(error).__name__})") from None
    records_by_epoch: dict[int, dict[str, Any]] = {}
    for line in lines:
        where = f"{metrics_path}:{line.number}"
        if line.record is None:
            raise ReportError(f"{where}: {line.problem}")
        record = line.record
        epoch = record.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ReportError(f"{where}: 'epoch' must be an integer >= 0, got {epoch!r}")
        if not _finite_number(record.get("acc1")) and not (record.get("warmup") is True and "acc1" not in record):
            raise ReportError(f"{where}: 'acc1' must be a finite number, got {record.get('acc1')!r}")
        for key in ("epoch_seconds", "peak_memory_mb"):
            if record.get(key) is not None and not _finite_number(record[key]):
                raise ReportError(f"{where}: '{key}' must be a finite number, got {record[key]!r}")
        records_by_epoch[epoch] = record
    if not records_by_epoch:
        raise ReportError(f"{metrics_path}: no epoch recorded yet")
    for expected_epoch in range(max(records_by_epoch) + 1):
        if expected_epoch not in records_by_epoch:
            raise ReportError(f"{metrics_path}: epoch {expected_epoch} is missing")
    return [records_by_epoch[epoch] for epoch in sorted(records_by_epoch)]


def _cell_key(config: dict[str, Any], config_path: Path) -> CellKey:
    """The cell a run belongs to, from its config (a config without ``method`` is a scratch run)."""
    if config.get("method") is None:
        method, teacher = "scratch", NO_TEACHER
        student = _config_text(config, "model", config_path)
    else:
        method = _config_text(config, "method", config_path)
        teacher = _config_text(config, "teacher", config_path)
        student = _config_text(config, "student", config_path)
    return CellKey(
        method=method,
        variant=str(config.get("log_tag") or ""),
        precision=None if config.get("precision") is None else str(config["precision"]),
        dataset=_config_text(config, "dataset", config_path),
        teacher=teacher,
        student=student,
    )


def load_run(path: str | Path) -> Run:
    """Read one run directory (``config.yaml`` + ``metrics.jsonl``) into a :class:`Run`.

    Raises :class:`ReportError` with a one-line message for a missing directory or file, a
    malformed config or a malformed metrics line.
    """
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: no such run directory")
    config = _read_config(path)
    config_path = path / "config.yaml"
    records = _read_metrics(path)
    evaluated = [record for record in records if "acc1" in record]
    if not evaluated:
        raise ReportError(f"{path / 'metrics.jsonl'}: no evaluated epoch yet (only warm-up epochs)")
    key = _cell_key(config, config_path)
    memories = [float(record["peak_memory_mb"]) for record in records
                if record.get("peak_memory_mb") is not None]
    best_fidelity: dict[str, float] = {}
    for name in FIDELITY_KEYS:
        values = [float(record[name]) for record in records if _finite_number(record.get(name))]
        if values:
            best_fidelity[name] = max(values)
    return Run(
        path=path,
        key=key,
        seed=_config_optional_int(config, "seed", config_path),
        epochs_configured=_config_optional_int(config, "epochs", config_path),
        accuracies=tuple(float(record["acc1"]) for record in evaluated),
        accuracy_epochs=tuple(int(record["epoch"]) for record in evaluated),
        peak_memory_mb=max(memories) if memories else None,
        wall_seconds=math.fsum(float(record.get("epoch_seconds") or 0.0) for record in records),
        best_fidelity=best_fidelity,
        warmup_epochs=len(records) - len(evaluated),
    )
