"""Result tables (METHODS.md §6.2, §5.9) and accuracy plots from run directories.

``python -m datafree.report RUN_DIR... [--out DIR] [--burn_in 80] [--tail_drop 0]`` reads the
run directories written by ``datafree_kd.py`` / ``train_scratch.py`` (ARCHITECTURE.md, "Run
directory") and writes to ``--out`` (default ``report/``):

* ``results.md``   -- accuracy table, stability table and a per-run listing (also printed);
* ``accuracy.csv`` -- one row per (method, dataset, teacher→student) cell: best, last and
  mean of the last 5 epochs, mean and std across seeds;
* ``stability.csv`` -- one row per cell: μ, σ², best, peak memory, wall time;
* ``accuracy.png`` -- test top-1 per epoch, one line per run (skipped without matplotlib).

Why these numbers: every published number is the *best* epoch's test top-1 (§6.1), which is
model selection on the test set, so the tables also show the last epoch and the mean of the
last 5 epochs. The paper's stability claim (§5.9) is the mean μ and the population variance
σ² (ddof 0) of the per-epoch accuracy after a burn-in of 80 epochs (§6.2); the burn-in (and
the optional number of dropped final epochs) is a parameter and is always printed next to
the numbers. Several seeds of one cell are summarised per run first, then as mean ± sample
standard deviation across seeds (§6.2 [CLEAN]).

A run that stopped early (fewer epochs in ``metrics.jsonl`` than ``epochs`` in
``config.yaml``) is still reported and marked partial ("epochs done/configured"). Warm-up
epochs (Fast, NAYER: synthesis only, logged without accuracy) count as epochs done but not in
the accuracy statistics: μ/σ²'s burn-in counts KD epochs (METHODS.md §13 item 9).

Runs are grouped into cells by method, variant (the run's ``--log_tag``, e.g. ``late2022`` or
``fast2``), precision, dataset and pair; a label such as ``cudfkd (late2022, bf16)`` names a
cell that is not the method's default fp32 configuration. Beside each measured cell the tables
print the published number it should be compared with and the kind of comparison
(:mod:`datafree.published`, METHODS.md §5.10).

matplotlib is imported inside :func:`plot_accuracy` only, so tables work without it.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from datafree.errors import UsageError
from datafree.published import Published, published, scratch_accuracy

#: Method rows in the order of the paper's tables (§5.9); other methods follow alphabetically.
PAPER_METHOD_ORDER: tuple[str, ...] = ("dafl", "zskt", "adi", "dfq", "cmi", "cudfkd", "fast", "nayer", "adadfkd")

#: Teacher→student columns in the order of the paper's tables (§5.9); others follow alphabetically.
PAPER_PAIR_ORDER: tuple[tuple[str, str], ...] = (
    ("resnet34", "resnet18"),
    ("vgg11", "resnet18"),
    ("wrn40_2", "wrn40_1"),
    ("wrn40_2", "wrn16_2"),
    ("wrn40_2", "wrn16_1"),
)

#: Datasets in the order of the paper's tables (§5.9); others follow alphabetically.
PAPER_DATASET_ORDER: tuple[str, ...] = ("cifar10", "cifar100")

#: The fidelity metrics of §6.3 whose best value over epochs is reported when logged.
FIDELITY_KEYS: tuple[str, ...] = ("agreement1", "prob_loyalty_ref", "prob_loyalty_js")

#: Number of final epochs averaged for the "mean of the last 5 epochs" column (§6.1).
LAST_EPOCHS_AVERAGED: int = 5

#: Text shown instead of μ / σ² when the run has no epoch after the burn-in window start.
NOT_AVAILABLE_SHORT_RUN: str = "n/a (run shorter than burn-in)"

#: Marker appended to table cells that contain at least one partial (unfinished) run.
PARTIAL_MARK: str = "†"

#: Label used as teacher for supervised-from-scratch runs (train_scratch.py has no teacher).
NO_TEACHER: str = "-"


def cell_label(method: str, variant: str, precision: str | None) -> str:
    """``method``, or ``method (variant, precision)`` for a variant or a precision other than fp32."""
    qualifiers = [part for part in (variant, None if precision in (None, "fp32") else precision) if part]
    return f"{method} ({', '.join(qualifiers)})" if qualifiers else method


class ReportError(UsageError):
    """A run directory cannot be read; the one-line message names the file (and line)."""


# ---------------------------------------------------------------------------------------------
# Statistics (§6.2)
# ---------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    """Arithmetic mean using an exactly rounded sum (so hand-computed test values match)."""
    return math.fsum(values) / len(values)


def _population_variance(values: Sequence[float]) -> float:
    """Population variance, ddof 0: mean of squared deviations from the mean (§6.2)."""
    center = _mean(values)
    return math.fsum((value - center) ** 2 for value in values) / len(values)


def stats(acc_per_epoch: Sequence[float], burn_in: int = 80, tail_drop: int = 0) -> dict[str, Any]:
    """Per-run accuracy statistics of §6.1 / §6.2.

    ``acc_per_epoch[i]`` is the test top-1 (percent) after epoch ``i`` (0-based).

    Returns a dict with
      * ``mu``, ``var``: mean and population variance (ddof 0) of
        ``acc[burn_in : len(acc) - tail_drop]``; both ``None`` when that window is empty
        (the run is shorter than the burn-in);
      * ``best``: max over *all* epochs, ``best_epoch``: its first 0-based index;
      * ``last``: the final epoch, ``mean_last5``: mean of the last 5 epochs (fewer if the run
        is shorter);
      * ``epochs``: the number of epochs given.
    """
    if burn_in < 0 or tail_drop < 0:
        raise ValueError(f"burn_in and tail_drop must be >= 0, got {burn_in} and {tail_drop}")
    accuracies = [float(value) for value in acc_per_epoch]
    if not accuracies:
        raise ValueError("stats() needs at least one epoch of accuracies")
    window = accuracies[burn_in: len(accuracies) - tail_drop]
    best = max(accuracies)
    return {
        "mu": _mean(window) if window else None,
        "var": _population_variance(window) if window else None,
        "best": best,
        "last": accuracies[-1],
        "best_epoch": accuracies.index(best),
        "mean_last5": _mean(accuracies[-LAST_EPOCHS_AVERAGED:]),
        "epochs": len(accuracies),
    }


def summarize_across_seeds(
    list_of_stats: Sequence[dict[str, Any]],
) -> dict[str, tuple[float | None, float | None]]:
    """Mean and spread of each quantity across the runs (seeds) of one cell (§6.2 [CLEAN]).

    Returns ``quantity -> (mean, std)`` for every key of the given dicts, where ``std`` is the
    *sample* standard deviation (ddof 1, the seeds being a sample of possible runs) and is
    ``None`` for a single run. A quantity that is ``None`` in any run (e.g. μ of a run shorter
    than the burn-in, peak memory of a CPU run) gives ``(None, None)``: averaging only the
    available runs would silently mix different sets of seeds.
    """
    if not list_of_stats:
        raise ValueError("summarize_across_seeds() needs at least one dict of statistics")
    keys = list(list_of_stats[0])
    for entry in list_of_stats[1:]:
        if set(entry) != set(keys):
            raise ValueError(f"statistics have different keys: {sorted(keys)} vs {sorted(entry)}")
    summary: dict[str, tuple[float | None, float | None]] = {}
    for key in keys:
        values = [entry[key] for entry in list_of_stats]
        if any(value is None for value in values):
            summary[key] = (None, None)
            continue
        center = _mean(values)
        if len(values) == 1:
            summary[key] = (center, None)
        else:
            sample_variance = math.fsum((value - center) ** 2 for value in values) / (len(values) - 1)
            summary[key] = (center, math.sqrt(sample_variance))
    return summary


# ---------------------------------------------------------------------------------------------
# Loading run directories
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What the report needs from one run directory.

    Scratch runs (``train_scratch.py``, no ``method`` in the config) have method ``scratch``,
    teacher ``-`` and student = the trained model. ``accuracies[i]`` is the test top-1 after
    epoch ``i``. ``peak_memory_mb`` is the max over epochs (``None`` when never logged, e.g. on
    CPU); ``wall_seconds`` is the sum of ``epoch_seconds``; ``best_fidelity`` maps each logged
    §6.3 metric to its best (max) value over epochs.
    """

    path: Path
    method: str
    dataset: str
    teacher: str
    student: str
    seed: int | None
    epochs_configured: int | None
    accuracies: tuple[float, ...]
    peak_memory_mb: float | None
    wall_seconds: float
    best_fidelity: dict[str, float]
    variant: str = ""
    precision: str | None = None
    warmup_epochs: int = 0

    @property
    def pair(self) -> str:
        """Column label ``teacher→student``."""
        return f"{self.teacher}→{self.student}"

    @property
    def label(self) -> str:
        """The method, with the variant and a precision other than fp32: ``cudfkd (late2022, bf16)``."""
        return cell_label(self.method, self.variant, self.precision)

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
    integer ``epoch`` >= 0 and a finite numeric ``acc1`` is an error naming file and line, and
    so is a gap in the epochs (the statistics index accuracies by epoch).
    """
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.is_file():
        raise ReportError(f"{path}: not a run directory (no metrics.jsonl)")
    try:
        lines = metrics_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ReportError(f"{metrics_path}: cannot be read ({type(error).__name__})") from None
    records_by_epoch: dict[int, dict[str, Any]] = {}
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{metrics_path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ReportError(f"{where}: malformed JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise ReportError(f"{where}: expected a JSON object, got {type(record).__name__}")
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


def load_run(path: str | Path) -> Run:
    """Read one run directory (``config.yaml`` + ``metrics.jsonl``) into a :class:`Run`.

    Raises :class:`ReportError` with a one-line message for a missing directory or file, a
    malformed config or a malformed metrics line. ``summary.json`` is not needed: everything
    reported is recomputed from the per-epoch metrics, which also exist for unfinished runs.
    """
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: no such run directory")
    config = _read_config(path)
    config_path = path / "config.yaml"
    records = _read_metrics(path)
    if not any("acc1" in record for record in records):
        raise ReportError(f"{path / 'metrics.jsonl'}: no evaluated epoch yet (only warm-up epochs)")
    if config.get("method") is None:
        method, teacher = "scratch", NO_TEACHER
        student = _config_text(config, "model", config_path)
    else:
        method = _config_text(config, "method", config_path)
        teacher = _config_text(config, "teacher", config_path)
        student = _config_text(config, "student", config_path)
    memories = [float(record["peak_memory_mb"]) for record in records
                if record.get("peak_memory_mb") is not None]
    best_fidelity: dict[str, float] = {}
    for key in FIDELITY_KEYS:
        values = [float(record[key]) for record in records if _finite_number(record.get(key))]
        if values:
            best_fidelity[key] = max(values)
    return Run(
        path=path,
        method=method,
        dataset=_config_text(config, "dataset", config_path),
        teacher=teacher,
        student=student,
        seed=_config_optional_int(config, "seed", config_path),
        epochs_configured=_config_optional_int(config, "epochs", config_path),
        accuracies=tuple(float(record["acc1"]) for record in records if "acc1" in record),
        peak_memory_mb=max(memories) if memories else None,
        wall_seconds=math.fsum(float(record.get("epoch_seconds") or 0.0) for record in records),
        best_fidelity=best_fidelity,
        variant=str(config.get("log_tag") or ""),
        precision=None if config.get("precision") is None else str(config["precision"]),
        warmup_epochs=sum(1 for record in records if "acc1" not in record),
    )


# ---------------------------------------------------------------------------------------------
# Grouping runs into table cells
# ---------------------------------------------------------------------------------------------


def method_sort_key(method: str) -> tuple[int, str]:
    """Paper order for known methods (§5.9), then the others (e.g. scratch) alphabetically."""
    if method in PAPER_METHOD_ORDER:
        return (PAPER_METHOD_ORDER.index(method), "")
    return (len(PAPER_METHOD_ORDER), method)


def pair_sort_key(teacher: str, student: str) -> tuple[int, str, str]:
    """Paper order for the five teacher→student pairs (§5.9), then the others alphabetically."""
    if (teacher, student) in PAPER_PAIR_ORDER:
        return (PAPER_PAIR_ORDER.index((teacher, student)), "", "")
    return (len(PAPER_PAIR_ORDER), teacher, student)


def dataset_sort_key(dataset: str) -> tuple[int, str]:
    """CIFAR-10 then CIFAR-100 (§5.9), then other datasets alphabetically."""
    if dataset in PAPER_DATASET_ORDER:
        return (PAPER_DATASET_ORDER.index(dataset), "")
    return (len(PAPER_DATASET_ORDER), dataset)


def run_sort_key(run: Run) -> tuple:
    """Runs in table order: method (paper order), variant, precision, dataset, pair (paper order), seed, path."""
    return (method_sort_key(run.method), run.variant, run.precision or "", dataset_sort_key(run.dataset),
            pair_sort_key(run.teacher, run.student), run.seed is None, run.seed or 0, str(run.path))


def run_quantities(run: Run, burn_in: int, tail_drop: int) -> dict[str, Any]:
    """Everything reported for one run: :func:`stats` plus memory (GB), time (h), fidelity.

    Memory is converted with 1 GB = 1024 MB (the MB logged by the run lifecycle are MiB from
    ``torch.cuda.max_memory_allocated``), wall time is ``wall_seconds / 3600``.
    """
    quantities = stats(run.accuracies, burn_in=burn_in, tail_drop=tail_drop)
    quantities["peak_memory_gb"] = None if run.peak_memory_mb is None else run.peak_memory_mb / 1024.0
    quantities["wall_hours"] = run.wall_seconds / 3600.0
    for key in FIDELITY_KEYS:
        quantities[key] = run.best_fidelity.get(key)
    return quantities


@dataclass(frozen=True)
class Cell:
    """All runs (seeds) of one (method, dataset, teacher, student) and their summary."""

    method: str
    dataset: str
    teacher: str
    student: str
    runs: tuple[Run, ...]
    summary: dict[str, tuple[float | None, float | None]]
    variant: str = ""
    precision: str | None = None

    @property
    def pair(self) -> str:
        """Column label ``teacher→student``."""
        return f"{self.teacher}→{self.student}"

    @property
    def label(self) -> str:
        return cell_label(self.method, self.variant, self.precision)

    @property
    def published(self) -> Published | None:
        """The published number this cell is compared with (datafree.published), if any."""
        if self.method == "scratch":
            value = scratch_accuracy(self.student, self.dataset)
            return None if value is None else Published(value, "trained with data", "§2.2")
        return published(self.method, self.variant, self.dataset, self.teacher, self.student)

    @property
    def partial_runs(self) -> tuple[Run, ...]:
        """The unfinished runs of this cell."""
        return tuple(run for run in self.runs if run.is_partial)


def build_cells(runs: Sequence[Run], burn_in: int, tail_drop: int) -> list[Cell]:
    """Group runs by (method, variant, precision, dataset, teacher, student), summarise across seeds,
    and sort by method (paper order), variant, precision, dataset, pair (paper order). Runs inside a
    cell are by seed."""
    groups: dict[tuple[str, str, str | None, str, str, str], list[Run]] = {}
    for run in runs:
        key = (run.method, run.variant, run.precision, run.dataset, run.teacher, run.student)
        groups.setdefault(key, []).append(run)
    cells = []
    for (method, variant, precision, dataset, teacher, student), members in groups.items():
        members = sorted(members, key=run_sort_key)
        summary = summarize_across_seeds([run_quantities(run, burn_in, tail_drop) for run in members])
        cells.append(Cell(method, dataset, teacher, student, tuple(members), summary, variant, precision))
    cells.sort(key=lambda cell: (method_sort_key(cell.method), cell.variant, cell.precision or "",
                                 dataset_sort_key(cell.dataset), pair_sort_key(cell.teacher, cell.student)))
    return cells


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _format_value(mean_and_std: tuple[float | None, float | None], digits: int = 2,
                  missing: str = "–") -> str:
    """``"mean"`` or ``"mean ± std"`` with ``digits`` decimals; ``missing`` when unavailable."""
    mean, std = mean_and_std
    if mean is None:
        return missing
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def window_description(burn_in: int, tail_drop: int) -> str:
    """The averaging window in words, printed next to every μ / σ² (§6.2)."""
    if tail_drop == 0:
        return f"μ and σ² over epochs {burn_in}..end (burn-in {burn_in}, population variance)"
    return (f"μ and σ² over epochs {burn_in}..end without the last {tail_drop} "
            f"(burn-in {burn_in}, tail drop {tail_drop}, population variance)")


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _accuracy_cell_text(cell: Cell) -> str:
    """``best (last / last5)``, as mean ± std with ``n=`` for several seeds, † if partial."""
    best, last, last5 = cell.summary["best"], cell.summary["last"], cell.summary["mean_last5"]
    if len(cell.runs) == 1:
        text = f"{best[0]:.2f} ({last[0]:.2f} / {last5[0]:.2f})"
    else:
        text = (f"{_format_value(best)} ({last[0]:.2f} / {last5[0]:.2f}) n={len(cell.runs)}")
    text += f" {PARTIAL_MARK}" if cell.partial_runs else ""
    reference = cell.published
    return text if reference is None else f"{text} · published {reference.describe()}"


def render_accuracy_markdown(cells: Sequence[Cell]) -> list[str]:
    """Accuracy table(s): one per dataset, rows = methods, columns = teacher→student pairs."""
    lines = ["## Top-1 accuracy (%)", "",
             "Cell: best (last / mean of last 5 epochs); several seeds: mean ± std of best across "
             "seeds, then means of last / last 5, n = number of seeds. "
             f"{PARTIAL_MARK} = contains a partial run. \"published\" is the number to compare with and the kind "
             "of comparison (reproduction, re-run, config not published, ...: METHODS.md §5.10).", ""]
    datasets = sorted({cell.dataset for cell in cells}, key=dataset_sort_key)
    for dataset in datasets:
        dataset_cells = [cell for cell in cells if cell.dataset == dataset]
        pairs = sorted({(cell.teacher, cell.student) for cell in dataset_cells},
                       key=lambda pair: pair_sort_key(*pair))
        methods = [label for label in dict.fromkeys(cell.label for cell in dataset_cells)]
        by_position = {(cell.label, cell.teacher, cell.student): cell for cell in dataset_cells}
        rows = []
        for method in methods:
            row = [method]
            for teacher, student in pairs:
                cell = by_position.get((method, teacher, student))
                row.append("" if cell is None else _accuracy_cell_text(cell))
            rows.append(row)
        lines += [f"### {dataset}", ""]
        lines += _markdown_table([dataset] + [f"{t}→{s}" for t, s in pairs], rows)
        lines.append("")
    return lines


def render_stability_markdown(cells: Sequence[Cell], burn_in: int, tail_drop: int) -> list[str]:
    """Stability / cost table in the style of §5.9: μ, σ², best, peak memory, wall time."""
    lines = [f"## Stability: {window_description(burn_in, tail_drop)}", "",
             "Several seeds: mean ± std across seeds (μ, σ² computed per run first).", ""]
    rows = []
    for cell in cells:
        rows.append([
            cell.label, cell.dataset, cell.pair, cell.precision or "-", str(len(cell.runs)),
            _format_value(cell.summary["mu"], missing=NOT_AVAILABLE_SHORT_RUN),
            _format_value(cell.summary["var"], missing=NOT_AVAILABLE_SHORT_RUN),
            _format_value(cell.summary["best"]),
            _format_value(cell.summary["peak_memory_gb"]),
            _format_value(cell.summary["wall_hours"]),
            ", ".join(run.progress for run in cell.runs) + (f" {PARTIAL_MARK}" if cell.partial_runs else ""),
        ])
    lines += _markdown_table(["method", "dataset", "pair", "precision", "n", "μ", "σ²", "best",
                              "peak memory (GB)", "wall time (h)", "epochs"], rows)
    lines.append("")
    return lines


def render_runs_markdown(runs: Sequence[Run], burn_in: int, tail_drop: int) -> list[str]:
    """One line per run: where it is, its epochs (partial or not) and all its numbers."""
    fidelity_keys = [key for key in FIDELITY_KEYS if any(key in run.best_fidelity for run in runs)]
    lines = ["## Runs", "", f"{window_description(burn_in, tail_drop)}; best epoch is 0-based.", ""]
    rows = []
    for run in runs:
        quantities = run_quantities(run, burn_in, tail_drop)
        status = f"{run.progress} (partial)" if run.is_partial else run.progress
        row = [run.label, run.dataset, run.pair, run.precision or "-", "-" if run.seed is None else str(run.seed),
               status,
               f"{quantities['best']:.2f}", str(quantities["best_epoch"]), f"{quantities['last']:.2f}",
               f"{quantities['mean_last5']:.2f}",
               _format_value((quantities["mu"], None), missing=NOT_AVAILABLE_SHORT_RUN),
               _format_value((quantities["var"], None), missing=NOT_AVAILABLE_SHORT_RUN)]
        row += [_format_value((run.best_fidelity.get(key), None), digits=4) for key in fidelity_keys]
        row.append(str(run.path))
        rows.append(row)
    header = ["method", "dataset", "pair", "precision", "seed", "epochs", "best", "best epoch", "last", "last5",
              "μ", "σ²"] + [f"best {key}" for key in fidelity_keys] + ["path"]
    lines += _markdown_table(header, rows)
    lines.append("")
    return lines


def render_comparison_markdown(cells: Sequence[Cell]) -> list[str]:
    """Each measured cell beside the published number it should be compared with (METHODS.md §5.10)."""
    rows = []
    for cell in cells:
        reference = cell.published
        if reference is None:
            continue
        best = cell.summary["best"][0]
        rows.append([cell.label, cell.dataset, cell.pair, cell.precision or "-", _format_value(cell.summary["best"]),
                     reference.describe(), f"{best - reference.compare_with:+.2f}", reference.note or "-"])
    if not rows:
        return []
    lines = ["## Compared with the published numbers", "",
             "best − published uses the expectation where the launcher's variant has its own (different "
             "expectation). Only a reproduction is expected to match; a re-run's number came from other code "
             "(METHODS.md §4.7, §5.10).", ""]
    lines += _markdown_table(["method", "dataset", "pair", "precision", "best", "published (kind)",
                              "best − published", "note"], rows)
    return lines + [""]


def render_results_markdown(runs: Sequence[Run], burn_in: int, tail_drop: int) -> str:
    """The full ``results.md``: accuracy table, stability table, partial-run note, run list
    (runs in table order, :func:`run_sort_key`)."""
    runs = sorted(runs, key=run_sort_key)
    cells = build_cells(runs, burn_in, tail_drop)
    lines = ["# Results", ""]
    lines += render_accuracy_markdown(cells)
    lines += render_comparison_markdown(cells)
    lines += render_stability_markdown(cells, burn_in, tail_drop)
    partial = [run for run in runs if run.is_partial]
    if partial:
        lines += [f"{PARTIAL_MARK} Partial runs (epochs done/configured): "
                  + "; ".join(f"{run.path} {run.progress}" for run in partial), ""]
    lines += render_runs_markdown(runs, burn_in, tail_drop)
    return "\n".join(lines)


def _csv_number(value: float | None) -> str:
    """A CSV field: empty for missing, otherwise the value rounded to 6 decimals."""
    return "" if value is None else repr(round(float(value), 6))


def _cell_identity(cell: Cell) -> list[str]:
    """The leading CSV columns shared by both CSV files."""
    seeds = " ".join("-" if run.seed is None else str(run.seed) for run in cell.runs)
    reference = cell.published
    return [cell.method, cell.variant, cell.precision or "", cell.dataset, cell.teacher, cell.student, cell.pair,
            str(len(cell.runs)), seeds, "" if reference is None else repr(reference.compare_with),
            "" if reference is None else reference.kind]


_IDENTITY_COLUMNS: tuple[str, ...] = ("method", "variant", "precision", "dataset", "teacher", "student", "pair",
                                      "n_seeds", "seeds", "published", "published_kind")


def _progress_columns(cell: Cell) -> list[str]:
    """``epochs`` ("done/configured" per run) and ``partial`` (0/1) CSV columns."""
    return [" ".join(run.progress for run in cell.runs), "1" if cell.partial_runs else "0"]


def _write_cell_csv(cells: Sequence[Cell], path: Path, quantities: Sequence[str],
                    settings: dict[str, str]) -> None:
    """One CSV row per cell: identity, ``settings`` columns, mean and std of each quantity, progress."""
    header = list(_IDENTITY_COLUMNS) + list(settings)
    for quantity in quantities:
        header += [f"{quantity}_mean", f"{quantity}_std"]
    header += ["epochs", "partial"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for cell in cells:
            row = _cell_identity(cell) + list(settings.values())
            for quantity in quantities:
                mean, std = cell.summary[quantity]
                row += [_csv_number(mean), _csv_number(std)]
            writer.writerow(row + _progress_columns(cell))


def write_accuracy_csv(cells: Sequence[Cell], path: Path) -> None:
    """``accuracy.csv``: per cell mean / std across seeds of best, last, mean of last 5, fidelity."""
    _write_cell_csv(cells, path, ["best", "last", "mean_last5", *FIDELITY_KEYS], {})


def write_stability_csv(cells: Sequence[Cell], path: Path, burn_in: int, tail_drop: int) -> None:
    """``stability.csv``: per cell μ, σ² (with the window), best, memory and time."""
    _write_cell_csv(cells, path, ["mu", "var", "best", "peak_memory_gb", "wall_hours"],
                    {"burn_in": str(burn_in), "tail_drop": str(tail_drop)})


def plot_accuracy(runs: Sequence[Run], path: Path, burn_in: int) -> bool:
    """Write ``accuracy.png``: test top-1 per epoch, one line per run (label: method, dataset,
    pair, seed; partial runs say so), the burn-in marked by a dashed vertical line.

    Uses matplotlib's object-oriented API with the Agg canvas (no pyplot, no global backend
    switch). Returns False, after printing a one-line note, when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("note: matplotlib is not installed; accuracy.png skipped")
        return False
    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for run in sorted(runs, key=run_sort_key):
        seed = "-" if run.seed is None else str(run.seed)
        label = f"{run.label} {run.dataset} {run.pair} seed {seed}"
        if run.is_partial:
            label += f" (partial {run.progress})"
        axes.plot(range(run.epochs_done), run.accuracies, label=label, linewidth=1.2)
    axes.axvline(burn_in, color="grey", linestyle="--", linewidth=0.8, label=f"burn-in {burn_in}")
    axes.set_xlabel("epoch (0-based)")
    axes.set_ylabel("test top-1 (%)")
    axes.set_title("Test top-1 accuracy per epoch")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, format="png")
    return True


def write_report(runs: Sequence[Run], out_dir: Path, burn_in: int, tail_drop: int) -> tuple[str, list[Path]]:
    """Write ``results.md``, ``accuracy.csv``, ``stability.csv`` and ``accuracy.png`` to
    ``out_dir`` (created if needed). Returns the Markdown text and the paths written."""
    if not runs:
        raise ReportError("no run directories given")
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = build_cells(runs, burn_in, tail_drop)
    markdown = render_results_markdown(runs, burn_in, tail_drop)
    written = [out_dir / "results.md", out_dir / "accuracy.csv", out_dir / "stability.csv"]
    written[0].write_text(markdown, encoding="utf-8")
    write_accuracy_csv(cells, written[1])
    write_stability_csv(cells, written[2], burn_in, tail_drop)
    if plot_accuracy(runs, out_dir / "accuracy.png", burn_in):
        written.append(out_dir / "accuracy.png")
    return markdown, written


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``python -m datafree.report`` (one-line errors, no abbreviations)."""
    from datafree.cli import ArgumentParser

    parser = ArgumentParser(
        prog="python -m datafree.report",
        description="Accuracy / stability tables (METHODS.md §6.2) and accuracy plot from run directories.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to report")
    parser.add_argument("--out", default="report", help="output directory (default: ./report)")
    parser.add_argument("--burn_in", type=_non_negative_int, default=80,
                        help="epochs discarded before μ/σ² (default 80, §6.2)")
    parser.add_argument("--tail_drop", type=_non_negative_int, default=0,
                        help="final epochs discarded from μ/σ² (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: load runs, print the Markdown report, write the files. Returns 0.

    Any :class:`ReportError` (or a failure to write the output) ends with ``error: <message>``
    on stderr and exit status 2, without a traceback.
    """
    try:
        arguments = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        runs = [load_run(run_dir) for run_dir in arguments.run_dirs]
        markdown, written = write_report(runs, Path(arguments.out), arguments.burn_in, arguments.tail_drop)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:
        print(f"error: cannot write the report to {arguments.out}: {error.strerror or error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(markdown)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
