"""``results.md`` (Markdown) and ``accuracy.csv`` / ``stability.csv`` from table cells.

Each table is a list of :class:`Column` (a header and how to write one row's entry), so a
header and its entries cannot drift apart. The two per-cell tables, accuracy and stability,
declare their quantities once (:data:`ACCURACY_QUANTITIES`, :data:`STABILITY_QUANTITIES`): the
Markdown writer shows each as ``mean ± std`` under its header, the CSV writer as the two
columns ``<key>_mean`` and ``<key>_std``.

Beside each measured cell the tables print the published number it should be compared with and
the kind of comparison (:mod:`datafree.published`, METHODS.md §5.10).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Sequence, TypeVar

from datafree.published import other_rows
from datafree.report.keys import dataset_sort_key, pair_sort_key
from datafree.report.loading import FIDELITY_KEYS, Run, run_sort_key
from datafree.report.statistics import Cell, build_cells, run_quantities

#: Text shown instead of μ / σ² when the run has no epoch after the burn-in window start.
NOT_AVAILABLE_SHORT_RUN: str = "n/a (run shorter than burn-in)"

#: Marker appended to table cells that contain at least one partial (unfinished) run.
PARTIAL_MARK: str = "†"

#: Text of an unavailable number in Markdown (e.g. peak memory of a CPU run).
MISSING: str = "–"

Row = TypeVar("Row")


@dataclass(frozen=True)
class Column(Generic[Row]):
    """One column of a table: its header and the text of its entry for one row object."""

    header: str
    text: Callable[[Row], str]


def _format_value(mean_and_std: tuple[float | None, float | None], digits: int = 2,
                  missing: str = MISSING) -> str:
    """``"mean"`` or ``"mean ± std"`` with ``digits`` decimals; ``missing`` when unavailable."""
    mean, std = mean_and_std
    if mean is None:
        return missing
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _csv_number(value: float | None) -> str:
    """A CSV field: empty for missing, otherwise the value rounded to 6 decimals."""
    return "" if value is None else repr(round(float(value), 6))


@dataclass(frozen=True)
class Quantity:
    """A per-cell quantity (a key of :func:`run_quantities`, summarised across seeds).

    ``header`` is its Markdown header, ``missing`` the Markdown text when it is unavailable; in
    CSV it is the columns ``<key>_mean`` and ``<key>_std`` (empty when unavailable).
    """

    key: str
    header: str
    missing: str = MISSING

    def markdown_column(self) -> Column[Cell]:
        """``mean`` or ``mean ± std`` under :attr:`header`."""
        return Column(self.header, lambda cell: _format_value(cell.summary[self.key], missing=self.missing))

    def csv_columns(self) -> list[Column[Cell]]:
        """``<key>_mean`` and ``<key>_std``, rounded to 6 decimals."""
        return [Column(f"{self.key}_mean", lambda cell: _csv_number(cell.summary[self.key][0])),
                Column(f"{self.key}_std", lambda cell: _csv_number(cell.summary[self.key][1]))]


#: The accuracy table: best, last and mean of the last 5 epochs (§6.1) and the best fidelity
#: (§6.3). The Markdown table shows the first three in one entry, ``best (last / last5)``.
ACCURACY_QUANTITIES: tuple[Quantity, ...] = (
    Quantity("best", "best"), Quantity("last", "last"), Quantity("mean_last5", "last5"),
    *(Quantity(key, f"best {key}") for key in FIDELITY_KEYS))

#: The stability / cost table in the style of §5.9.
STABILITY_QUANTITIES: tuple[Quantity, ...] = (
    Quantity("mu", "μ", NOT_AVAILABLE_SHORT_RUN), Quantity("var", "σ²", NOT_AVAILABLE_SHORT_RUN),
    Quantity("best", "best"), Quantity("peak_memory_gb", "peak memory (GB)"), Quantity("wall_hours", "wall time (h)"))


def _seeds(cell: Cell) -> str:
    return " ".join("-" if run.seed is None else str(run.seed) for run in cell.runs)


def _published_value(cell: Cell) -> str:
    reference = cell.published
    return "" if reference is None else repr(reference.compare_with)


def _published_kind(cell: Cell) -> str:
    reference = cell.published
    return "" if reference is None else reference.kind


#: The leading columns of both CSV files: what the cell is, its seeds, its published number.
CSV_IDENTITY: tuple[Column[Cell], ...] = (
    Column("method", lambda cell: cell.key.method),
    Column("variant", lambda cell: cell.key.variant),
    Column("precision", lambda cell: cell.key.precision or ""),
    Column("dataset", lambda cell: cell.key.dataset),
    Column("teacher", lambda cell: cell.key.teacher),
    Column("student", lambda cell: cell.key.student),
    Column("pair", lambda cell: cell.key.pair),
    Column("n_seeds", lambda cell: str(len(cell.runs))),
    Column("seeds", _seeds),
    Column("published", _published_value),
    Column("published_kind", _published_kind),
)

#: The trailing columns of both CSV files: "done/configured" epochs per run, partial (0/1).
CSV_PROGRESS: tuple[Column[Cell], ...] = (
    Column("epochs", lambda cell: " ".join(run.progress for run in cell.runs)),
    Column("partial", lambda cell: "1" if cell.partial_runs else "0"),
)


#: The leading columns of the stability and comparison tables of ``results.md``: which cell a row is.
MARKDOWN_IDENTITY: tuple[Column[Cell], ...] = (
    Column("method", lambda cell: cell.key.label),
    Column("dataset", lambda cell: cell.key.dataset),
    Column("pair", lambda cell: cell.key.pair),
    Column("precision", lambda cell: cell.key.precision or "-"),
)


def _constant(header: str, value: str) -> Column[Any]:
    """A column with the same entry in every row (the averaging window of stability.csv)."""
    return Column(header, lambda _row: value)


def accuracy_csv_columns() -> list[Column[Cell]]:
    """``accuracy.csv``: identity, mean / std of each accuracy quantity, progress."""
    return [*CSV_IDENTITY, *(column for quantity in ACCURACY_QUANTITIES for column in quantity.csv_columns()),
            *CSV_PROGRESS]


def _published_stability(cell: Cell) -> str:
    """The paper's μ / σ² / best for the cell (the seed's stability rows, §14.7, §15.3, §16.7), or ``-``."""
    return "-" if cell.published is None else cell.published.describe_stability()


def stability_csv_columns(burn_in: int, tail_drop: int) -> list[Column[Cell]]:
    """``stability.csv``: identity, the window, mean / std of each stability quantity, the paper's
    stability row, progress."""
    return [*CSV_IDENTITY, _constant("burn_in", str(burn_in)), _constant("tail_drop", str(tail_drop)),
            *(column for quantity in STABILITY_QUANTITIES for column in quantity.csv_columns()),
            Column("published_mu_var_best", _published_stability), *CSV_PROGRESS]


def stability_markdown_columns() -> list[Column[Cell]]:
    """The stability table of ``results.md``: the cell, each stability quantity, epochs per run."""
    return [
        *MARKDOWN_IDENTITY,
        Column("n", lambda cell: str(len(cell.runs))),
        *(quantity.markdown_column() for quantity in STABILITY_QUANTITIES),
        Column("published μ / σ² / best", _published_stability),
        Column("epochs", lambda cell: ", ".join(run.progress for run in cell.runs)
               + (f" {PARTIAL_MARK}" if cell.partial_runs else "")),
    ]


def comparison_markdown_columns() -> list[Column[Cell]]:
    """The comparison table: each cell that has a published number, best and the difference."""
    return [
        *MARKDOWN_IDENTITY,
        Column("best", lambda cell: _format_value(cell.summary["best"])),
        Column("published (kind)", lambda cell: cell.published.describe()),
        Column("best − published", lambda cell: f"{cell.summary['best'][0] - cell.published.compare_with:+.2f}"),
        Column("note", lambda cell: cell.published.note or "-"),
    ]


def runs_markdown_columns(fidelity_keys: Sequence[str]) -> list[Column[tuple[Run, dict[str, Any]]]]:
    """The run listing: one row per (run, :func:`run_quantities` of it); ``fidelity_keys`` are the
    §6.3 metrics logged by at least one run."""
    return [
        Column("method", lambda item: item[0].key.label),
        Column("dataset", lambda item: item[0].key.dataset),
        Column("pair", lambda item: item[0].key.pair),
        Column("precision", lambda item: item[0].key.precision or "-"),
        Column("seed", lambda item: "-" if item[0].seed is None else str(item[0].seed)),
        Column("epochs", lambda item: f"{item[0].progress} (partial)" if item[0].is_partial else item[0].progress),
        Column("best", lambda item: f"{item[1]['best']:.2f}"),
        Column("best epoch", lambda item: str(item[1]["best_epoch"])),
        Column("last", lambda item: f"{item[1]['last']:.2f}"),
        Column("last5", lambda item: f"{item[1]['mean_last5']:.2f}"),
        Column("μ", lambda item: _format_value((item[1]["mu"], None), missing=NOT_AVAILABLE_SHORT_RUN)),
        Column("σ²", lambda item: _format_value((item[1]["var"], None), missing=NOT_AVAILABLE_SHORT_RUN)),
        *(Column(f"best {key}", lambda item, key=key: _format_value((item[0].best_fidelity.get(key), None), digits=4))
          for key in fidelity_keys),
        Column("path", lambda item: str(item[0].path)),
    ]


def window_description(burn_in: int, tail_drop: int) -> str:
    """The averaging window in words, printed next to every μ / σ² (§6.2)."""
    if tail_drop == 0:
        return f"μ and σ² over epochs {burn_in}..end (burn-in {burn_in}, population variance)"
    return (f"μ and σ² over epochs {burn_in}..end without the last {tail_drop} "
            f"(burn-in {burn_in}, tail drop {tail_drop}, population variance)")


def _markdown_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown_table(columns: Sequence[Column[Row]], rows: Sequence[Row]) -> list[str]:
    """Lines of a Markdown table with one row per object of ``rows``."""
    return _markdown_lines([column.header for column in columns],
                           [[column.text(row) for column in columns] for row in rows])


def write_csv(path: Path, columns: Sequence[Column[Row]], rows: Sequence[Row]) -> None:
    """A CSV file (UTF-8) with the columns' headers and one line per object of ``rows``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([column.header for column in columns])
        for row in rows:
            writer.writerow([column.text(row) for column in columns])


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
    datasets = sorted({cell.key.dataset for cell in cells}, key=dataset_sort_key)
    for dataset in datasets:
        dataset_cells = [cell for cell in cells if cell.key.dataset == dataset]
        pairs = sorted({(cell.key.teacher, cell.key.student) for cell in dataset_cells},
                       key=lambda pair: pair_sort_key(*pair))
        labels = list(dict.fromkeys(cell.key.label for cell in dataset_cells))
        by_position = {(cell.key.label, cell.key.teacher, cell.key.student): cell for cell in dataset_cells}
        rows = []
        for label in labels:
            row = [label]
            for teacher, student in pairs:
                cell = by_position.get((label, teacher, student))
                row.append("" if cell is None else _accuracy_cell_text(cell))
            rows.append(row)
        lines += [f"### {dataset}", ""]
        lines += _markdown_lines([dataset] + [f"{t}→{s}" for t, s in pairs], rows)
        lines.append("")
    return lines


def render_stability_markdown(cells: Sequence[Cell], burn_in: int, tail_drop: int) -> list[str]:
    """Stability / cost table in the style of §5.9: μ, σ², best, peak memory, wall time."""
    lines = [f"## Stability: {window_description(burn_in, tail_drop)}", "",
             "Several seeds: mean ± std across seeds (μ, σ² computed per run first).", ""]
    return lines + markdown_table(stability_markdown_columns(), cells) + [""]


def render_runs_markdown(runs: Sequence[Run], burn_in: int, tail_drop: int) -> list[str]:
    """One line per run: where it is, its epochs (partial or not) and all its numbers."""
    fidelity_keys = [key for key in FIDELITY_KEYS if any(key in run.best_fidelity for run in runs)]
    lines = ["## Runs", "", f"{window_description(burn_in, tail_drop)}; best epoch is 0-based.", ""]
    rows = [(run, run_quantities(run, burn_in, tail_drop)) for run in runs]
    return lines + markdown_table(runs_markdown_columns(fidelity_keys), rows) + [""]


def render_comparison_markdown(cells: Sequence[Cell]) -> list[str]:
    """Each measured cell beside the published number it should be compared with (METHODS.md §5.10)."""
    compared = [cell for cell in cells if cell.published is not None]
    if not compared:
        return []
    lines = ["## Compared with the published numbers", "",
             "best − published uses the expectation where the launcher's variant has its own (different "
             "expectation). Only a reproduction is expected to match; a re-run's number came from other code "
             "(METHODS.md §4.7, §5.10).", ""]
    lines += markdown_table(comparison_markdown_columns(), compared) + [""]
    pairs = sorted({(cell.key.dataset, cell.key.teacher, cell.key.student) for cell in cells})
    for dataset, teacher, student in pairs:
        rows = other_rows(dataset, teacher, student)
        if rows:
            lines += [f"The paper's other rows for {dataset} {teacher}→{student}: "
                      + "; ".join(f"{row} {value:.2f}" for row, value in rows) + ".", ""]
    return lines


def render_results_markdown(runs: Sequence[Run], burn_in: int, tail_drop: int) -> str:
    """The full ``results.md``: accuracy table, comparison, stability table, partial-run note,
    run list (runs in table order, :func:`~datafree.report.loading.run_sort_key`)."""
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


def write_accuracy_csv(cells: Sequence[Cell], path: Path) -> None:
    """``accuracy.csv``: per cell mean / std across seeds of best, last, mean of last 5, fidelity."""
    write_csv(path, accuracy_csv_columns(), cells)


def write_stability_csv(cells: Sequence[Cell], path: Path, burn_in: int, tail_drop: int) -> None:
    """``stability.csv``: per cell μ, σ² (with the window), best, memory and time."""
    write_csv(path, stability_csv_columns(burn_in, tail_drop), cells)
